#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: boots the emulated Intel machine (Bochs, icelake), loads rkvm, runs a
# real-mode guest that prints a line on its serial port, shows rkvm's debugfs stats.

. "$(dirname "$0")/lib.sh"

KBUILD=$1 rkvm_ko=$2 bindir=$3 outdir=$4
mkdir -p "$outdir"
"$RKVM_TOP/tools/bench/image.sh" "$outdir/initrd.cpio.lz4" "$KBUILD" "$rkvm_ko" "$bindir" ""
log "booting Bochs (corei7_icelake_u, VMX) with rkvm"
start=$(date +%s)
ok=0
"$RKVM_TOP/tools/bench/run.sh" bochs-corei7_icelake_u:1 "$KBUILD/arch/x86/boot/bzImage" \
	"$outdir/initrd.cpio.lz4" "bench.mode=demo" "$outdir/serial.log" 600 120 || ok=1
# Show the guest's console from the moment rkvm is loaded.
tr -d '\r' <"$outdir/serial.log" | sed -n '/^== loading rkvm/,$p' | grep -v '^@@ DONE'
log "demo finished in $(($(date +%s) - start)) s (serial log: $outdir/serial.log)"
exit $ok
