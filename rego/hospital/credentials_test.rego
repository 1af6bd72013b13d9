# Tests for hospital.credentials: facts shaped as Pavilion's VerifiedFactsV1.
package hospital.credentials_test

import data.hospital.credentials
import rego.v1

trust := {"licensing_board": "did:key:board", "accepted_professions": ["physician", "nurse"]}

licence(profession, chain) := {
	"version": 1, "format": "sd-jwt-vc", "issuer": chain[0], "types": ["PractitionerLicenseCredential"],
	"claims": {"profession": profession, "specialty": "cardiology"}, "chain": chain,
	"status": [], "validity": {}, "proofType": "SD-JWT/EdDSA", "credentialHash": "00",
}

test_physician_licensed_by_the_board if {
	d := credentials.decision with input as {"credentials": [licence("physician", ["did:key:board"])], "credential_errors": []}
		with data.hospital.credential_trust as trust
	d.licensed_practitioner
	d.specialties == {"cardiology"}
}

test_profession_not_accepted if {
	not credentials.licensed_practitioner with input as {"credentials": [licence("veterinarian", ["did:key:board"])]}
		with data.hospital.credential_trust as trust
}

test_licence_from_someone_else if {
	not credentials.licensed_practitioner with input as {"credentials": [licence("physician", ["did:key:other"])]}
		with data.hospital.credential_trust as trust
}

test_undisclosed_profession_does_not_count if {
	c := object.remove(licence("physician", ["did:key:board"]), ["claims"])
	not credentials.licensed_practitioner with input as {"credentials": [object.union(c, {"claims": {}})]}
		with data.hospital.credential_trust as trust
}
