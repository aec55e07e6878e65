#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs or fetches everything the bench needs. Idempotent and quiet when nothing is
# missing. Bookworm packages are installed from bookworm only; the kernel source and
# rust-src come from trixie-backports through a private apt state and are only ever
# downloaded and unpacked (see BENCH.md's apt warning).
#
# Writes $RKVM_CACHE/env.sh with the resolved paths for the other scripts.

. "$(dirname "$0")/lib.sh"

BOOKWORM_PKGS="clang-19 lld-19 llvm-19 libclang-19-dev flex bison bc libelf-dev libssl-dev
cpio patch xz-utils zstd lz4 busybox-static isolinux syslinux-common xorriso vgabios
qemu-system-x86 dpkg-dev make gcc libc6-dev python3 ca-certificates"
# Build dependencies of the lean Bochs (a C++ compiler is all it needs).
BOOKWORM_PKGS="$BOOKWORM_PKGS g++"
# Build dependencies of the patched QEMU (qemu.sh); its ROMs come from qemu-system-x86.
BOOKWORM_PKGS="$BOOKWORM_PKGS meson ninja-build libglib2.0-dev libpixman-1-dev libfdt-dev"

install_bookworm_pkgs() {
	local missing=() p
	for p in $BOOKWORM_PKGS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing from bookworm: ${missing[*]}"
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# -t bookworm keeps every dependency on the base release even if some other
	# suite was configured on this machine at default priority.
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-t bookworm "${missing[@]}" >/dev/null 2>&1 && return 0
	# A -dev package can pin a library at the point release's version while the machine
	# already runs bookworm-security's (libpcre2-dev under libglib2.0-dev). Then take the
	# security suite too, after checking that every package would come from Debian 12.
	local plan
	plan=$(apt-get install -s --no-install-recommends "${missing[@]}" 2>&1 | grep '^Inst ') ||
		die "apt cannot install: ${missing[*]}"
	if echo "$plan" | grep -v -E '\((\S+) Debian(-Security)?:12[^ ]*/' | grep -q .; then
		die "installing ${missing[*]} would take packages from outside Debian 12:
$(echo "$plan" | grep -v -E '\((\S+) Debian(-Security)?:12[^ ]*/')"
	fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

# Newest version of PKG in the newer suites whose version starts with PREFIX.
pick_version() { # pkg prefix
	papt_versions "$1" | grep -E "^$(printf '%s' "$2" | sed 's/[.+]/\\&/g')" | sort -V -r | head -1
}

resolve_versions() {
	local rustc_ver resolved=$RKVM_CACHE/versions.env
	rustc_ver=$(rustc --version | awk '{print $2}')
	# Reuse yesterday's answer while it is fresh and its inputs are unpacked.
	if [ -f "$resolved" ] && [ -n "$(find "$resolved" -mmin -1440)" ]; then
		# shellcheck disable=SC1090
		. "$resolved"
		if [ "${RUSTC_VERSION:-}" = "$rustc_ver" ] &&
			[ -f "$RKVM_CACHE/linux-$KERNEL_DEB_VERSION/.unpacked" ] &&
			[ -f "$RKVM_CACHE/rust-src-$RUST_SRC_DEB_VERSION/.unpacked" ]; then
			return 0
		fi
	fi
	KERNEL_DEB_VERSION=$(pick_version "$KERNEL_PKG" "")
	[ -n "$KERNEL_DEB_VERSION" ] || die "no $KERNEL_PKG in $NEWER_SUITES"
	RUST_SRC_DEB_VERSION=$(pick_version rust-src "$rustc_ver+")
	[ -n "$RUST_SRC_DEB_VERSION" ] ||
		die "Debian has no rust-src $rustc_ver (rustc --version) in $NEWER_SUITES; found: $(papt_versions rust-src | tr '\n' ' ')"
	RUSTC_VERSION=$rustc_ver
	cat >"$resolved" <<-EOF
		RUSTC_VERSION=$RUSTC_VERSION
		KERNEL_DEB_VERSION=$KERNEL_DEB_VERSION
		RUST_SRC_DEB_VERSION=$RUST_SRC_DEB_VERSION
	EOF
}

fetch_kernel_source() {
	local dir=$RKVM_CACHE/linux-$KERNEL_DEB_VERSION
	if [ ! -f "$dir/.unpacked" ]; then
		fetch_deb "$KERNEL_PKG" "$KERNEL_DEB_VERSION" "$dir.deb"
		log "unpacking the $KERNEL_PKG $KERNEL_DEB_VERSION tree"
		rm -rf "$dir" && mkdir -p "$dir"
		tar -C "$dir" --strip-components=1 -xf "$dir.deb"/usr/src/$KERNEL_PKG.tar.xz
		rm -rf "$dir.deb"
		touch "$dir/.unpacked"
	fi
	KSRC=$dir
}

fetch_rust_src() {
	local dir=$RKVM_CACHE/rust-src-$RUST_SRC_DEB_VERSION
	fetch_deb rust-src "$RUST_SRC_DEB_VERSION" "$dir"
	RUST_LIB_SRC=$(ls -d "$dir"/usr/src/rustc-*/library | head -1)
	[ -d "$RUST_LIB_SRC/core" ] || die "rust-src $RUST_SRC_DEB_VERSION has no library/core"
}

install_bindgen() {
	local root=$RKVM_CACHE/bindgen-$BINDGEN_VERSION
	if ! "$root/bin/bindgen" --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
		log "building bindgen-cli $BINDGEN_VERSION (about a minute)"
		cargo install -q bindgen-cli --version "$BINDGEN_VERSION" --locked --root "$root" ||
			die "cargo install bindgen-cli failed"
	fi
}

install_bookworm_pkgs
resolve_versions
fetch_kernel_source
fetch_rust_src
install_bindgen
cat >"$RKVM_CACHE/env.sh.new" <<EOF
RUSTC_VERSION=$RUSTC_VERSION
KERNEL_DEB_VERSION=$KERNEL_DEB_VERSION
RUST_SRC_DEB_VERSION=$RUST_SRC_DEB_VERSION
KSRC=$KSRC
RUST_LIB_SRC=$RUST_LIB_SRC
BINDGEN=$RKVM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen
EOF
mv "$RKVM_CACHE/env.sh.new" "$RKVM_CACHE/env.sh"
