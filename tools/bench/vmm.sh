#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The payload of the VMM tests (selftests/rkvm/vmm_*.sh), copied into the test image
# under / by image.sh when such a test is in its list:
#   /vmm/bin/qemu-system-x86_64   Debian's QEMU (qemu-system-x86), with every shared
#                                 library it links at its own path (/lib/x86_64-linux-gnu,
#                                 the loader at /lib64)
#   /vmm/share                    its firmware: SeaBIOS and QEMU's option ROMs
#   /vmm/bin/rkvm-run             rkvm's own VMM (tools/rkvm-run, built by `make rkvm-run`
#                                 at $RKVM_RUN_BIN), with its libraries
#   /vmm/bin/rkvm-stat            the statistics viewer built beside it
#   /vmm/bzImage                  the guest kernel: the test kernel itself
#   /vmm/initrd                   the guest's initramfs: static busybox and vmm-guest-init.sh
#
#   vmm.sh KBUILD ROOT            adds the payload to the image tree ROOT

. "$(dirname "$0")/lib.sh"

kbuild=$1 out=$2
qemu=/usr/bin/qemu-system-x86_64
[ -x "$qemu" ] || die "no $qemu (setup.sh installs qemu-system-x86)"
rkvm_run=${RKVM_RUN_BIN:-$RKVM_TOP/build/rkvm-run/release/rkvm-run}
[ -x "$rkvm_run" ] || die "no $rkvm_run (make rkvm-run builds it)"
# rkvm-stat is built beside rkvm-run (the same crate).
rkvm_stat=$(dirname "$rkvm_run")/rkvm-stat
[ -x "$rkvm_stat" ] || die "no $rkvm_stat (make rkvm-run builds it)"
mkdir -p "$out"/vmm/{bin,share}
for prog in "$qemu" "$rkvm_run" "$rkvm_stat"; do
	cp "$prog" "$out/vmm/bin/"
	# Every library the dynamic loader resolves, and the loader itself.
	ldd "$prog" | awk '/=> \// {print $3} /^\t\/lib64\// {print $1}' | while read -r lib; do
		mkdir -p "$out$(dirname "$lib")"
		cp -L "$lib" "$out$lib"
	done
	[ -e "$out/lib64/ld-linux-x86-64.so.2" ] || die "the loader of $prog was not found"
done
# SeaBIOS, the option ROMs QEMU's pc machine loads with -kernel and the in-kernel APIC.
for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/linuxboot_dma.bin \
	/usr/share/qemu/linuxboot.bin /usr/share/qemu/kvmvapic.bin /usr/share/qemu/multiboot_dma.bin; do
	[ -f "$f" ] || die "missing QEMU firmware $f"
	cp -L "$f" "$out/vmm/share/"
done
cp "$kbuild/arch/x86/boot/bzImage" "$out/vmm/bzImage"
# The guest's initramfs.
g=$(mktemp -d)
trap 'rm -rf "$g"' EXIT
mkdir -p "$g"/{bin,dev,proc,sys}
cp /bin/busybox "$g/bin/busybox"
install -m 755 "$RKVM_TOP/tools/bench/vmm-guest-init.sh" "$g/init"
(cd "$g" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$out/vmm/initrd"
