# Decision-log privacy for the bank tenant, in the shape of OPA's data.system.log.mask (under
# the tenant's namespace: a tenant bundle owns only its own roots). The input is the decision
# event. The client IP is erased; the subject's account list is replaced by a marker. The
# subject id is kept: auditors correlate by it (pseudonymise it with
# decisionLog.privacy.pseudonymiseFields when they should not see it).
package bank.system.log

mask contains "/input/context/ip"

mask contains {"op": "upsert", "path": "/input/subject/accounts", "value": ["[redacted]"]} if {
	input.input.subject.accounts
}
