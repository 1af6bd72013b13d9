# METADATA
# title: Agency document access
# description: |
#   Clearance, need-to-know and releasability checks for classified documents, plus
#   environmental controls: the request must come from an accredited network, the
#   data must stay within the document's residency regions, and the client software
#   must be at least the minimum supported version.
#
#   Configuration: data.agency.config, data.agency.networks and data.agency.residency
#   (bundles/agency/data/*.json). No clock is used: decisions are cacheable.
package agency.access

config := data.agency.config

# ---------------------------------------------------------------------------
# Entrypoints
# ---------------------------------------------------------------------------

default allow := false

allow if {
	granted
	count(deny) == 0
}

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
}

reasons := sort(deny) if {
	count(deny) > 0
} else := [] if {
	allow
} else := ["no rule permits this request"]

obligations := sort(obligation) if {
	allow
} else := []

# Downloaded copies of marked material carry a per-user watermark.
obligation contains "watermark" if {
	input.action == "download"
	document_level >= config.levels.RESTRICTED
}

# Access to CONFIDENTIAL and above is written to the security audit log.
obligation contains "audit_log" if document_level >= config.levels.CONFIDENTIAL

# ---------------------------------------------------------------------------
# Grant: every control must hold positively.
# ---------------------------------------------------------------------------

granted if {
	present(["subject", "id"])
	present(["document", "id"])
	clearance_level >= document_level
	missing_compartments == set()
	releasable
	document_level <= action_ceiling
	document_level <= network_ceiling
	destination_permitted
	client_supported
}

# ---------------------------------------------------------------------------
# Deny reasons
# ---------------------------------------------------------------------------

deny contains "subject.id is required" if not present(["subject", "id"])

deny contains "subject.clearance is required" if not present(["subject", "clearance"])

deny contains msg if {
	present(["subject", "clearance"])
	not clearance_level
	msg := concat("", ["unknown clearance '", input.subject.clearance, "'"])
}

deny contains "subject.nationality must be an ISO 3166-1 alpha-2 code" if not nationality

deny contains "subject.compartments must be an array of strings" if not subject_compartments

deny contains "action is required" if not present(["action"])

deny contains msg if {
	present(["action"])
	not config.actions[input.action]
	msg := concat("", ["unknown action '", input.action, "'"])
}

deny contains "document.id is required" if not present(["document", "id"])

deny contains "document.classification is required" if not present(["document", "classification"])

deny contains msg if {
	present(["document", "classification"])
	not document_level
	msg := concat("", ["unknown classification '", input.document.classification, "'"])
}

deny contains "document.compartments must be an array of strings" if not document_compartments

deny contains "document.releasable_to must be an array of country codes" if {
	"releasable_to" in document_fields
	not string_array(input.document.releasable_to)
}

deny contains "document.residency is required" if not present(["document", "residency"])

deny contains msg if {
	present(["document", "residency"])
	not data.agency.residency[input.document.residency]
	msg := concat("", ["unknown residency '", input.document.residency, "'"])
}

# Clearance and need-to-know

deny contains msg if {
	clearance_level < document_level
	msg := concat("", [
		"clearance ", input.subject.clearance, " is below the document classification ",
		input.document.classification,
	])
}

deny contains msg if {
	some compartment in missing_compartments
	msg := concat("", ["missing need-to-know for compartment '", compartment, "'"])
}

deny contains msg if {
	nationality
	not releasable
	msg := concat("", ["document is not releasable to nationality ", nationality])
}

deny contains msg if {
	document_level > action_ceiling
	msg := concat("", [
		input.document.classification, " documents may not be used for '", input.action, "' (limit ",
		config.actions[input.action].max_classification, ")",
	])
}

# Environment: network, residency, client

deny contains "request.source_ip is required" if not present(["request", "source_ip"])

deny contains msg if {
	present(["request", "source_ip"])
	not network_ceiling
	msg := concat("", ["source address ", input.request.source_ip, " is not on an accredited network"])
}

deny contains msg if {
	document_level > network_ceiling
	msg := concat("", [
		"source network is accredited up to ", level_names[network_ceiling],
		", not ", input.document.classification,
	])
}

deny contains "request.destination_region is required" if not present(["request", "destination_region"])

deny contains msg if {
	present(["request", "destination_region"])
	data.agency.residency[input.document.residency]
	not destination_permitted
	msg := concat("", [
		"destination region ", input.request.destination_region,
		" is outside the document's '", input.document.residency, "' residency",
	])
}

deny contains "request.client_version must be a semantic version" if not client_version

deny contains msg if {
	client_version
	not client_supported
	msg := concat("", [
		"client version ", client_version, " is below the minimum supported version ",
		config.min_client_version,
	])
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# present(path) holds when input has a non-empty string at path. Negated checks use
# this form (a constant argument) because `not f(input.missing)` is itself undefined.
present(path) if {
	value := object.get(input, path, null)
	is_string(value)
	value != ""
}

string_array(x) if {
	is_array(x)
	every item in x {
		is_string(item)
	}
}

level_names := {level: name | some name, level in config.levels}

clearance_level := config.levels[input.subject.clearance] if present(["subject", "clearance"])

document_level := config.levels[input.document.classification] if present(["document", "classification"])

nationality := input.subject.nationality if {
	is_string(input.subject.nationality)
	regex.match(`^[A-Z]{2}$`, input.subject.nationality)
}

# Compartment lists are optional; absent means "none".
subject_compartments := {c | some c in object.get(input, ["subject", "compartments"], [])} if {
	string_array(object.get(input, ["subject", "compartments"], []))
}

document_compartments := {c | some c in object.get(input, ["document", "compartments"], [])} if {
	string_array(object.get(input, ["document", "compartments"], []))
}

missing_compartments := document_compartments - subject_compartments

# Releasability: a document lists the nationalities it may be released to; without a
# list it is national-only (the agency's home nationality).
releasable if {
	string_array(input.document.releasable_to)
	nationality in input.document.releasable_to
}

releasable if {
	not "releasable_to" in document_fields
	nationality == config.home_nationality
}

document_fields := {field | some field, _ in input.document}

action_ceiling := config.levels[config.actions[input.action].max_classification] if present(["action"])

# The highest classification any accredited network containing the source address
# is accredited for. Addresses are IPv4 and validated first, so a malformed value is
# "not on an accredited network" rather than a builtin error.
network_ceiling := max(ceilings) if {
	present(["request", "source_ip"])
	regex.match(
		`^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`,
		input.request.source_ip,
	)
	ceilings := [config.levels[network.max_classification] |
		some network in data.agency.networks
		net.cidr_contains(network.cidr, input.request.source_ip)
	]
	count(ceilings) > 0
}

destination_permitted if {
	present(["request", "destination_region"])
	present(["document", "residency"])
	input.request.destination_region in data.agency.residency[input.document.residency]
}

# Checked against the SemVer 2.0.0 grammar before semver.compare, so a malformed
# version is denied rather than raising a builtin error.
client_version := input.request.client_version if {
	is_string(input.request.client_version)
	regex.match(
		`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`,
		input.request.client_version,
	)
}

client_supported if semver.compare(client_version, config.min_client_version) >= 0
