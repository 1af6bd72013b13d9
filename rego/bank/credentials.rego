# METADATA
# title: Bank KYC by verifiable credential
# description: |
#   A customer is KYC-verified when the request carried a KycCredential with
#   kycLevel "full", issued by an issuer the bank's KYC authority accredited.
#
#   input.credentials holds facts Pavilion verified (signature, freshness, issuer
#   trust chain, revocation) - never raw credentials, never undisclosed claims - and
#   input.credential_errors the stable code of each refused credential. Both are set
#   by Pavilion only for a tenant with a credential policy (README, "Verifiable
#   credentials"): without one, this package must not be relied on.
#
#   Configuration: data.bank.credential_trust (bundles/bank/data/credential_trust.json).
package bank.credentials

import rego.v1

trust := data.bank.credential_trust

# The verified KYC credentials whose chain ends at the bank's KYC authority through
# exactly one accredited issuer.
kyc_credentials contains c if {
	some c in input.credentials
	"KycCredential" in c.types
	count(c.chain) == 2
	c.chain[1] == trust.kyc_authority
}

default kyc_verified := false

kyc_verified if {
	some c in kyc_credentials
	c.claims.kycLevel == "full"
}

# Why a presented credential did not count (codes from Pavilion's verifier).
reasons contains {"credential": e.index, "refused": e.code} if {
	some e in input.credential_errors
}

reasons contains {"missing": "KYC credential from an accredited issuer"} if {
	count(kyc_credentials) == 0
}

# The verified facts the decision rests on: who issued, who accredited the issuer, whom the
# credential is about and the claims the holder disclosed.
verified contains {
	"issuer": c.issuer,
	"accredited_by": c.chain[1],
	"subject": object.get(c, "subject", null),
	"claims": c.claims,
} if {
	some c in kyc_credentials
}

decision := {"kyc_verified": kyc_verified, "reasons": reasons, "verified": verified}
