# SPDX-License-Identifier: GPL-2.0
# Shared settings for the rkvm bench scripts. Sourced, never run.

set -euo pipefail

RKVM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RKVM_CACHE=${RKVM_CACHE:-$HOME/.cache/rkvm}
mkdir -p "$RKVM_CACHE"
RKVM_CACHE=$(cd "$RKVM_CACHE" && pwd)

# Pinned inputs. Bump them here; every cache entry is keyed by what it was built from.
KERNEL_PKG=linux-source-7.3
BINDGEN_VERSION=0.71.1
BOCHS_VERSION=3.0
LLVM_SUFFIX=-19
# Suites fetched through the private apt state below (never installed into the system).
NEWER_SUITES="trixie trixie-backports"
# QEMU is built from bookworm's own source package (qemu.sh): its newest version in this
# series (bookworm's point releases and security updates only add +deb12uN).
QEMU_DEB_SERIES=1:7.2+dfsg-7

log() { printf '[rkvm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[rkvm] error: %s\n' "$*" >&2; exit 1; }

# Short, stable hash of its arguments (strings or files' contents).
key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-12; }

# A private apt configuration for the newer suites: its own sources, lists and cache
# under $RKVM_CACHE/apt. The system's sources, preferences and packages stay untouched;
# these suites can only ever be used to *download* packages.
PAPT_DIR=$RKVM_CACHE/apt
papt() { papt_cmd apt-get "$@"; }
papt_cache() { papt_cmd apt-cache "$@"; }
papt_cmd() {
	local cmd=$1
	shift
	"$cmd" -q -o Dir::Etc::SourceList="$PAPT_DIR/sources.list" -o Dir::Etc::SourceList="$PAPT_DIR/sources.list" \
		-o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$PAPT_DIR/lists" \
		-o Dir::Cache="$PAPT_DIR/cache" \
		-o Dir::Etc::Preferences=/dev/null \
		-o Dir::Etc::PreferencesParts=/dev/null \
		-o APT::Default-Release=trixie-backports \
		-o APT::Sandbox::User=root \
		-o Debug::NoLocking=1 "$@"
}

papt_update() {
	mkdir -p "$PAPT_DIR/lists/partial" "$PAPT_DIR/cache/archives/partial"
	local want
	want=$(for s in $NEWER_SUITES; do
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $s main"
		echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $s main"
	done
	# Sources only: the QEMU the bench patches and builds (qemu.sh).
	echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main")
	if [ "$want" != "$(cat "$PAPT_DIR/sources.list" 2>/dev/null)" ] ||
		[ -z "$(find "$PAPT_DIR/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
		printf '%s\n' "$want" >"$PAPT_DIR/sources.list"
		log "updating private package lists for: $NEWER_SUITES"
		papt update -qq >/dev/null || die "apt update of $NEWER_SUITES failed"
	fi
}

# papt_version PKG -> the candidate version in the newer suites (empty if none)
papt_versions() { papt_update; papt_cache show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }

# Fetch one .deb (exact version) into $RKVM_CACHE/debs/PKG_VERSION/ and unpack it into
# DEST, once.
fetch_deb() { # pkg version dest
	local pkg=$1 ver=$2 dest=$3 debdir=$RKVM_CACHE/debs/${1}_${2}
	[ -f "$dest/.unpacked" ] && return 0
	if ! ls "$debdir"/*.deb >/dev/null 2>&1; then
		papt_update
		log "downloading $pkg $ver"
		mkdir -p "$debdir"
		(cd "$debdir" && papt download "$pkg=$ver" >/dev/null) || die "download of $pkg $ver failed"
	fi
	rm -rf "$dest" && mkdir -p "$dest"
	dpkg -x "$debdir"/*.deb "$dest"
	touch "$dest/.unpacked"
}

# Everything a kernel build needs on PATH and in the environment.
# (Needs $RKVM_CACHE/env.sh, written by setup.sh, to be sourced first.)
kernel_env() {
	export PATH="$(dirname "$BINDGEN"):$PATH"
	export RUST_LIB_SRC
}
