# Tests for agency.access. Self-contained: every evaluation supplies its own
# configuration with `with data.agency.* as ...`, so `opa test rego/agency` needs no
# data files.
package agency.access_test

import data.agency.access

# Mirrors bundles/agency/data/*.json.
config := {
	"levels": {"UNCLASSIFIED": 0, "RESTRICTED": 1, "CONFIDENTIAL": 2, "SECRET": 3},
	"home_nationality": "NL",
	"min_client_version": "3.2.0",
	"actions": {
		"read": {"max_classification": "SECRET"},
		"download": {"max_classification": "CONFIDENTIAL"},
	},
}

networks := {
	"hq-classified-lan": {"cidr": "10.10.0.0/16", "max_classification": "SECRET"},
	"regional-offices": {"cidr": "10.32.0.0/12", "max_classification": "CONFIDENTIAL"},
	"remote-access-vpn": {"cidr": "100.64.0.0/16", "max_classification": "RESTRICTED"},
	"partner-liaison": {"cidr": "172.20.4.0/24", "max_classification": "RESTRICTED"},
}

residency := {
	"nl-sovereign": ["nl-gov-ams-1", "nl-gov-rtm-1"],
	"eu": ["eu-central-1", "eu-north-1", "eu-west-1", "nl-gov-ams-1", "nl-gov-rtm-1"],
	"nato": ["eu-central-1", "eu-west-1", "nl-gov-ams-1", "nl-gov-rtm-1", "us-gov-east-1"],
}

decide(inp) := d if {
	d := access.decision with input as inp
		with data.agency.config as config
		with data.agency.networks as networks
		with data.agency.residency as residency
}

allow_of(inp) := v if {
	v := access.allow with input as inp
		with data.agency.config as config
		with data.agency.networks as networks
		with data.agency.residency as residency
}

allowed(inp) if {
	access.allow with input as inp
		with data.agency.config as config
		with data.agency.networks as networks
		with data.agency.residency as residency
}

# A SECRET-cleared Dutch analyst reading a SECRET ATLAS document from HQ.
base := {
	"subject": {"id": "an-0042", "clearance": "SECRET", "nationality": "NL", "compartments": ["ATLAS", "CORAL"]},
	"action": "read",
	"document": {
		"id": "doc-7781", "classification": "SECRET", "compartments": ["ATLAS"],
		"residency": "nl-sovereign", "releasable_to": ["NL", "DE"],
	},
	"request": {"source_ip": "10.10.3.4", "destination_region": "nl-gov-ams-1", "client_version": "3.4.1"},
}

patch(p) := object.union(base, p)

# --- allow -----------------------------------------------------------------------

test_cleared_analyst_reads_secret_document if {
	decide(base) == {"allow": true, "reasons": [], "obligations": ["audit_log"]}
}

test_clearance_equal_to_classification_is_enough if {
	allowed(patch({"subject": {"clearance": "CONFIDENTIAL"}, "document": {"classification": "CONFIDENTIAL"}}))
}

test_unclassified_needs_no_audit if {
	d := decide(patch({"document": {"classification": "UNCLASSIFIED"}}))
	d == {"allow": true, "reasons": [], "obligations": []}
}

test_download_is_watermarked if {
	d := decide(patch({"action": "download", "document": {"classification": "RESTRICTED"}}))
	d == {"allow": true, "reasons": [], "obligations": ["watermark"]}
	d2 := decide(patch({"action": "download", "document": {"classification": "CONFIDENTIAL"}}))
	d2.obligations == ["audit_log", "watermark"]
}

# --- clearance ----------------------------------------------------------------------

test_clearance_below_classification_denied if {
	d := decide(patch({"subject": {"clearance": "CONFIDENTIAL"}}))
	d.reasons == ["clearance CONFIDENTIAL is below the document classification SECRET"]
	d.obligations == []
}

test_clearance_ordering if {
	levels := ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
	every i, clearance in levels {
		every j, classification in levels {
			expected := i >= j
			allow_of(patch({"subject": {"clearance": clearance}, "document": {"classification": classification}})) == expected
		}
	}
}

test_unknown_clearance_denied if {
	d := decide(patch({"subject": {"clearance": "TOP SECRET"}}))
	d.reasons == ["unknown clearance 'TOP SECRET'"]
}

test_clearance_is_case_sensitive if {
	not allowed(patch({"subject": {"clearance": "secret"}}))
}

test_unknown_classification_denied if {
	d := decide(patch({"document": {"classification": "COSMIC"}}))
	d.reasons == ["unknown classification 'COSMIC'"]
}

# --- need-to-know and releasability -----------------------------------------------------

test_missing_compartment_denied if {
	d := decide(patch({"document": {"compartments": ["ATLAS", "ORCHID", "BRAMBLE"]}}))
	d.reasons == [
		"missing need-to-know for compartment 'BRAMBLE'",
		"missing need-to-know for compartment 'ORCHID'",
	]
}

test_subject_without_compartments_reads_uncompartmented if {
	inp := json.remove(base, ["subject/compartments", "document/compartments"])
	allowed(inp)
	not allowed(json.remove(base, ["subject/compartments"]))
}

test_malformed_compartments_denied if {
	d := decide(patch({"subject": {"compartments": "ATLAS"}}))
	d.reasons == ["subject.compartments must be an array of strings"]
}

test_not_releasable_to_nationality if {
	d := decide(patch({"subject": {"nationality": "FR"}}))
	d.reasons == ["document is not releasable to nationality FR"]
}

test_releasable_to_listed_partner if {
	allowed(patch({"subject": {"nationality": "DE"}}))
}

test_no_release_list_means_national_only if {
	inp := json.remove(base, ["document/releasable_to"])
	allowed(inp)
	not allowed(object.union(inp, {"subject": {"nationality": "DE"}}))
}

test_malformed_release_list_denied if {
	d := decide(patch({"document": {"releasable_to": "NL"}}))
	"document.releasable_to must be an array of country codes" in d.reasons
	d.allow == false
}

test_missing_nationality_denied if {
	d := decide(json.remove(base, ["subject/nationality"]))
	d.reasons == ["subject.nationality must be an ISO 3166-1 alpha-2 code"]
}

# --- actions --------------------------------------------------------------------------

test_secret_documents_cannot_be_downloaded if {
	d := decide(patch({"action": "download"}))
	d.reasons == ["SECRET documents may not be used for 'download' (limit CONFIDENTIAL)"]
}

test_unknown_action_denied if {
	d := decide(patch({"action": "print"}))
	d.reasons == ["unknown action 'print'"]
}

# --- network -------------------------------------------------------------------------

test_untrusted_source_denied if {
	d := decide(patch({"request": {"source_ip": "203.0.113.50"}}))
	d.reasons == ["source address 203.0.113.50 is not on an accredited network"]
}

test_network_ceiling_enforced if {
	d := decide(patch({"request": {"source_ip": "100.64.1.9"}}))
	d.reasons == ["source network is accredited up to RESTRICTED, not SECRET"]
	allowed(patch({"request": {"source_ip": "100.64.1.9"}, "document": {"classification": "RESTRICTED"}}))
}

test_network_cidr_boundaries if {
	# 10.32.0.0/12 spans 10.32.0.0 - 10.47.255.255 (CONFIDENTIAL).
	inp := patch({"document": {"classification": "CONFIDENTIAL"}})
	allowed(object.union(inp, {"request": {"source_ip": "10.32.0.0"}}))
	allowed(object.union(inp, {"request": {"source_ip": "10.47.255.255"}}))
	not allowed(object.union(inp, {"request": {"source_ip": "10.48.0.0"}}))
	not allowed(object.union(inp, {"request": {"source_ip": "10.31.255.255"}}))
}

test_malformed_source_ip_denied if {
	every ip in ["10.10.3", "10.10.3.256", "10.10.0.0/16", "::ffff:10.10.3.4", "localhost", 168428292] {
		not allowed(patch({"request": {"source_ip": ip}}))
	}
	d := decide(json.remove(base, ["request/source_ip"]))
	d.reasons == ["request.source_ip is required"]
}

# --- residency -----------------------------------------------------------------------

test_destination_outside_residency_denied if {
	d := decide(patch({"request": {"destination_region": "eu-central-1"}}))
	d.reasons == ["destination region eu-central-1 is outside the document's 'nl-sovereign' residency"]
}

test_eu_residency_allows_eu_regions if {
	every region in residency.eu {
		allowed(patch({"document": {"residency": "eu"}, "request": {"destination_region": region}}))
	}
	not allowed(patch({"document": {"residency": "eu"}, "request": {"destination_region": "us-gov-east-1"}}))
}

test_unknown_residency_denied if {
	d := decide(patch({"document": {"residency": "mars"}}))
	d.reasons == ["unknown residency 'mars'"]
}

test_missing_destination_denied if {
	d := decide(json.remove(base, ["request/destination_region"]))
	d.reasons == ["request.destination_region is required"]
}

# --- client version ----------------------------------------------------------------

test_minimum_client_version_is_inclusive if {
	allowed(patch({"request": {"client_version": "3.2.0"}}))
	allowed(patch({"request": {"client_version": "3.2.0+build.7"}}))
	allowed(patch({"request": {"client_version": "10.0.0"}}))
}

test_older_client_denied if {
	every v in ["3.1.9", "3.2.0-rc.1", "2.99.99"] {
		d := decide(patch({"request": {"client_version": v}}))
		d.reasons == [concat("", ["client version ", v, " is below the minimum supported version 3.2.0"])]
	}
}

test_malformed_client_version_denied if {
	every v in ["3.2", "v3.2.0", "3.2.0.1", "03.2.0", "", 3.2] {
		d := decide(patch({"request": {"client_version": v}}))
		d.reasons == ["request.client_version must be a semantic version"]
	}
}

# --- missing input -------------------------------------------------------------------

test_missing_document_denied if {
	d := decide(json.remove(base, ["document"]))
	d.reasons == [
		"document.classification is required",
		"document.id is required",
		"document.residency is required",
	]
}

test_empty_input_denied if {
	decide({}) == {
		"allow": false,
		"obligations": [],
		"reasons": [
			"action is required",
			"document.classification is required",
			"document.id is required",
			"document.residency is required",
			"request.client_version must be a semantic version",
			"request.destination_region is required",
			"request.source_ip is required",
			"subject.clearance is required",
			"subject.id is required",
			"subject.nationality must be an ISO 3166-1 alpha-2 code",
		],
	}
}
