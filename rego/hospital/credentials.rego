# METADATA
# title: Hospital practitioner licence by verifiable credential
# description: |
#   A practitioner is licensed when the request carried a PractitionerLicenseCredential
#   issued by the licensing board (a trust anchor: the chain is the board alone), for a
#   profession the hospital accepts.
#
#   input.credentials holds facts Pavilion verified (signature, freshness, issuer
#   trust, revocation; disclosed claims only), input.credential_errors the code of each
#   refused credential. Both are set by Pavilion only for a tenant with a credential
#   policy (README, "Verifiable credentials").
#
#   Configuration: data.hospital.credential_trust (bundles/hospital/data/credential_trust.json).
package hospital.credentials

import rego.v1

trust := data.hospital.credential_trust

licences contains c if {
	some c in input.credentials
	"PractitionerLicenseCredential" in c.types
	c.chain == [trust.licensing_board]
	c.claims.profession in trust.accepted_professions
}

default licensed_practitioner := false

licensed_practitioner if count(licences) > 0

# The licensed specialties, for record-section rules that depend on them.
specialties contains c.claims.specialty if {
	some c in licences
}

reasons contains {"credential": e.index, "refused": e.code} if {
	some e in input.credential_errors
}

decision := {"licensed_practitioner": licensed_practitioner, "specialties": specialties, "reasons": reasons}
