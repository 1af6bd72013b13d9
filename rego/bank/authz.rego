# METADATA
# title: Bank API authorization
# description: |
#   KYC-tier based access to accounts and payments, with per-transaction and daily
#   limits per currency, sanctions screening, strong customer authentication (SCA)
#   and four-eyes payment approval.
#
#   Configuration: data.bank.limits (bundles/bank/data/limits.json).
#   Amounts are integers in the currency's minor unit (pence, cents).
#
#   Decisions depend only on input and data (no clock, no randomness), so the
#   sidecar may cache them.
package bank.authz

limits := data.bank.limits

known_actions := {"accounts.read", "payments.create", "payments.approve"}

known_roles := {"customer", "auditor", "payments_officer", "senior_payments_officer"}

approver_roles := {"payments_officer", "senior_payments_officer"}

payment_actions := {"payments.create", "payments.approve"}

# ---------------------------------------------------------------------------
# Entrypoints
# ---------------------------------------------------------------------------

# allow needs a positive grant for the action AND no deny reason at all: a request
# that slips past every deny rule (e.g. because of a field nobody anticipated) is
# still refused unless a grant below explicitly matches it.
default allow := false

allow if {
	permitted
	count(deny) == 0
}

decision := {
	"allow": allow,
	"reasons": reasons,
	"limit_remaining": limit_remaining,
}

reasons := sort(deny) if {
	count(deny) > 0
} else := [] if {
	allow
} else := ["no rule permits this request"]

# Daily allowance left in the payment's currency, in minor units: after this payment
# when it is allowed, as it stands when it is denied. null for other actions, or when
# the tier has no daily limit for the currency.
default limit_remaining := null

limit_remaining := max([0, (daily_limit - spent_today) - charged]) if {
	input.action == "payments.create"
}

charged := amount if {
	allow
} else := 0

# ---------------------------------------------------------------------------
# Grants
# ---------------------------------------------------------------------------

# Customers read accounts they hold, at any KYC tier (including unverified).
permitted if {
	input.action == "accounts.read"
	acting_as == "customer"
	valid_tier
	owns_account
	customer_channel
}

# Auditors read any account, from a staff network only.
permitted if {
	input.action == "accounts.read"
	acting_as == "auditor"
	from_staff_network
}

permitted if {
	input.action == "payments.create"
	acting_as == "customer"
	tier.payments == true
	owns_account
	customer_channel
	amount <= per_transaction_limit
	spent_today + amount <= daily_limit
	destination_allowed_for_tier
	sca_satisfied
	not sanctioned_destination
}

permitted if {
	input.action == "payments.approve"
	acting_as == "approver"
	from_staff_network
	is_string(input.resource.initiated_by)
	input.resource.initiated_by != input.subject.id
	not owns_account
	amount <= approval_limit
	is_string(destination)
	not sanctioned_destination
}

# ---------------------------------------------------------------------------
# Deny reasons: request shape
# ---------------------------------------------------------------------------

deny contains "subject.id is required" if not present(["subject", "id"])

deny contains "subject.roles must be a non-empty array of strings" if not valid_roles

deny contains msg if {
	some role in input.subject.roles
	is_string(role)
	not role in known_roles
	msg := concat("", ["unknown role '", role, "'"])
}

deny contains "action is required" if not present(["action"])

deny contains msg if {
	non_empty_string(input.action)
	not input.action in known_actions
	msg := concat("", ["unknown action '", input.action, "'"])
}

deny contains "resource.account is required" if {
	input.action in known_actions
	not present(["resource", "account"])
}

deny contains "context.channel is required" if {
	input.action in known_actions
	not present(["context", "channel"])
}

deny contains msg if {
	input.action in known_actions
	valid_roles
	not acting_as
	msg := concat("", ["subject has no role permitted to perform '", input.action, "'"])
}

# ---------------------------------------------------------------------------
# Deny reasons: customers
# ---------------------------------------------------------------------------

deny contains "subject.kyc_tier must be an integer from 0 to 3" if {
	acting_as == "customer"
	not valid_tier
}

deny contains msg if {
	acting_as == "customer"
	non_empty_string(input.resource.account)
	not owns_account
	msg := concat("", ["account '", input.resource.account, "' is not held by the subject"])
}

deny contains msg if {
	acting_as == "customer"
	non_empty_string(input.context.channel)
	not customer_channel
	msg := concat("", ["channel '", input.context.channel, "' is not available to customers"])
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	tier.payments == false
	msg := concat("", ["KYC tier ", format_int(tier.tier, 10), " may not create payments"])
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	tier.payments == true
	valid_currency
	not tier.per_transaction[currency]
	msg := concat("", ["currency ", currency, " is not available at KYC tier ", format_int(tier.tier, 10)])
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	amount > per_transaction_limit
	msg := concat("", [
		"amount ", format_int(amount, 10), " ", currency,
		" exceeds the per-transaction limit of ", format_int(per_transaction_limit, 10),
		" for KYC tier ", format_int(tier.tier, 10),
	])
}

deny contains "context.spent_today must be a non-negative integer (minor units)" if {
	input.action == "payments.create"
	acting_as == "customer"
	not valid_spent_today
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	spent_today + amount > daily_limit
	msg := concat("", [
		"amount ", format_int(amount, 10), " ", currency,
		" would exceed the daily limit of ", format_int(daily_limit, 10),
		" for KYC tier ", format_int(tier.tier, 10),
		" (already spent ", format_int(spent_today, 10), ")",
	])
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	cross_border
	tier.cross_border == false
	msg := concat("", ["KYC tier ", format_int(tier.tier, 10), " may not make cross-border payments"])
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	destination in limits.high_risk_countries
	tier.high_risk_countries == false
	msg := concat("", ["payments to high-risk country ", destination, " require KYC tier 3"])
}

deny contains msg if {
	input.action == "payments.create"
	acting_as == "customer"
	not sca_satisfied
	valid_amount
	msg := concat("", [
		"strong customer authentication is required above ",
		format_int(object.get(limits.sca_exemption_max, currency, 0), 10), " ", currency,
	])
}

# ---------------------------------------------------------------------------
# Deny reasons: staff
# ---------------------------------------------------------------------------

deny contains "auditors must use the internal channel from a staff network" if {
	acting_as == "auditor"
	not from_staff_network
}

deny contains "approvals must use the internal channel from a staff network" if {
	acting_as == "approver"
	not from_staff_network
}

deny contains "resource.initiated_by is required" if {
	acting_as == "approver"
	not present(["resource", "initiated_by"])
}

deny contains "payments may not be approved by their initiator (four-eyes rule)" if {
	acting_as == "approver"
	non_empty_string(input.resource.initiated_by)
	input.resource.initiated_by == input.subject.id
}

deny contains "approvers may not approve payments from their own accounts" if {
	acting_as == "approver"
	owns_account
}

deny contains msg if {
	acting_as == "approver"
	valid_currency
	not approval_limit
	msg := concat("", ["subject has no approval authority for ", currency])
}

deny contains msg if {
	acting_as == "approver"
	amount > approval_limit
	msg := concat("", [
		"amount ", format_int(amount, 10), " ", currency,
		" exceeds the approval limit of ", format_int(approval_limit, 10),
	])
}

# ---------------------------------------------------------------------------
# Deny reasons: any payment action
# ---------------------------------------------------------------------------

deny contains "resource.amount must be a positive integer (minor units)" if {
	input.action in payment_actions
	not valid_amount
}

deny contains "resource.currency must be an ISO 4217 code" if {
	input.action in payment_actions
	not valid_currency_code
}

deny contains msg if {
	input.action in payment_actions
	valid_currency_code
	not valid_currency
	msg := concat("", ["currency ", input.resource.currency, " is not supported"])
}

deny contains "resource.destination_country must be an ISO 3166-1 alpha-2 code" if {
	input.action in payment_actions
	not destination
}

deny contains msg if {
	input.action in payment_actions
	sanctioned_destination
	msg := concat("", ["destination country ", destination, " is under sanctions"])
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

non_empty_string(x) if {
	is_string(x)
	x != ""
}

# present(path) holds when input has a non-empty string at path. Negated checks use
# this form (a constant argument) because `not f(input.missing)` is itself undefined:
# an undefined argument makes the whole negated expression undefined, not true.
present(path) if non_empty_string(object.get(input, path, null))

non_negative_integer(x) if {
	is_number(x)
	x >= 0
	x == round(x)
}

valid_roles if {
	is_array(input.subject.roles)
	count(input.subject.roles) > 0
	every role in input.subject.roles {
		is_string(role)
	}
}

has_role(role) if {
	valid_roles
	role in input.subject.roles
}

# The capacity in which the subject acts for this action. Staff capacities take
# precedence, so a staff member who also banks with us cannot bypass staff controls.
acting_as := "auditor" if {
	input.action == "accounts.read"
	has_role("auditor")
} else := "customer" if {
	input.action in {"accounts.read", "payments.create"}
	has_role("customer")
} else := "approver" if {
	input.action == "payments.approve"
	some role in approver_roles
	has_role(role)
}

valid_tier if {
	non_negative_integer(input.subject.kyc_tier)
	input.subject.kyc_tier <= 3
}

tier := limits.tiers[input.subject.kyc_tier] if valid_tier

owns_account if {
	non_empty_string(input.resource.account)
	is_array(input.subject.accounts)
	input.resource.account in input.subject.accounts
}

customer_channel if input.context.channel in limits.customer_channels

# Staff networks are IPv4. The address is validated first so that a malformed value
# is simply "not on a staff network" rather than a builtin error.
from_staff_network if {
	input.context.channel == "internal"
	is_string(input.context.ip)
	regex.match(`^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`, input.context.ip)
	some cidr in limits.staff_networks
	net.cidr_contains(cidr, input.context.ip)
}

valid_amount if {
	non_negative_integer(input.resource.amount)
	input.resource.amount > 0
}

amount := input.resource.amount if valid_amount

valid_currency_code if {
	is_string(input.resource.currency)
	regex.match(`^[A-Z]{3}$`, input.resource.currency)
}

valid_currency if {
	valid_currency_code
	input.resource.currency in limits.currencies
}

currency := input.resource.currency if valid_currency

valid_spent_today if non_negative_integer(input.context.spent_today)

spent_today := input.context.spent_today if valid_spent_today

per_transaction_limit := tier.per_transaction[currency]

daily_limit := tier.daily[currency]

# The highest approval authority among the approver roles the subject holds.
approval_limit := max(authorities) if {
	authorities := [limit |
		some role in approver_roles
		has_role(role)
		limit := limits.approval_limits[role][currency]
	]
	count(authorities) > 0
}

destination := input.resource.destination_country if {
	is_string(input.resource.destination_country)
	regex.match(`^[A-Z]{2}$`, input.resource.destination_country)
}

sanctioned_destination if destination in limits.sanctioned_countries

cross_border if destination != limits.home_country

destination_allowed_for_tier if {
	is_string(destination)
	not cross_border
	not destination in limits.high_risk_countries
}

destination_allowed_for_tier if {
	cross_border
	tier.cross_border == true
	not destination in limits.high_risk_countries
}

destination_allowed_for_tier if {
	destination in limits.high_risk_countries
	tier.high_risk_countries == true
}

# PSD2-style SCA: payments up to the exemption threshold need no SCA; above it (or in
# a currency without a configured threshold) the caller must assert context.sca == true.
sca_satisfied if amount <= limits.sca_exemption_max[currency]

sca_satisfied if input.context.sca == true
