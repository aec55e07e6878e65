#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Packs the test initramfs: static busybox, the runner /init, the hypervisor modules
# (reference kvm + rkvm), the tests (static binaries and shell scripts, in /tests/bin) and
# the shell library of the runner and the shell tests (TESTBIN_DIR/lib/*.sh, in /tests/lib).
# With a VMM test (vmm_*) in the list it also carries tools/bench/vmm.sh's payload.
#   image.sh OUT.cpio.lz4 KBUILD RKVM_KO TESTBIN_DIR "TEST LIST"

. "$(dirname "$0")/lib.sh"

out=$1 kbuild=$2 rkvm_ko=$3 bindir=$4 tests=$5
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,tests/bin,tests/lib}
cp /bin/busybox "$root/bin/busybox"
file -L "$root/bin/busybox" 2>/dev/null | grep -q 'statically linked' ||
	ldd "$root/bin/busybox" 2>&1 | grep -q 'not a dynamic' ||
	die "/bin/busybox is not static (install busybox-static)"
install -m 755 "$RKVM_TOP/tools/bench/init.sh" "$root/init"
# A root user: programs that look names up (busybox whoami in the KVM selftests'
# nx_huge_pages_test.sh, used by make conformance) fail without /etc/passwd.
mkdir -p "$root/etc"
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
# The reference hypervisor and what it depends on (irqbypass is a module when KVM is).
for m in arch/x86/kvm/kvm arch/x86/kvm/kvm-intel arch/x86/kvm/kvm-amd virt/lib/irqbypass; do
	[ -f "$kbuild/$m.ko" ] && cp "$kbuild/$m.ko" "$root/lib/modules/"
done
[ -f "$root/lib/modules/kvm.ko" ] || die "no kvm.ko in $kbuild"
[ -f "$rkvm_ko" ] && cp "$rkvm_ko" "$root/lib/modules/rkvm.ko"
for f in "$bindir"/*; do
	[ -x "$f" ] && [ -f "$f" ] || continue
	if [ "$(head -c 2 "$f")" = "#!" ]; then
		install -m 755 "$f" "$root/tests/bin/${f##*/}"
	else
		strip -o "$root/tests/bin/${f##*/}" "$f"
	fi
done
# /init sources /tests/lib/hv.sh: without it the image cannot even load a hypervisor.
[ -f "$bindir/lib/hv.sh" ] || die "no $bindir/lib/hv.sh (build the selftests first)"
install -m 644 "$bindir"/lib/*.sh "$root/tests/lib/"
echo "$tests" >"$root/tests/list"
# The VMM tests' payload: QEMU, its libraries and firmware, a guest kernel and initramfs.
case " $tests " in
*" vmm_"*) "$RKVM_TOP/tools/bench/vmm.sh" "$kbuild" "$root" ;;
esac
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | lz4 -l -q -9 >"$out.tmp"
mv "$out.tmp" "$out"
