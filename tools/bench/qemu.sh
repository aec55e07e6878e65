#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds QEMU (x86_64 system emulator, TCG only) from bookworm's source package (the newest
# 7.2 bookworm has) with Debian's patches and the bench's own, once per key. Prints the install prefix; run.sh
# starts qemu-system-x86_64 from there. The ROMs are the system's (qemu-system-x86's
# /usr/share/qemu and seabios), as for Debian's own build.
#
# qemu-patches/*.patch are applied in order after Debian's, each fixing a place where
# QEMU's SVM does not behave as an AMD CPU (see the comment at the top of each patch).

. "$(dirname "$0")/lib.sh"

CONFIGURE_FLAGS="--target-list=x86_64-softmmu --without-default-features --enable-tcg
 --disable-docs --disable-werror --disable-debug-info --firmwarepath=/usr/share/qemu:/usr/share/seabios"

patches=$(dirname "$0")/qemu-patches
papt_update
QEMU_DEB_VERSION=$(papt_cache showsrc qemu 2>/dev/null | sed -n 's/^Version: //p' |
	grep -F "$QEMU_DEB_SERIES" | sort -V -r | head -1)
[ -n "$QEMU_DEB_VERSION" ] || die "bookworm has no qemu source in the series $QEMU_DEB_SERIES"
key=$(key_of "$QEMU_DEB_VERSION" "$CONFIGURE_FLAGS" pkgversion "$(gcc --version | head -1)" \
	"$(cat "$patches"/*.patch)")
prefix=$RKVM_CACHE/qemu-$key
if [ ! -x "$prefix/bin/qemu-system-x86_64" ]; then
	upstream=${QEMU_DEB_VERSION#*:}
	upstream=${upstream%-*}
	src=$RKVM_CACHE/debs/qemu-src-$upstream
	deb=$src/qemu_${QEMU_DEB_VERSION#*:}.debian.tar.xz
	orig=$src/qemu_$upstream.orig.tar.xz
	if [ ! -f "$orig" ] || [ ! -f "$deb" ]; then
		log "downloading the QEMU $QEMU_DEB_VERSION source package"
		mkdir -p "$src"
		(cd "$src" && papt source --download-only "qemu=$QEMU_DEB_VERSION" >/dev/null 2>&1) || true
		[ -f "$orig" ] && [ -f "$deb" ] || die "could not download $orig and $deb"
	fi
	build=$RKVM_CACHE/qemu-build-$key
	rm -rf "$build" && mkdir -p "$build"
	tar -C "$build" --strip-components=1 -xf "$orig"
	tar -C "$build" -xf "$deb"
	# Debian's patches (quilt series), then the bench's.
	grep -v '^\s*#' "$build/debian/patches/series" | sed '/^\s*$/d' | while read -r p _; do
		patch -s -d "$build" -p1 <"$build/debian/patches/$p" || die "Debian patch $p does not apply"
	done
	for p in "$patches"/*.patch; do
		patch -s -d "$build" -p1 <"$p" || die "QEMU patch $p does not apply"
	done
	log "building QEMU $QEMU_DEB_VERSION (log: $build/build.log)"
	start=$(date +%s)
	# shellcheck disable=SC2086
	(cd "$build" && mkdir -p b && cd b &&
		../configure --prefix="$prefix" --with-pkgversion="Debian $QEMU_DEB_VERSION, rkvm patches" \
			$CONFIGURE_FLAGS &&
		make -j"$(nproc)" qemu-system-x86_64 && mkdir -p "$prefix/bin" &&
		cp qemu-system-x86_64 "$prefix/bin/") >"$build/build.log" 2>&1 ||
		{ tail -30 "$build/build.log"; die "QEMU build failed"; }
	log "QEMU built in $(($(date +%s) - start)) s"
	rm -rf "$build"
fi
ln -sfn "$prefix" "$RKVM_CACHE/qemu"
echo "$prefix"
