package hospital.system.log_test

import data.hospital.system.log

test_erases_the_justification if {
	"/input/break_glass/justification" in log.mask
}
