#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make conformance`: the kernel's own KVM selftests (x86 and generic), run against
# kvm-intel (enable_apicv=0) and then against rkvm under Bochs (corei7_icelake_u, VMX),
# and against kvm-amd and then rkvm under QEMU (TCG, -cpu EPYC, SVM). Writes OUTDIR/bochs
# and OUTDIR/qemu (serial logs of every boot, results) and the scoreboard DOC.
#
#   conformance.sh KBUILD RKVM_KO RKVM_SELFTESTS_DIR OUTDIR DOC
#
# RKVM_SELFTESTS_DIR is the build of selftests/rkvm: the image takes its lib/*.sh (the
# hypervisor loading functions /init uses). Environment:
#   CONFORMANCE_TESTS  run only these tests (names as in the scoreboard, x86/ optional)
#   CONFORMANCE_HVS    the hypervisors, in order (default "kvm rkvm")
#   CONFORMANCE_EMUS   the emulators, in order (default "bochs qemu"; set but empty: none,
#                      only the scoreboard is written). The scoreboard is written from
#                      OUTDIR/bochs and OUTDIR/qemu, whichever exist: two runs made side
#                      by side (one emulator each) are read together
#   STEP_LIMIT         host-side limit per test, seconds of wall time (default 300): a
#                      step with no result by then is a timeout, and its boot is killed;
#                      the next boot resumes after it
#   TEST_TIMEOUT       in-guest limit per test, seconds of guest time (default 240)
#   GUEST_MEM_MB       guest RAM (default 3072; dirty_log_test wants about 2 GB)
#   RUN_LIMIT          limit per boot, seconds (default 14400)
#   CONFORMANCE_DOC=0  do not write DOC (a partial run)

. "$(dirname "$0")/../bench/lib.sh"

KBUILD=$1 rkvm_ko=$2 rkvm_selftests=$3 top_outdir=$4 doc=$5
kernel=$KBUILD/arch/x86/boot/bzImage
export GUEST_MEM_MB=${GUEST_MEM_MB:-3072}
export RUN_ONE_BOOT=1
step_limit=${STEP_LIMIT:-300}
test_timeout=${TEST_TIMEOUT:-240}
hvs=${CONFORMANCE_HVS:-kvm rkvm}
start=$(date +%s)

cache=$("$RKVM_TOP/tools/conformance/build.sh" "$KBUILD")

# The tests of this run, in the upstream Makefile's order.
all=$(awk '{print $1}' "$cache/tests.list")
if [ -n "${CONFORMANCE_TESTS:-}" ]; then
	tests=""
	for t in $CONFORMANCE_TESTS; do
		t=${t##*/}
		grep -qx "$t" <<<"$all" || die "no KVM selftest named $t"
		tests="$tests $t"
	done
else
	tests=$(echo $all)
fi

run_emulator() {
	local name=$1 emu=$2 extra=$3 outdir=$top_outdir/$1 from=0 boot=0
	local t0
	t0=$(date +%s)
	# The image: every built test (stripped already) plus the runner's shell library.
	rm -rf "$outdir" && mkdir -p "$outdir/bin/lib"
	ln -s "$cache"/bin/* "$outdir/bin/"
	cp "$rkvm_selftests"/lib/*.sh "$outdir/bin/lib/"
	img=$outdir/conformance.cpio.lz4
	"$RKVM_TOP/tools/bench/image.sh" "$img" "$KBUILD" "$rkvm_ko" "$outdir/bin" "$tests"
	log "$name: image: $(du -m "$img" | cut -f1) MB, $(echo $tests | wc -w) tests x {$hvs}; limits: ${step_limit} s" \
		"per test on the host, ${test_timeout} s in the guest; guest RAM ${GUEST_MEM_MB} MB"

	cmdline="bench.mode=check bench.apicv=0 bench.hvs=$(echo $hvs | tr ' ' ,) $extra"
	cmdline="$cmdline bench.timeout=$test_timeout bench.kvmnode=1 bench.kmsg=1"
	while :; do
		boot=$((boot + 1))
		logf=$outdir/boot$boot.log
		log "$name: boot $boot (steps from $from)"
		"$RKVM_TOP/tools/bench/run.sh" "$emu" "$kernel" "$img" "$cmdline bench.from=$from" "$logf" \
			"${RUN_LIMIT:-14400}" "$step_limit" || true
		clean=$(tr -d '\r' <"$logf")
		log "$name: boot $boot: $(grep -c '^@@ RESULT' <<<"$clean") results;" \
			"$(grep -a '^@@ HOST' <<<"$clean" | cut -d' ' -f3- | tr '\n' ' ')"
		grep -q '^@@ DONE' <<<"$clean" && break
		# The guest hung, crashed or was killed: the step that was running gets the blame
		# (report.py reads it from this log); the next boot resumes after it.
		plan=$(grep '^@@ PLAN' <<<"$clean" | awk '{print $3}' | tail -1)
		last=$(grep '^@@ START' <<<"$clean" | tail -1)
		if [ -z "$plan" ] || [ -z "$last" ]; then
			log "$name: boot $boot did not reach the test plan; giving up (see $logf)"
			break
		fi
		set -- $last
		from=$(($3 + 1))
		[ "$from" -lt "$plan" ] || break
	done
	log "$name: $boot boots, $(($(date +%s) - t0)) s"
	echo "$boot" >"$outdir/boots"
}

mkdir -p "$top_outdir"
for e in ${CONFORMANCE_EMUS-bochs qemu}; do
	case $e in
	bochs) run_emulator bochs bochs-corei7_icelake_u:1 "" ;;
	# As in make check: one TCG thread, the emulated host trusting its TSC.
	qemu) run_emulator qemu qemu-epyc:2 "tsc=reliable" ;;
	*) die "unknown emulator $e (bochs or qemu)" ;;
	esac
done
secs=$(($(date +%s) - start))
log "conformance run: $secs s"

if [ "${CONFORMANCE_DOC:-1}" = 1 ]; then
	docarg=$doc
else
	docarg=-
fi
args=()
[ -d "$top_outdir/bochs" ] && args+=(--outdir "$top_outdir/bochs")
[ -d "$top_outdir/qemu" ] && args+=(--svm-outdir "$top_outdir/qemu")
boots=$(cat "$top_outdir"/*/boots 2>/dev/null | awk '{ n += $1 } END { print n + 0 }')
python3 "$RKVM_TOP/tools/conformance/report.py" "${args[@]}" --tests "$cache/tests.list" \
	--scope "$RKVM_TOP/Documentation/rkvm/conformance-scope.rst" --doc "$docarg" \
	--seconds "$secs" --boots "$boots" --step-limit "$step_limit" --test-timeout "$test_timeout" \
	--guest-mem "$GUEST_MEM_MB" --kernel "$(cat "$KBUILD/include/config/kernel.release" 2>/dev/null)"
