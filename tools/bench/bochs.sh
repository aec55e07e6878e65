#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the lean Bochs 3.0 (Intel VMX with EPT, VPID, unrestricted guest) from Debian's
# source package, once per key, and lays out its ROMs. Bookworm's Bochs 2.7 cannot boot
# the 7.3 test kernel (BENCH.md §4). Prints the install prefix.
#
# bochs-patches/*.patch are applied in order, each fixing a place where Bochs does not
# behave as the hardware it models (see the comment at the top of each patch).

. "$(dirname "$0")/lib.sh"

CONFIGURE_FLAGS="--with-nogui --enable-x86-64 --enable-cpu-level=6 --enable-vmx=2 --enable-svm
 --enable-smp --enable-avx --enable-evex --enable-all-optimizations --enable-repeat-speedups
 --enable-pci --enable-cdrom --enable-acpi --disable-debugger --disable-plugins
 --disable-instrumentation --disable-docbook --disable-sb16 --disable-es1370 --disable-ne2k
 --disable-pnic --disable-e1000 --disable-usb --disable-voodoo --disable-gameport
 --disable-busmouse --disable-clgd54xx --disable-readline"
# Portable code only: this cache may move between machines.
BOCHS_CFLAGS="-O2 -pipe"

patches=$(dirname "$0")/bochs-patches
key=$(key_of "$BOCHS_VERSION" "$CONFIGURE_FLAGS" "$BOCHS_CFLAGS" "$(g++ --version | head -1)" \
	"$(cat "$patches"/*.patch)")
prefix=$RKVM_CACHE/bochs-$key
if [ ! -x "$prefix/bin/bochs" ]; then
	src=$RKVM_CACHE/debs/bochs-src
	orig=$src/bochs_$BOCHS_VERSION+dfsg.orig.tar.xz
	if [ ! -f "$orig" ]; then
		papt_update
		log "downloading the Bochs $BOCHS_VERSION source package"
		mkdir -p "$src"
		# The archive answers 404 for the .dsc but delivers both tarballs: judge by the
		# tarball, not the exit status.
		(cd "$src" && papt source --download-only "bochs/trixie" >/dev/null 2>&1) || true
		[ -f "$orig" ] || die "could not download $orig"
	fi
	build=$RKVM_CACHE/bochs-build-$key
	rm -rf "$build" && mkdir -p "$build"
	tar -C "$build" --strip-components=1 -xf "$orig"
	for p in "$patches"/*.patch; do
		patch -s -d "$build" -p1 <"$p" || die "Bochs patch $p does not apply"
	done
	log "building Bochs $BOCHS_VERSION (≈4 min on 2 cores; log: $build/build.log)"
	start=$(date +%s)
	# shellcheck disable=SC2086
	(cd "$build" && CFLAGS="$BOCHS_CFLAGS" CXXFLAGS="$BOCHS_CFLAGS" \
		./configure --prefix="$prefix" $CONFIGURE_FLAGS &&
		make -j"$(nproc)" && make install) >"$build/build.log" 2>&1 ||
		{ tail -30 "$build/build.log"; die "Bochs build failed"; }
	log "Bochs built in $(($(date +%s) - start)) s"
	rm -rf "$build"
fi

# ROMs: the system BIOS from Debian's bochsbios 3.0 (architecture all, plain ROM files),
# the VGA BIOS from bookworm's vgabios.
share=$prefix/share/bochs
if [ ! -f "$share/BIOS-bochs-latest" ] || [ ! -f "$share/VGABIOS-lgpl-latest" ]; then
	ver=$(papt_versions bochsbios | grep -E "^$BOCHS_VERSION" | sort -V -r | head -1)
	[ -n "$ver" ] || die "no bochsbios $BOCHS_VERSION in $NEWER_SUITES"
	fetch_deb bochsbios "$ver" "$RKVM_CACHE/bochsbios-$ver"
	mkdir -p "$share"
	cp "$RKVM_CACHE/bochsbios-$ver/usr/share/bochs/BIOS-bochs-latest" "$share/"
	cp /usr/share/vgabios/vgabios.bin "$share/VGABIOS-lgpl-latest"
fi
ln -sfn "$prefix" "$RKVM_CACHE/bochs"
echo "$prefix"
