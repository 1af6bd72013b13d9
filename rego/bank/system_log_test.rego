package bank.system.log_test

import data.bank.system.log

test_masks_ip_and_accounts if {
	rules := log.mask with input as {"input": {"subject": {"id": "c", "accounts": ["GB-1"]}, "context": {"ip": "198.51.100.23"}}}
	"/input/context/ip" in rules
	{"op": "upsert", "path": "/input/subject/accounts", "value": ["[redacted]"]} in rules
}

test_no_accounts_no_upsert if {
	rules := log.mask with input as {"input": {"subject": {"id": "c"}}}
	rules == {"/input/context/ip"}
}
