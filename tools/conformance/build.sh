#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the kernel's own KVM selftests for x86 (tools/testing/selftests/kvm of the test
# kernel's source: the x86 tests and the generic ones x86 builds), statically linked and
# stripped, against the test kernel's uapi headers (`make headers` output in KBUILD/usr/include;
# no headers_install of our own is needed: the selftests take KHDR_INCLUDES).
#
#   build.sh KBUILD
#
# Cached under $RKVM_CACHE/kvm-selftests-<key>, key = (kernel package version, the headers'
# kernel build, compiler, flags, this script). Prints the cache directory, which holds
#   bin/NAME       one stripped static executable per test (x86/cpuid_test -> cpuid_test),
#                  plus the helper binary and the shell test the upstream Makefile lists
#   tests.list     "NAME UPSTREAM_PATH" per test, in the upstream Makefile's order
#   build.log      the build's output

. "$(dirname "$0")/../bench/lib.sh"
. "$RKVM_CACHE/env.sh"

kbuild=$(cd "$1" && pwd -P)
src=$KSRC/tools/testing/selftests/kvm
[ -f "$src/Makefile.kvm" ] || die "no KVM selftests in $src"
[ -f "$kbuild/usr/include/linux/kvm.h" ] || die "no uapi headers in $kbuild/usr/include (make headers)"

CC=${CONFORMANCE_CC:-gcc}
# -static: the test image has no libc. The selftests link -luuid (libvfio): uuid-dev has
# the static library.
MAKEFLAGS_SELFTESTS=(ARCH=x86 CC="$CC" LDFLAGS=-static
	KHDR_INCLUDES="-isystem $kbuild/usr/include")
if [ ! -f /usr/lib/x86_64-linux-gnu/libuuid.a ]; then
	log "installing uuid-dev (static libuuid for the KVM selftests)"
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-t bookworm uuid-dev >/dev/null || die "apt-get install uuid-dev failed"
fi

key=$(key_of "$KERNEL_DEB_VERSION" "${kbuild##*/}" "$($CC --version | head -1)" \
	"${MAKEFLAGS_SELFTESTS[*]}" "$(cat "$0")")
out=$RKVM_CACHE/kvm-selftests-$key

if [ ! -f "$out/.done" ]; then
	rm -rf "$out" && mkdir -p "$out/bin"
	obj=$out/obj
	jobs=$(nproc)
	[ "$jobs" -gt 2 ] && jobs=2
	log "building the KVM selftests of $KERNEL_DEB_VERSION in $out (≈1 min)"
	start=$(date +%s)
	make -C "$src" -j"$jobs" OUTPUT="$obj" "${MAKEFLAGS_SELFTESTS[@]}" >"$out/build.log" 2>&1 ||
		{ tail -30 "$out/build.log"; die "the KVM selftests did not build (log: $out/build.log)"; }
	# What the upstream Makefile calls its tests: TEST_GEN_PROGS (compiled), TEST_PROGS
	# (scripts) and TEST_GEN_PROGS_EXTENDED (helpers the scripts run, not tests).
	lists=$(printf '%s\n' 'conformance-print-tests:' \
		'	@echo "GEN $(patsubst $(OUTPUT)/%,%,$(TEST_GEN_PROGS))"' \
		'	@echo "PROGS $(TEST_PROGS)"' \
		'	@echo "EXT $(patsubst $(OUTPUT)/%,%,$(TEST_GEN_PROGS_EXTENDED))"' |
		make -s -C "$src" OUTPUT="$obj" "${MAKEFLAGS_SELFTESTS[@]}" -f Makefile -f - \
			conformance-print-tests)
	: >"$out/tests.list.new"
	for p in $(sed -n 's/^GEN //p' <<<"$lists") $(sed -n 's/^PROGS //p' <<<"$lists"); do
		name=${p##*/}
		grep -q "^$name " "$out/tests.list.new" && die "two tests named $name"
		echo "$name $p" >>"$out/tests.list.new"
	done
	for p in $(sed -n 's/^GEN //p;s/^EXT //p' <<<"$lists"); do
		f=$obj/$p
		[ -x "$f" ] || die "$p was not built"
		file -L "$f" | grep -q 'statically linked' || die "$p is not statically linked"
		strip -o "$out/bin/${p##*/}" "$f"
	done
	for p in $(sed -n 's/^PROGS //p' <<<"$lists"); do
		install -m 755 "$src/$p" "$out/bin/${p##*/}"
	done
	rm -rf "$obj"
	mv "$out/tests.list.new" "$out/tests.list"
	log "built $(wc -l <"$out/tests.list") KVM selftests in $(($(date +%s) - start)) s," \
		"$(du -sm "$out/bin" | cut -f1) MB stripped"
	touch "$out/.done"
fi
echo "$out"
