# METADATA
# title: Hospital patient-record access
# description: |
#   Role- and purpose-based access to sections of a patient record, with care-team
#   relationships, research consent, restricted (sealed) records and break-glass
#   emergency access.
#
#   Configuration: data.hospital.config, data.hospital.care_teams and
#   data.hospital.patients (bundles/hospital/data/*.json).
#
#   Break-glass requests are checked against the clock (time.now_ns), so decisions
#   of this tenant are time-dependent and must not be cached.
package hospital.records

config := data.hospital.config

# ---------------------------------------------------------------------------
# Entrypoints
# ---------------------------------------------------------------------------

# allow needs a well-formed request, a positive relationship grant for the purpose,
# no deny reason, and at least one readable section among those requested.
default allow := false

allow if {
	request_valid
	relationship_granted
	count(deny) == 0
	count(granted_sections) > 0
}

decision := {
	"allow": allow,
	"allowed_sections": allowed_sections,
	"withheld_sections": withheld_sections,
	"obligations": obligations,
	"reasons": reasons,
}

# Sections the caller may return. Everything else requested must be withheld.
allowed_sections := sort(granted_sections) if {
	allow
} else := []

withheld_sections := sort(requested_sections - granted_sections) if {
	allow
} else := sort(requested_sections)

# Duties the caller (the records service) must carry out when it acts on an allow.
obligations := sort(obligation) if {
	allow
} else := []

reasons := sort(deny) if {
	count(deny) > 0
} else := [] if {
	allow
} else := ["no rule permits this request"]

obligation contains "audit_break_glass" if input.purpose == "emergency"

obligation contains "notify_privacy_officer" if input.purpose == "emergency"

obligation contains "deidentify" if input.purpose == "research"

obligation contains "audit_restricted_access" if patient.restricted == true

# ---------------------------------------------------------------------------
# Grants
# ---------------------------------------------------------------------------

request_valid if {
	present(["subject", "id"])
	role_sections
	patient
	sections_valid
}

# Treatment: only members of the patient's care team.
relationship_granted if {
	input.purpose == "treatment"
	on_care_team
}

# Billing: billing staff, no clinical relationship needed (their sections are
# administrative only, see config.access.admin).
relationship_granted if input.purpose == "billing"

# Research: only with the patient's recorded opt-in, never for restricted records.
relationship_granted if {
	input.purpose == "research"
	research_consent
	not patient.restricted == true
}

# Emergency: anyone with emergency sections (doctors, nurses), care team or not,
# through a valid, recent, justified break-glass session.
relationship_granted if {
	input.purpose == "emergency"
	break_glass_valid
}

# ---------------------------------------------------------------------------
# Deny reasons
# ---------------------------------------------------------------------------

deny contains "subject.id is required" if not present(["subject", "id"])

deny contains "subject.role is required" if not present(["subject", "role"])

deny contains msg if {
	present(["subject", "role"])
	not config.access[input.subject.role]
	msg := concat("", ["unknown role '", input.subject.role, "'"])
}

deny contains "purpose is required" if not present(["purpose"])

deny contains msg if {
	present(["purpose"])
	not input.purpose in config.purposes
	msg := concat("", ["unknown purpose '", input.purpose, "'"])
}

deny contains msg if {
	config.access[input.subject.role]
	input.purpose in config.purposes
	not role_sections
	msg := concat("", ["role '", input.subject.role, "' may not access records for '", input.purpose, "'"])
}

deny contains "resource.patient_id is required" if not present(["resource", "patient_id"])

deny contains msg if {
	present(["resource", "patient_id"])
	not patient
	msg := concat("", ["unknown patient '", input.resource.patient_id, "'"])
}

deny contains "resource.sections must be a non-empty array of section names" if not sections_shape_valid

deny contains msg if {
	sections_shape_valid
	some section in input.resource.sections
	not section in config.sections
	msg := concat("", ["unknown section '", section, "'"])
}

deny contains msg if {
	input.purpose == "treatment"
	role_sections
	patient
	not on_care_team
	msg := concat("", ["subject is not on the care team of patient '", input.resource.patient_id, "'"])
}

deny contains msg if {
	input.purpose == "research"
	role_sections
	patient
	not research_consent
	msg := concat("", ["patient '", input.resource.patient_id, "' has not consented to research"])
}

deny contains "restricted records are excluded from research" if {
	input.purpose == "research"
	patient.restricted == true
}

deny contains msg if {
	role_sections
	sections_valid
	count(granted_sections) == 0
	msg := concat("", [
		"none of the requested sections may be read by role '", input.subject.role,
		"' for '", input.purpose, "'",
	])
}

# Break-glass

deny contains "break_glass is required for emergency access" if {
	input.purpose == "emergency"
	not is_object(object.get(input, "break_glass", null))
}

deny contains msg if {
	input.purpose == "emergency"
	is_object(input.break_glass)
	not justification_sufficient
	msg := concat("", [
		"break_glass.justification must be at least ",
		format_int(config.break_glass.min_justification_length, 10), " characters",
	])
}

deny contains "break_glass.started_at must be an RFC 3339 timestamp" if {
	input.purpose == "emergency"
	is_object(input.break_glass)
	not break_glass_started_ns
}

deny contains msg if {
	break_glass_age_ns > max_age_ns
	msg := concat("", [
		"break-glass session started more than ",
		format_int(config.break_glass.max_age_seconds, 10), " seconds ago",
	])
}

deny contains "break_glass.started_at is in the future" if {
	break_glass_age_ns < 0 - max_skew_ns
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

# The sections this role may read for this purpose; undefined when the role or purpose
# is unknown or the role has no access for the purpose.
role_sections := {s | some s in config.access[input.subject.role][input.purpose]} if {
	is_string(input.subject.role)
	is_string(input.purpose)
	is_array(config.access[input.subject.role][input.purpose])
}

patient := data.hospital.patients[input.resource.patient_id] if present(["resource", "patient_id"])

sections_shape_valid if {
	is_array(input.resource.sections)
	count(input.resource.sections) > 0
	every section in input.resource.sections {
		is_string(section)
	}
}

sections_valid if {
	sections_shape_valid
	every section in input.resource.sections {
		section in config.sections
	}
}

requested_sections := {s | some s in input.resource.sections; is_string(s)} if {
	is_array(input.resource.sections)
} else := set()

granted_sections := requested_sections & role_sections if {
	role_sections
} else := set()

on_care_team if {
	present(["subject", "id"])
	present(["resource", "patient_id"])
	input.subject.id in data.hospital.care_teams[input.resource.patient_id]
}

research_consent if patient.consent.research == true

justification_sufficient if {
	is_string(input.break_glass.justification)
	count(trim_space(input.break_glass.justification)) >= config.break_glass.min_justification_length
}

break_glass_valid if {
	justification_sufficient
	break_glass_age_ns <= max_age_ns
	break_glass_age_ns >= 0 - max_skew_ns
}

# The timestamp is checked against the RFC 3339 shape before parsing so that malformed
# values deny cleanly instead of raising a builtin error.
break_glass_started_ns := time.parse_rfc3339_ns(input.break_glass.started_at) if {
	input.purpose == "emergency"
	is_string(input.break_glass.started_at)
	regex.match(
		`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`,
		input.break_glass.started_at,
	)
}

break_glass_age_ns := time.now_ns() - break_glass_started_ns

max_age_ns := config.break_glass.max_age_seconds * 1000000000

max_skew_ns := config.break_glass.max_clock_skew_seconds * 1000000000
