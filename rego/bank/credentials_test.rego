# Tests for bank.credentials: facts shaped as Pavilion's VerifiedFactsV1.
package bank.credentials_test

import data.bank.credentials
import rego.v1

trust := {"kyc_authority": "did:key:authority"}

kyc(level, chain) := {
	"version": 1, "format": "vc+data-integrity", "issuer": chain[0],
	"types": ["VerifiableCredential", "KycCredential"], "claims": {"kycLevel": level},
	"chain": chain, "status": [], "validity": {}, "proofType": "DataIntegrityProof/eddsa-rdfc-2022",
	"credentialHash": "00",
}

test_full_kyc_from_accredited_issuer if {
	credentials.kyc_verified with input as {"credentials": [kyc("full", ["did:key:issuer", "did:key:authority"])], "credential_errors": []}
		with data.bank.credential_trust as trust
}

test_basic_level_is_not_enough if {
	not credentials.kyc_verified with input as {"credentials": [kyc("basic", ["did:key:issuer", "did:key:authority"])], "credential_errors": []}
		with data.bank.credential_trust as trust
}

test_chain_to_another_authority_is_not_enough if {
	not credentials.kyc_verified with input as {"credentials": [kyc("full", ["did:key:issuer", "did:key:elsewhere"])], "credential_errors": []}
		with data.bank.credential_trust as trust
}

test_the_authority_itself_is_not_an_accredited_issuer if {
	not credentials.kyc_verified with input as {"credentials": [kyc("full", ["did:key:authority"])], "credential_errors": []}
		with data.bank.credential_trust as trust
}

test_refused_credentials_are_reasons if {
	d := credentials.decision with input as {"credentials": [], "credential_errors": [{"version": 1, "index": 0, "code": "ERR_CREDENTIAL_REVOKED", "message": "revoked"}]}
		with data.bank.credential_trust as trust
	d.kyc_verified == false
	{"credential": 0, "refused": "ERR_CREDENTIAL_REVOKED"} in d.reasons
}

test_no_credentials_at_all if {
	not credentials.kyc_verified with input as {} with data.bank.credential_trust as trust
}

test_the_decision_shows_the_verified_facts_it_rests_on if {
	d := credentials.decision with input as {"credentials": [kyc("full", ["did:key:issuer", "did:key:authority"])], "credential_errors": []}
		with data.bank.credential_trust as trust
	d.kyc_verified
	d.verified == {{"issuer": "did:key:issuer", "accredited_by": "did:key:authority", "subject": null, "claims": {"kycLevel": "full"}}}
}
