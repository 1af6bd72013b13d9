# Tests for hospital.records. Self-contained: every evaluation supplies its own
# configuration with `with data.hospital.* as ...`, and the clock is pinned with
# `with time.now_ns as now`, so results never depend on when the tests run.
package hospital.records_test

import data.hospital.records

# 2026-01-01T00:00:00Z
now := 1767225600000000000

# Mirrors bundles/hospital/data/*.json.
config := {
	"purposes": ["billing", "emergency", "research", "treatment"],
	"sections": [
		"allergies", "billing", "clinical_notes", "demographics", "diagnoses", "genetics",
		"insurance", "lab_results", "medications", "mental_health", "vitals",
	],
	"access": {
		"doctor": {
			"treatment": [
				"allergies", "clinical_notes", "demographics", "diagnoses", "genetics",
				"lab_results", "medications", "mental_health", "vitals",
			],
			"emergency": [
				"allergies", "clinical_notes", "demographics", "diagnoses", "lab_results",
				"medications", "vitals",
			],
		},
		"nurse": {
			"treatment": ["allergies", "demographics", "lab_results", "medications", "vitals"],
			"emergency": ["allergies", "demographics", "diagnoses", "lab_results", "medications", "vitals"],
		},
		"admin": {"billing": ["billing", "demographics", "insurance"]},
		"researcher": {"research": ["diagnoses", "genetics", "lab_results"]},
	},
	"break_glass": {"min_justification_length": 20, "max_age_seconds": 14400, "max_clock_skew_seconds": 300},
}

care_teams := {
	"p-1001": ["dr-ahmed", "rn-okafor"],
	"p-1002": ["dr-lindqvist", "rn-okafor", "rn-silva"],
	"p-1003": ["dr-ahmed"],
	"p-1004": [],
}

patients := {
	"p-1001": {"restricted": false, "consent": {"research": true}},
	"p-1002": {"restricted": false, "consent": {"research": false}},
	"p-1003": {"restricted": true, "consent": {"research": true}},
	"p-1004": {"restricted": false, "consent": {}},
}

decide(inp) := d if {
	d := records.decision with input as inp
		with data.hospital.config as config
		with data.hospital.care_teams as care_teams
		with data.hospital.patients as patients
		with time.now_ns as now
}

allowed(inp) if {
	records.allow with input as inp
		with data.hospital.config as config
		with data.hospital.care_teams as care_teams
		with data.hospital.patients as patients
		with time.now_ns as now
}

treatment := {
	"subject": {"id": "dr-ahmed", "role": "doctor"},
	"purpose": "treatment",
	"resource": {"patient_id": "p-1001", "sections": ["clinical_notes", "medications"]},
}

justification := "Unconscious patient in ED, allergy history needed"

# dr-lindqvist is not on p-1001's care team.
emergency := {
	"subject": {"id": "dr-lindqvist", "role": "doctor"},
	"purpose": "emergency",
	"resource": {"patient_id": "p-1001", "sections": ["allergies", "medications", "mental_health"]},
	"break_glass": {"justification": justification, "started_at": "2025-12-31T23:30:00Z"},
}

with_break_glass(bg) := object.union(emergency, {"break_glass": bg})

# --- treatment -------------------------------------------------------------------

test_care_team_doctor_reads_sections if {
	decide(treatment) == {
		"allow": true,
		"allowed_sections": ["clinical_notes", "medications"],
		"withheld_sections": [],
		"obligations": [],
		"reasons": [],
	}
}

test_doctor_not_on_care_team_denied if {
	d := decide(object.union(treatment, {"subject": {"id": "dr-lindqvist"}}))
	d.allow == false
	d.reasons == ["subject is not on the care team of patient 'p-1001'"]
	d.allowed_sections == []
	d.withheld_sections == ["clinical_notes", "medications"]
}

test_nurse_sections_are_field_limited if {
	d := decide({
		"subject": {"id": "rn-okafor", "role": "nurse"},
		"purpose": "treatment",
		"resource": {"patient_id": "p-1002", "sections": ["clinical_notes", "medications", "mental_health", "vitals"]},
	})
	d.allow == true
	d.allowed_sections == ["medications", "vitals"]
	d.withheld_sections == ["clinical_notes", "mental_health"]
}

test_no_permitted_section_denied if {
	d := decide({
		"subject": {"id": "rn-okafor", "role": "nurse"},
		"purpose": "treatment",
		"resource": {"patient_id": "p-1001", "sections": ["mental_health"]},
	})
	d.allow == false
	d.reasons == ["none of the requested sections may be read by role 'nurse' for 'treatment'"]
}

test_patient_with_empty_care_team if {
	d := decide(object.union(treatment, {"resource": {"patient_id": "p-1004"}}))
	d.reasons == ["subject is not on the care team of patient 'p-1004'"]
}

test_restricted_record_adds_audit_obligation if {
	d := decide(object.union(treatment, {"resource": {"patient_id": "p-1003"}}))
	d.allow == true
	d.obligations == ["audit_restricted_access"]
}

# --- billing and research --------------------------------------------------------------

test_admin_billing_access if {
	d := decide({
		"subject": {"id": "adm-jones", "role": "admin"},
		"purpose": "billing",
		"resource": {"patient_id": "p-1002", "sections": ["billing", "insurance", "diagnoses"]},
	})
	d.allow == true
	d.allowed_sections == ["billing", "insurance"]
	d.withheld_sections == ["diagnoses"]
}

test_admin_cannot_claim_treatment_purpose if {
	d := decide({
		"subject": {"id": "adm-jones", "role": "admin"},
		"purpose": "treatment",
		"resource": {"patient_id": "p-1002", "sections": ["billing"]},
	})
	d.reasons == ["role 'admin' may not access records for 'treatment'"]
}

test_research_with_consent if {
	d := decide({
		"subject": {"id": "res-patel", "role": "researcher"},
		"purpose": "research",
		"resource": {"patient_id": "p-1001", "sections": ["lab_results", "demographics"]},
	})
	d == {
		"allow": true,
		"allowed_sections": ["lab_results"],
		"withheld_sections": ["demographics"],
		"obligations": ["deidentify"],
		"reasons": [],
	}
}

test_research_without_consent_denied if {
	every patient_id in ["p-1002", "p-1004"] {
		d := decide({
			"subject": {"id": "res-patel", "role": "researcher"},
			"purpose": "research",
			"resource": {"patient_id": patient_id, "sections": ["lab_results"]},
		})
		d.reasons == [concat("", ["patient '", patient_id, "' has not consented to research"])]
	}
}

test_research_excludes_restricted_records if {
	d := decide({
		"subject": {"id": "res-patel", "role": "researcher"},
		"purpose": "research",
		"resource": {"patient_id": "p-1003", "sections": ["lab_results"]},
	})
	d.reasons == ["restricted records are excluded from research"]
}

# --- break-glass ----------------------------------------------------------------------

test_break_glass_outside_care_team if {
	decide(emergency) == {
		"allow": true,
		"allowed_sections": ["allergies", "medications"],
		"withheld_sections": ["mental_health"],
		"obligations": ["audit_break_glass", "notify_privacy_officer"],
		"reasons": [],
	}
}

test_break_glass_exactly_four_hours_old_allowed if {
	allowed(with_break_glass({"started_at": "2025-12-31T20:00:00Z"}))
}

test_break_glass_one_second_past_four_hours_denied if {
	d := decide(with_break_glass({"started_at": "2025-12-31T19:59:59Z"}))
	d.allow == false
	d.reasons == ["break-glass session started more than 14400 seconds ago"]
	d.obligations == []
}

test_break_glass_one_nanosecond_past_four_hours_denied if {
	not allowed(with_break_glass({"started_at": "2025-12-31T19:59:59.999999999Z"}))
}

test_break_glass_offsets_are_honoured if {
	# 2026-01-01T01:00:00+02:00 is 2025-12-31T23:00:00Z: one hour old.
	allowed(with_break_glass({"started_at": "2026-01-01T01:00:00+02:00"}))

	# 2025-12-31T15:30:00-05:00 is 2025-12-31T20:30:00Z: 3.5 hours old.
	allowed(with_break_glass({"started_at": "2025-12-31T15:30:00-05:00"}))
}

test_break_glass_clock_skew_tolerance if {
	allowed(with_break_glass({"started_at": "2026-01-01T00:05:00Z"}))
	d := decide(with_break_glass({"started_at": "2026-01-01T00:05:01Z"}))
	d.reasons == ["break_glass.started_at is in the future"]
}

test_break_glass_depends_on_the_clock if {
	# The same request is refused once the clock has moved on.
	d := records.decision with input as emergency
		with data.hospital.config as config
		with data.hospital.care_teams as care_teams
		with data.hospital.patients as patients
		with time.now_ns as now + ((4 * 3600) * 1000000000)
	d.allow == false
}

test_break_glass_justification_min_length if {
	# 20 characters after trimming is enough; 19 is not.
	allowed(with_break_glass({"justification": "  Cardiac arrest bay 3  "}))
	d := decide(with_break_glass({"justification": " Cardiac arrest bay3 "}))
	d.reasons == ["break_glass.justification must be at least 20 characters"]
}

test_break_glass_justification_missing_or_blank if {
	every bg in [
		{"started_at": "2025-12-31T23:30:00Z"},
		{"started_at": "2025-12-31T23:30:00Z", "justification": "                         "},
		{"started_at": "2025-12-31T23:30:00Z", "justification": 12345678901234567890},
	] {
		d := decide(object.union(json.remove(emergency, ["break_glass"]), {"break_glass": bg}))
		d.reasons == ["break_glass.justification must be at least 20 characters"]
	}
}

test_break_glass_timestamp_must_be_rfc3339 if {
	every ts in ["2025-12-31 23:30:00", "2025-12-31T23:30:00", "yesterday", 1767222000, "2025-13-01T00:00:00Z"] {
		d := decide(with_break_glass({"started_at": ts}))
		d.reasons == ["break_glass.started_at must be an RFC 3339 timestamp"]
	}
}

test_break_glass_missing_timestamp if {
	d := decide(json.remove(emergency, ["break_glass/started_at"]))
	d.reasons == ["break_glass.started_at must be an RFC 3339 timestamp"]
}

test_emergency_without_break_glass if {
	d := decide(json.remove(emergency, ["break_glass"]))
	d.reasons == ["break_glass is required for emergency access"]
}

test_researcher_cannot_break_glass if {
	d := decide(object.union(emergency, {"subject": {"id": "res-patel", "role": "researcher"}}))
	d.reasons == ["role 'researcher' may not access records for 'emergency'"]
}

test_break_glass_not_needed_nor_granting_for_treatment if {
	# A break_glass block does not widen treatment access to a non-member.
	inp := object.union(treatment, {
		"subject": {"id": "dr-lindqvist"},
		"break_glass": {"justification": justification, "started_at": "2025-12-31T23:30:00Z"},
	})
	not allowed(inp)
}

# --- malformed and missing input ----------------------------------------------------

test_unknown_role_denied if {
	d := decide(object.union(treatment, {"subject": {"role": "surgeon"}}))
	d.reasons == ["unknown role 'surgeon'"]
}

test_unknown_purpose_denied if {
	d := decide(object.union(treatment, {"purpose": "marketing"}))
	d.reasons == ["unknown purpose 'marketing'"]
}

test_unknown_patient_denied if {
	d := decide(object.union(treatment, {"resource": {"patient_id": "p-9999"}}))
	d.reasons == ["unknown patient 'p-9999'"]
}

test_unknown_section_denied if {
	d := decide(object.union(treatment, {"resource": {"sections": ["medications", "x-rays"]}}))
	d.allow == false
	d.reasons == ["unknown section 'x-rays'"]
}

test_sections_required if {
	every sections in [[], "medications", ["medications", 7], null] {
		d := decide(object.union(treatment, {"resource": {"sections": sections}}))
		"resource.sections must be a non-empty array of section names" in d.reasons
		d.allow == false
	}
	d := decide(json.remove(treatment, ["resource/sections"]))
	d.reasons == ["resource.sections must be a non-empty array of section names"]
}

test_missing_subject_fields_denied if {
	d := decide(json.remove(treatment, ["subject"]))
	d.reasons == ["subject.id is required", "subject.role is required"]
}

test_missing_purpose_denied if {
	d := decide(json.remove(treatment, ["purpose"]))
	d.reasons == ["purpose is required"]
}

test_empty_input_denied if {
	decide({}) == {
		"allow": false,
		"allowed_sections": [],
		"withheld_sections": [],
		"obligations": [],
		"reasons": [
			"purpose is required",
			"resource.patient_id is required",
			"resource.sections must be a non-empty array of section names",
			"subject.id is required",
			"subject.role is required",
		],
	}
}
