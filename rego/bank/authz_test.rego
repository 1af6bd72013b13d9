# Tests for bank.authz. Self-contained: every evaluation supplies its own limits with
# `with data.bank.limits as ...`, so `opa test rego/bank` needs no data files.
package bank.authz_test

import data.bank.authz

# Mirrors bundles/bank/data/limits.json (kept in step by hand; the shipped file is
# exercised end to end by bundles/bank/examples.json and rego/verify-examples.sh).
fixture := {
	"home_country": "GB",
	"currencies": ["EUR", "GBP", "USD"],
	"customer_channels": ["branch", "mobile", "open_banking", "web"],
	"staff_networks": ["10.20.0.0/16", "10.21.8.0/22"],
	"tiers": [
		{
			"tier": 0, "name": "unverified", "payments": false, "cross_border": false,
			"high_risk_countries": false, "per_transaction": {}, "daily": {},
		},
		{
			"tier": 1, "name": "basic", "payments": true, "cross_border": false,
			"high_risk_countries": false,
			"per_transaction": {"GBP": 100000}, "daily": {"GBP": 250000},
		},
		{
			"tier": 2, "name": "standard", "payments": true, "cross_border": true,
			"high_risk_countries": false,
			"per_transaction": {"EUR": 1000000, "GBP": 1000000, "USD": 1000000},
			"daily": {"EUR": 2500000, "GBP": 2500000, "USD": 2500000},
		},
		{
			"tier": 3, "name": "enhanced", "payments": true, "cross_border": true,
			"high_risk_countries": true,
			"per_transaction": {"EUR": 5000000, "GBP": 5000000, "USD": 6000000},
			"daily": {"EUR": 20000000, "GBP": 20000000, "USD": 24000000},
		},
	],
	"sca_exemption_max": {"EUR": 3000, "GBP": 3000, "USD": 3000},
	"sanctioned_countries": ["CU", "IR", "KP", "SY"],
	"high_risk_countries": ["HT", "MM", "YE"],
	"approval_limits": {
		"payments_officer": {"EUR": 5000000, "GBP": 5000000, "USD": 5000000},
		"senior_payments_officer": {"EUR": 100000000, "GBP": 100000000, "USD": 120000000},
	},
}

decide(inp) := d if {
	d := authz.decision with input as inp with data.bank.limits as fixture
}

allowed(inp) if {
	authz.allow with input as inp with data.bank.limits as fixture
}

# A tier-1 customer paying 500.00 GBP domestically from the mobile app, with SCA.
payment := {
	"subject": {"id": "cust-1001", "roles": ["customer"], "kyc_tier": 1, "accounts": ["GB-0001", "GB-0002"]},
	"action": "payments.create",
	"resource": {"account": "GB-0001", "amount": 50000, "currency": "GBP", "destination_country": "GB"},
	"context": {"channel": "mobile", "ip": "198.51.100.23", "spent_today": 0, "sca": true},
}

read := {
	"subject": {"id": "cust-1001", "roles": ["customer"], "kyc_tier": 1, "accounts": ["GB-0001"]},
	"action": "accounts.read",
	"resource": {"account": "GB-0001"},
	"context": {"channel": "web", "ip": "198.51.100.23"},
}

approval := {
	"subject": {"id": "emp-77", "roles": ["payments_officer"]},
	"action": "payments.approve",
	"resource": {
		"account": "GB-0001", "amount": 2000000, "currency": "GBP",
		"destination_country": "DE", "initiated_by": "cust-1001",
	},
	"context": {"channel": "internal", "ip": "10.20.4.17"},
}

with_payment(patch) := object.union(payment, patch)

# --- accounts.read -----------------------------------------------------------

test_customer_reads_own_account if {
	decide(read) == {"allow": true, "reasons": [], "limit_remaining": null}
}

test_unverified_customer_reads_own_account if {
	allowed(object.union(read, {"subject": {"kyc_tier": 0}}))
}

test_customer_cannot_read_foreign_account if {
	d := decide(object.union(read, {"resource": {"account": "GB-9999"}}))
	d.allow == false
	d.reasons == ["account 'GB-9999' is not held by the subject"]
}

test_customer_cannot_use_internal_channel if {
	d := decide(object.union(read, {"context": {"channel": "internal", "ip": "10.20.0.5"}}))
	d.reasons == ["channel 'internal' is not available to customers"]
}

test_auditor_reads_any_account_from_staff_network if {
	allowed({
		"subject": {"id": "aud-3", "roles": ["auditor"]},
		"action": "accounts.read",
		"resource": {"account": "GB-4242"},
		"context": {"channel": "internal", "ip": "10.21.11.254"},
	})
}

test_auditor_outside_staff_network_denied if {
	d := decide({
		"subject": {"id": "aud-3", "roles": ["auditor"]},
		"action": "accounts.read",
		"resource": {"account": "GB-4242"},
		"context": {"channel": "internal", "ip": "10.21.12.1"},
	})
	d.reasons == ["auditors must use the internal channel from a staff network"]
}

test_staff_role_takes_precedence_over_customer_role if {
	# An auditor who also banks with us cannot read accounts from the mobile app.
	inp := object.union(read, {"subject": {"roles": ["auditor", "customer"]}, "context": {"channel": "mobile"}})
	not allowed(inp)
}

# --- payments.create: tiers and limits ------------------------------------------

test_domestic_payment_allowed if {
	decide(payment) == {"allow": true, "reasons": [], "limit_remaining": 200000}
}

test_tier0_cannot_pay if {
	d := decide(with_payment({"subject": {"kyc_tier": 0}}))
	d.allow == false
	d.reasons == ["KYC tier 0 may not create payments"]
	d.limit_remaining == null
}

test_per_transaction_limit_is_inclusive if {
	allowed(with_payment({"resource": {"amount": 100000}}))
}

test_per_transaction_limit_plus_one_minor_unit_denied if {
	d := decide(with_payment({"resource": {"amount": 100001}}))
	d.reasons == ["amount 100001 GBP exceeds the per-transaction limit of 100000 for KYC tier 1"]
	d.limit_remaining == 250000
}

test_daily_limit_is_inclusive if {
	d := decide(with_payment({"resource": {"amount": 100000}, "context": {"spent_today": 150000}}))
	d.allow == true
	d.limit_remaining == 0
}

test_daily_limit_plus_one_minor_unit_denied if {
	d := decide(with_payment({"resource": {"amount": 100000}, "context": {"spent_today": 150001}}))
	d.allow == false
	d.reasons == ["amount 100000 GBP would exceed the daily limit of 250000 for KYC tier 1 (already spent 150001)"]
	d.limit_remaining == 99999
}

test_limit_remaining_never_negative if {
	d := decide(with_payment({"context": {"spent_today": 300000}}))
	d.allow == false
	d.limit_remaining == 0
}

test_currency_not_available_at_tier if {
	d := decide(with_payment({"resource": {"currency": "EUR"}}))
	d.reasons == ["currency EUR is not available at KYC tier 1"]
	d.limit_remaining == null
}

test_unsupported_currency if {
	d := decide(with_payment({"resource": {"currency": "JPY"}}))
	d.reasons == ["currency JPY is not supported"]
}

test_malformed_currency if {
	d := decide(with_payment({"resource": {"currency": "gbp"}}))
	d.reasons == ["resource.currency must be an ISO 4217 code"]
}

# --- payments.create: destinations --------------------------------------------------

test_cross_border_requires_tier2 if {
	d := decide(with_payment({"resource": {"destination_country": "FR"}}))
	d.reasons == ["KYC tier 1 may not make cross-border payments"]
	allowed(with_payment({"subject": {"kyc_tier": 2}, "resource": {"destination_country": "FR"}}))
}

test_high_risk_country_requires_tier3 if {
	d := decide(with_payment({"subject": {"kyc_tier": 2}, "resource": {"destination_country": "MM"}}))
	d.reasons == ["payments to high-risk country MM require KYC tier 3"]
	allowed(with_payment({"subject": {"kyc_tier": 3}, "resource": {"destination_country": "MM"}}))
}

test_sanctioned_country_denied_at_every_tier if {
	every t in [1, 2, 3] {
		d := decide(with_payment({"subject": {"kyc_tier": t}, "resource": {"destination_country": "KP"}}))
		d.allow == false
		"destination country KP is under sanctions" in d.reasons
	}
}

test_malformed_destination if {
	d := decide(with_payment({"resource": {"destination_country": "GBR"}}))
	d.reasons == ["resource.destination_country must be an ISO 3166-1 alpha-2 code"]
}

# --- payments.create: SCA ---------------------------------------------------------

test_sca_exemption_threshold_is_inclusive if {
	allowed(with_payment({"resource": {"amount": 3000}, "context": {"sca": false}}))
}

test_sca_required_above_threshold if {
	d := decide(with_payment({"resource": {"amount": 3001}, "context": {"sca": false}}))
	d.reasons == ["strong customer authentication is required above 3000 GBP"]
}

test_sca_flag_must_be_boolean_true if {
	not allowed(with_payment({"context": {"sca": "yes"}}))
}

# --- payments.create: malformed or missing input ----------------------------------

test_amount_must_be_positive_integer if {
	every bad in [0, -1, 10.5, "50000", null] {
		d := decide(with_payment({"resource": {"amount": bad}}))
		d.allow == false
		"resource.amount must be a positive integer (minor units)" in d.reasons
	}
}

test_missing_amount_denied if {
	d := decide(json.remove(payment, ["resource/amount"]))
	d.reasons == ["resource.amount must be a positive integer (minor units)"]
}

test_missing_spent_today_denied if {
	d := decide(json.remove(payment, ["context/spent_today"]))
	d.reasons == ["context.spent_today must be a non-negative integer (minor units)"]
	d.limit_remaining == null
}

test_missing_kyc_tier_denied if {
	d := decide(json.remove(payment, ["subject/kyc_tier"]))
	d.allow == false
	"subject.kyc_tier must be an integer from 0 to 3" in d.reasons
}

test_out_of_range_kyc_tier_denied if {
	every t in [4, -1, 1.5, "3"] {
		not allowed(with_payment({"subject": {"kyc_tier": t}}))
	}
}

test_missing_subject_id_denied if {
	d := decide(json.remove(payment, ["subject/id"]))
	d.reasons == ["subject.id is required"]
}

test_customer_cannot_pay_from_foreign_account if {
	d := decide(with_payment({"resource": {"account": "GB-7777"}}))
	d.reasons == ["account 'GB-7777' is not held by the subject"]
}

test_unknown_role_denied_even_alongside_known_role if {
	d := decide(with_payment({"subject": {"roles": ["customer", "superuser"]}}))
	d.reasons == ["unknown role 'superuser'"]
}

test_missing_roles_denied if {
	d := decide(json.remove(payment, ["subject/roles"]))
	d.reasons == ["subject.roles must be a non-empty array of strings"]
}

test_unknown_action_denied if {
	d := decide(object.union(payment, {"action": "payments.delete"}))
	d.reasons == ["unknown action 'payments.delete'"]
}

test_empty_input_denied if {
	decide({}) == {
		"allow": false,
		"reasons": ["action is required", "subject.id is required", "subject.roles must be a non-empty array of strings"],
		"limit_remaining": null,
	}
}

test_reasons_are_sorted_and_complete if {
	d := decide(with_payment({
		"subject": {"kyc_tier": 1},
		"resource": {"amount": 200000, "destination_country": "IR"},
		"context": {"sca": false},
	}))
	d.reasons == [
		"KYC tier 1 may not make cross-border payments",
		"amount 200000 GBP exceeds the per-transaction limit of 100000 for KYC tier 1",
		"destination country IR is under sanctions",
		"strong customer authentication is required above 3000 GBP",
	]
}

# --- payments.approve ------------------------------------------------------------

test_officer_approves_within_authority if {
	decide(approval) == {"allow": true, "reasons": [], "limit_remaining": null}
}

test_officer_approval_limit_is_inclusive if {
	allowed(object.union(approval, {"resource": {"amount": 5000000}}))
	d := decide(object.union(approval, {"resource": {"amount": 5000001}}))
	d.reasons == ["amount 5000001 GBP exceeds the approval limit of 5000000"]
}

test_senior_officer_has_higher_authority if {
	allowed(object.union(approval, {
		"subject": {"roles": ["payments_officer", "senior_payments_officer"]},
		"resource": {"amount": 5000001},
	}))
}

test_four_eyes_rule if {
	d := decide(object.union(approval, {"resource": {"initiated_by": "emp-77"}}))
	d.reasons == ["payments may not be approved by their initiator (four-eyes rule)"]
}

test_missing_initiator_denied if {
	d := decide(json.remove(approval, ["resource/initiated_by"]))
	d.reasons == ["resource.initiated_by is required"]
}

test_approver_cannot_approve_own_account if {
	d := decide(object.union(approval, {"subject": {"accounts": ["GB-0001"]}}))
	d.reasons == ["approvers may not approve payments from their own accounts"]
}

test_approval_requires_staff_network if {
	every ctx in [
		{"channel": "internal", "ip": "203.0.113.9"},
		{"channel": "web", "ip": "10.20.4.17"},
		{"channel": "internal", "ip": "not-an-ip"},
		{"channel": "internal", "ip": "10.20.0.0/16"},
		{"channel": "internal", "ip": 169090577},
	] {
		d := decide(object.union(approval, {"context": ctx}))
		d.reasons == ["approvals must use the internal channel from a staff network"]
	}
	d := decide(json.remove(approval, ["context/ip"]))
	d.reasons == ["approvals must use the internal channel from a staff network"]
}

test_no_approval_of_sanctioned_destination if {
	d := decide(object.union(approval, {"resource": {"destination_country": "SY"}}))
	d.reasons == ["destination country SY is under sanctions"]
}

test_customer_cannot_approve if {
	d := decide(object.union(payment, {"action": "payments.approve"}))
	"subject has no role permitted to perform 'payments.approve'" in d.reasons
	d.allow == false
}
