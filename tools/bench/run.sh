#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the test image once in an emulator, with a host-side time limit, and leaves the
# serial log in LOG. Exit status: 0 if the guest reached "@@ DONE", 1 otherwise.
#
#   run.sh EMULATOR KERNEL INITRD "CMDLINE" LOG LIMIT_SECONDS [STEP_LIMIT_SECONDS]
# The emulator is killed when the whole run exceeds LIMIT, or when no "@@" protocol line
# arrives for STEP_LIMIT seconds (default 300): one hung test costs one boot.
#   EMULATOR: qemu-epyc[:N] (QEMU TCG, -cpu EPYC, N CPUs, default 2)
#             bochs-<cpu model>[:N] (lean Bochs 3.0, N CPUs, default 1)
# Environment: BOCHS_PREFIX (the Bochs install), QEMU_PREFIX (the patched QEMU's install,
# default $RKVM_CACHE/qemu, from qemu.sh), GUEST_MEM_MB (default 1024 / 512),
# BOCHS_ERROR_ACTION (Bochs's "error:" log action, default report; fuzz.sh uses ignore: a
# fuzzed guest makes Bochs log hundreds of MB of failed VM entries and unknown MSRs).
# RUN_ONE_BOOT=1 (used by `make conformance`): kill the emulator when the guest boots a
# second time (a guest kernel panic reboots Bochs, whose /init would rerun the same steps).
# BOCHS_INFO_ACTION (Bochs's "info:" log action, default ignore): "report" keeps, among
# others, the CPU state Bochs logs when it exits, which a stalled run is made to do.
# RUN_PROGRESS_RE: serial lines matching this extended regex count as progress too
# (fuzz.sh: the fuzzers' "# progress:" lines).
# The emulator's own output ends up in LOG with the .emu.txt suffix, and its exit status
# (or the signal that ended it) on the "@@ HOST" line.

. "$(dirname "$0")/lib.sh"

emu=$1 kernel=$2 initrd=$3 cmdline=$4 logf=$5 limit=$6 step_limit=${7:-300}
ncpu=${emu##*:}
[ "$ncpu" = "$emu" ] && ncpu=
emu=${emu%%:*}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: >"$logf"
start=$(date +%s.%N)

case $emu in
qemu-epyc)
	# -no-reboot turns the guest's poweroff (and any triple fault) into a QEMU exit.
	# One host CPU (the first this process may use) for the whole of QEMU, whose CPUs
	# share one TCG thread anyway: its TSC then comes from one CPU's TSC.
	cpu=$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status | cut -d, -f1 | cut -d- -f1)
	timeout -k 5 "$limit" taskset -c "${cpu:-0}" "${QEMU_PREFIX:-$RKVM_CACHE/qemu}/bin/qemu-system-x86_64" -accel "tcg${QEMU_TCG_OPTS-,thread=single}" -cpu EPYC -smp "${ncpu:-2}" \
		-m "${GUEST_MEM_MB:-1024}" -kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 quiet $cmdline" -display none -nic none \
		-serial "file:$logf" -monitor none -no-reboot </dev/null >"$work/qemu.out" 2>&1 &
	;;
bochs-*)
	model=${emu#bochs-}
	prefix=${BOCHS_PREFIX:-$RKVM_CACHE/bochs}
	# Bochs cannot boot a bzImage directly: wrap kernel and initrd in a hybrid ISO.
	iso=$work/boot.iso
	mkdir -p "$work/iso/isolinux"
	cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 \
		"$work/iso/isolinux/"
	cp "$kernel" "$work/iso/bzimage"
	cp "$initrd" "$work/iso/initrd"
	cat >"$work/iso/isolinux/isolinux.cfg" <<-CFG
		SERIAL 0 115200
		PROMPT 0
		TIMEOUT 0
		DEFAULT rkvm
		LABEL rkvm
		  KERNEL /bzimage
		  APPEND initrd=/initrd console=ttyS0,115200 panic=-1 quiet $cmdline
	CFG
	xorriso -as mkisofs -quiet -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
		-b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 \
		-boot-info-table -R -J -o "$iso" "$work/iso" 2>"$work/xorriso.log" ||
		die "xorriso failed: $(cat "$work/xorriso.log")"
	# Bochs allocates at most 2048 MB of host memory for the guest; a bigger guest (the
	# conformance run's GUEST_MEM_MB) gets the rest from Bochs's overflow file.
	mem=${GUEST_MEM_MB:-512}
	cat >"$work/bochsrc" <<-RC
		memory: guest=$mem, host=$((mem > 2048 ? 2048 : mem))
		cpu: model=$model, count=${ncpu:-1}, ips=50000000, reset_on_triple_fault=1, ignore_bad_msrs=1
		clock: sync=none, time0=local
		romimage: file=$prefix/share/bochs/BIOS-bochs-latest
		vgaromimage: file=$prefix/share/bochs/VGABIOS-lgpl-latest
		ata0-master: type=cdrom, path=$iso, status=inserted
		boot: cdrom
		com1: enabled=1, mode=file, dev=$logf
		display_library: nogui
		log: ${logf%.log}.bochs.txt
		panic: action=fatal
		error: action=${BOCHS_ERROR_ACTION:-report}
		info: action=${BOCHS_INFO_ACTION:-ignore}
		debug: action=ignore
		speaker: enabled=0
		mouse: enabled=0
	RC
	# Bochs ends every run with a "panic" on ACPI soft-off and exit status 1: the
	# verdict comes from the serial log only.
	BXSHARE=$prefix/share/bochs timeout -k 5 "$limit" "$prefix/bin/bochs" -q -f "$work/bochsrc" \
		</dev/null >"$work/bochs.out" 2>&1 &
	;;
*) die "unknown emulator $emu" ;;
esac

# Watch the protocol lines; kill the emulator when a step stalls.
pid=$!
# Asks the emulator to quit first (SIGINT: Bochs then logs where its CPUs were, QEMU
# exits cleanly), then kills it.
stop_emulator() {
	pkill -INT -P $pid 2>/dev/null || true
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		pgrep -P $pid >/dev/null 2>&1 || break
		sleep 1
	done
	pkill -KILL -P $pid 2>/dev/null || true
	kill -KILL $pid 2>/dev/null || true
}
last_n=-1 last_t=$(date +%s)
while kill -0 $pid 2>/dev/null; do
	sleep 1
	n=$(grep -acE "^(@@${RUN_PROGRESS_RE:+|$RUN_PROGRESS_RE})" "$logf" 2>/dev/null || true)
	if [ "$n" != "$last_n" ]; then
		last_n=$n last_t=$(date +%s)
	elif [ $(($(date +%s) - last_t)) -gt "$step_limit" ]; then
		printf '\n@@ HOST killed: no progress for %s s\n' "$step_limit" >>"$logf"
		stop_emulator
		break
	fi
	# A guest kernel panic reboots the machine (Bochs has no -no-reboot): stop it there.
	# Only this kernel's own: a nested guest's console, which a test prints as TAP
	# diagnostics ("    # [ ...] Kernel panic"), is that test's business.
	if grep -aqE '^.?(\[ *[0-9]+\.[0-9]+\] )?Kernel panic - not syncing' "$logf" 2>/dev/null; then
		sleep 2
		printf '\n@@ HOST killed: guest kernel panic\n' >>"$logf"
		pkill -KILL -P $pid 2>/dev/null || true
		kill -KILL $pid 2>/dev/null || true
		break
	fi
	if [ "${RUN_ONE_BOOT:-0}" = 1 ] && [ "$(grep -c '^@@ INFO' "$logf" 2>/dev/null)" -gt 1 ]; then
		printf '\n@@ HOST killed: the guest rebooted\n' >>"$logf"
		pkill -KILL -P $pid 2>/dev/null || true
		kill -KILL $pid 2>/dev/null || true
		break
	fi
	if grep -q '^@@ DONE' "$logf" 2>/dev/null; then
		# Give the guest a moment to power off, then make sure the emulator is gone.
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $pid 2>/dev/null || break; sleep 1; done
		pkill -KILL -P $pid 2>/dev/null || true
		kill -KILL $pid 2>/dev/null || true
		break
	fi
done
status=0
wait $pid 2>/dev/null || status=$?
for out in "$work/qemu.out" "$work/bochs.out"; do
	[ -s "$out" ] && tail -c 65536 "$out" >"${logf%.log}.emu.txt"
done

secs=$(echo "$(date +%s.%N) - $start" | bc)
printf '%s\n' "@@ HOST $emu${ncpu:+:$ncpu} wall=${secs%.*}s limit=${limit}s status=$status" >>"$logf"
grep -q '^@@ DONE' "$logf"
