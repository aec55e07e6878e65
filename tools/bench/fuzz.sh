#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make fuzz`: a long fuzzing campaign of selftests/rkvm/fuzz_ioctl and fuzz_guest under
# Bochs (Intel VMX, icelake), first against reference KVM (kvm-intel), then against rkvm,
# one boot per hypervisor (a host crash in one does not cost the other's results). Then
# the serial logs are scanned for host splats and the rates are printed.
#
#   fuzz.sh KBUILD RKVM_KO TESTBIN_DIR OUTDIR
#
# Environment:
#   FUZZ_SECONDS   campaign length per fuzzer and hypervisor (default 600)
#   FUZZ_SEED      the seed (default: the current time; printed, so a run can be replayed)
#   FUZZ_HVS       the hypervisors, in order (default "kvm rkvm")
#   FUZZ_TESTS     the fuzzers (default "fuzz_ioctl fuzz_guest")
#   FUZZ_EMULATOR  run.sh's emulator (default bochs-corei7_icelake_u:1)
#   FUZZ_BOCHS_LOG Bochs's error log action (default ignore; report keeps Bochs's log)
#   FUZZ_STEP_LIMIT  host-side seconds without a protocol or progress line before a boot
#                  counts as hung (default 900)
#   FUZZ_SLOWDOWN  host seconds per guest second for the limits above (default 10)
#   FUZZ_CMDLINE   more kernel parameters, e.g. "FUZZ_THREADS=1 FUZZ_VERBOSE=1" (the fuzzers
#                  read FUZZ_THREADS, FUZZ_VERBOSE, FUZZ_PROGRESS, FUZZ_ITERATIONS and
#                  FUZZ_UNSAFE_EXITS from their environment, see selftests/rkvm/lib/fuzz.h)
#
# No change to the image's /init: this is its check mode with bench.hvs= (one hypervisor
# per boot) and bench.timeout= (the in-guest limit per test). FUZZ_SEED and FUZZ_SECONDS on
# the kernel command line reach /init, and so the fuzzers, as environment variables (the
# kernel hands name=value parameters without a dot to init's environment); a fuzzer
# started without -n/-t takes its campaign from them and still ends with its TAP checks.
# ignore_loglevel puts every kernel message (WARNINGs included, which the image's "quiet"
# hides) on the serial console, where the scan below finds them.
#
# Exit status: 0 when both hypervisors' runs completed with every fuzzer passing and no
# splat in the logs.

. "$(dirname "$0")/lib.sh"

KBUILD=$1 rkvm_ko=$2 bindir=$3 outdir=$4
seconds=${FUZZ_SECONDS:-600}
seed=${FUZZ_SEED:-$(date +%s)}
hvs=${FUZZ_HVS:-kvm rkvm}
tests=${FUZZ_TESTS:-fuzz_ioctl fuzz_guest}
emu=${FUZZ_EMULATOR:-bochs-corei7_icelake_u:1}
kernel=$KBUILD/arch/x86/boot/bzImage
# Bochs's own error log grows by megabytes a second under a fuzzed guest.
export BOCHS_ERROR_ACTION=${FUZZ_BOCHS_LOG:-ignore}
mkdir -p "$outdir"
rm -f "$outdir"/*.log "$outdir"/*.bochs.txt "$outdir"/report.txt

img=$outdir/fuzz.cpio.lz4
"$RKVM_TOP/tools/bench/image.sh" "$img" "$KBUILD" "$rkvm_ko" "$bindir" "$tests"

# In the guest: the campaign, the fuzzer's own checks (a few seconds), and slack for a slow
# emulator. On the host: while a fuzzer runs, its "# progress:" lines (every 2000
# operations or 500 programs, seconds apart) are what shows the machine is alive, so a
# stopped machine is noticed within the step limit; the boot's limit covers all tests and
# the boot itself.
# The guest's seconds are not the host's: Bochs with the debug kernel runs about ten
# times slower than its guest clock says (FUZZ_SLOWDOWN), and a host limit computed in
# guest seconds killed a healthy campaign a sixth of the way through.
ntests=$(wc -w <<<"$tests")
slowdown=${FUZZ_SLOWDOWN:-10}
per_test=$((seconds + 240))
step_limit=${FUZZ_STEP_LIMIT:-900}
export RUN_PROGRESS_RE=' *# progress:'
run_limit=$((ntests * per_test * slowdown + 600))

# What counts as a host splat in the serial log.
splats='Oops|BUG:|WARNING:|KASAN|UBSAN|possible circular locking|possible recursive locking|'
splats+='inconsistent lock state|soft lockup|hard LOCKUP|rcu.*(stall|self-detected)|'
splats+='blocked for more than|kmemleak: [0-9]+ new suspected|general protection fault|Kernel panic|Call Trace'

log "fuzz: seed $seed, $seconds s per fuzzer and hypervisor, fuzzers: $tests, hypervisors: $hvs"
status=0
for hv in $hvs; do
	# One boot per hypervisor; a boot that died or hung in a step (a host crash, a stuck
	# ioctl) goes on in a new boot from the next step, as check.sh does.
	from=0 boot=0
	while :; do
		boot=$((boot + 1))
		logf=$outdir/$hv.boot$boot.log
		log "fuzz: $hv: boot $boot, steps from $from ($emu, limit $run_limit s)"
		"$RKVM_TOP/tools/bench/run.sh" "$emu" "$kernel" "$img" \
			"bench.mode=check bench.hvs=$hv bench.from=$from bench.apicv=0 bench.timeout=$per_test ignore_loglevel FUZZ_SEED=$seed FUZZ_SECONDS=$seconds ${FUZZ_CMDLINE:-}" \
			"$logf" "$run_limit" "$step_limit" && break
		status=1
		last=$(tr -d '\r' <"$logf" | grep -a '^@@ START' | tail -1 | awk '{print $3}')
		[ -n "$last" ] || break
		from=$((last + 1))
		[ "$from" -lt "$ntests" ] || break
	done
	cat "$outdir/$hv".boot*.log >"$outdir/$hv.log"
done

# ---- Report ------------------------------------------------------------------------------
{
	echo "fuzz campaign: seed $seed, $seconds s per fuzzer and hypervisor, $emu"
	printf '%-5s %-11s %-7s %12s %12s %10s %14s\n' hv fuzzer result ops/programs ioctls seconds per-minute
	for hv in $hvs; do
		logf=$outdir/$hv.log
		[ -f "$logf" ] || continue
		for t in $tests; do
			res=$(tr -d '\r' <"$logf" | awk -v t="$t" '$1 == "@@" && $2 == "RESULT" && $5 == t {print $6}' | tail -1)
			# The summary line the fuzzer printed between its START and RESULT lines.
			sum=$(tr -d '\r' <"$logf" | awk -v t="$t" '$1 == "@@" && $2 == "START" {cur = $5}
				cur == t && $1 == "#" && $2 == "summary:" {line = $0} END {print line}')
			# fuzz_ioctl: "... ops N ioctls M ... ms X"; fuzz_guest: "... programs N ... ioctls M ... ms X".
			n=$(sed -n 's/.* \(ops\|programs\) \([0-9]*\) .*/\2/p' <<<"$sum")
			io=$(sed -n 's/.* ioctls \([0-9]*\) .*/\1/p' <<<"$sum")
			ms=$(sed -n 's/.* ms \([0-9]*\).*/\1/p' <<<"$sum")
			rate=-
			[ -n "$n" ] && [ -n "$ms" ] && [ "$ms" -gt 0 ] && rate="$((n * 60000 / ms))"
			[ "$t" = fuzz_ioctl ] && [ -n "$io" ] && [ -n "$ms" ] && [ "$ms" -gt 0 ] &&
				rate="$rate ($((io * 60000 / ms)) ioctls)"
			printf '%-5s %-11s %-7s %12s %12s %10s %14s\n' "$hv" "$t" "${res:-hung/crashed}" "${n:--}" \
				"${io:--}" "$(( ${ms:-0} / 1000 ))" "$rate"
			[ "$res" = pass ] || status=1
		done
	done
	for hv in $hvs; do
		logf=$outdir/$hv.log
		[ -f "$logf" ] || continue
		# Kernel lines only (printk times on): the fuzzers' own TAP lines never count.
		n=$(tr -d '\r' <"$logf" | grep -aE '^\[ *[0-9]+\.[0-9]+\] ' | grep -aEc "$splats" || true)
		if [ "$n" -gt 0 ]; then
			status=1
			echo "$hv: $n splat lines in ${logf##*/}; the first ones:"
			tr -d '\r' <"$logf" | grep -aE '^\[ *[0-9]+\.[0-9]+\] ' | grep -aE -m 12 -B 2 -A 3 "$splats" | sed 's/^/    /'
		else
			echo "$hv: no splat in ${logf##*/}"
		fi
		tr -d '\r' <"$logf" | grep -a '^@@ HOST' | sed "s/^/$hv: /"
	done
	echo "replay in a shell image: KVM_DEVICE=/dev/<hv> FUZZ_SEED=$seed FUZZ_SECONDS=$seconds /tests/bin/<fuzzer>, or <fuzzer> -s $seed -t $seconds -v"
} | tee "$outdir/report.txt"
exit $status
