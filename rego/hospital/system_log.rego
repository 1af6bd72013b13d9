# Decision-log privacy for the hospital tenant, in the shape of OPA's data.system.log.mask
# (under the tenant's namespace). The input is the decision event. A break-glass
# justification is free text that may name the patient's condition: it is erased from the log
# (the event records that it was, in `erased`); the patient id is kept for the audit trail.
package hospital.system.log

mask contains "/input/break_glass/justification"
