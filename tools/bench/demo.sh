#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: boots the emulated Intel machine (Bochs, icelake, 2 CPUs), loads rkvm,
# boots Linux as its guest under rkvm-run (tools/rkvm-run) and shows the VM's statistics.

. "$(dirname "$0")/lib.sh"

KBUILD=$1 rkvm_ko=$2 bindir=$3 outdir=$4
mkdir -p "$outdir"
# (A VMM test in the list makes the image carry /vmm: rkvm-run, the guest's kernel and
# initramfs.)
log "packing the test image with rkvm.ko, rkvm-run and the guest"
"$RKVM_TOP/tools/bench/image.sh" "$outdir/initrd.cpio.lz4" "$KBUILD" "$rkvm_ko" "$bindir" \
	"vmm_rkvm_run"
log "booting Bochs (corei7_icelake_u, VMX, 2 CPUs) with rkvm"
start=$(date +%s)
ok=0
GUEST_MEM_MB=1024 RUN_PROGRESS_RE="^== " "$RKVM_TOP/tools/bench/run.sh" bochs-corei7_icelake_u:2 \
	"$KBUILD/arch/x86/boot/bzImage" "$outdir/initrd.cpio.lz4" "bench.mode=demo" \
	"$outdir/serial.log" 900 300 || ok=1
# Show the guest's console from the moment rkvm is loaded.
tr -d '\r' <"$outdir/serial.log" | sed -n '/^== loading rkvm/,$p' | grep -v '^@@ DONE'
log "demo finished in $(($(date +%s) - start)) s (serial log: $outdir/serial.log)"
exit $ok
