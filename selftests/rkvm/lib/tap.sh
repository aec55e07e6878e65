# SPDX-License-Identifier: GPL-2.0
#
# TAP for the shell tests, as lib/rkvm_test.h does it for C: the runner's verdict comes
# from the exit status (0 pass, 4 skip, anything else fail). Shipped as /tests/lib/tap.sh.
#
#   tap_plan N           announce N checks
#   tap_ok RC DESC...    one check, passed if RC is 0; returns RC
#   tap_diag TEXT...     a diagnostic line (multi-line text is prefixed line by line)
#   tap_skip_all WHY     skip the whole test (exit 4)
#   tap_bail WHY         abort (exit 1)
#   tap_done             exit 0 only if every planned check ran and passed

TAP_PLANNED=0 TAP_RUN=0 TAP_FAILED=0

tap_plan() {
	TAP_PLANNED=$1
	echo "TAP version 13"
	echo "1..$1"
}

tap_ok() {
	local rc=$1
	shift
	TAP_RUN=$((TAP_RUN + 1))
	if [ "$rc" -eq 0 ]; then
		echo "ok $TAP_RUN - $*"
	else
		TAP_FAILED=$((TAP_FAILED + 1))
		echo "not ok $TAP_RUN - $*"
	fi
	return "$rc"
}

tap_diag() { printf '%s\n' "$*" | sed 's/^/# /'; }

tap_skip_all() {
	echo "1..0 # SKIP $*"
	exit 4
}

tap_bail() {
	echo "Bail out! $*"
	exit 1
}

tap_done() {
	if [ "$TAP_RUN" -ne "$TAP_PLANNED" ]; then
		echo "# planned $TAP_PLANNED checks, ran $TAP_RUN"
		exit 1
	fi
	echo "# $((TAP_RUN - TAP_FAILED)) passed, $TAP_FAILED failed"
	[ "$TAP_FAILED" -eq 0 ] || exit 1
	exit 0
}
