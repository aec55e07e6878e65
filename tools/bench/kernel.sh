#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the test kernel (bzImage, the reference kvm modules, uapi headers) once per key:
# (kernel package version, config fragments, rustc, bindgen, clang). Prints the build
# directory, which is what the module build uses as KDIR.
#
#   kernel.sh          the test kernel: kernel.config; linked as $RKVM_CACHE/kbuild
#   kernel.sh debug    the debug flavour: kernel.config + kernel-debug.config (KASAN,
#                      lockdep, kmemleak, ...); linked as $RKVM_CACHE/kbuild-debug
# RKVM_KERNEL_NOLINK=1 builds without moving the link (a build in the background must
# not switch the kernel under a run that is using the link).

. "$(dirname "$0")/lib.sh"
. "$RKVM_CACHE/env.sh"

flavour=${1:-}
frag=$RKVM_TOP/tools/bench/kernel.config
link=$RKVM_CACHE/kbuild
if [ "$flavour" = debug ]; then
	frag=$(mktemp)
	trap 'rm -f "$frag"' EXIT
	cat "$RKVM_TOP/tools/bench/kernel.config" "$RKVM_TOP/tools/bench/kernel-debug.config" >"$frag"
	link=$RKVM_CACHE/kbuild-debug
elif [ -n "$flavour" ]; then
	die "unknown kernel flavour: $flavour"
fi
key=$(key_of "$KERNEL_DEB_VERSION" "$(cat "$frag")" "$(rustc --version)" \
	"$("$BINDGEN" --version)" "$(clang$LLVM_SUFFIX --version | head -1)")
out=$RKVM_CACHE/kbuild-$key

if [ ! -f "$out/.done" ]; then
	kernel_env
	mk() { make -C "$KSRC" O="$out" LLVM="$LLVM_SUFFIX" "$@"; }
	rm -rf "$out" && mkdir -p "$out"
	log "configuring the test kernel in $out"
	mk -s KCONFIG_ALLCONFIG="$frag" allnoconfig >"$out/build.log" 2>&1 ||
		{ tail -20 "$out/build.log"; die "kernel configuration failed"; }
	# allnoconfig silently drops what it cannot satisfy: insist on what we asked for.
	missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$frag" | while IFS= read -r l; do
		grep -qxF "$l" "$out/.config" || echo "$l"; done)
	[ -z "$missing" ] || die "the kernel config lost: $(echo $missing)"
	grep -qx CONFIG_RUST=y "$out/.config" || die "CONFIG_RUST is not set (make rustavailable)"
	log "building the ${flavour:+$flavour }test kernel with $(nproc) jobs (≈10 min cold; log: $out/build.log)"
	start=$(date +%s)
	mk -j"$(nproc)" bzImage modules >>"$out/build.log" 2>&1 &
	pid=$!
	while kill -0 $pid 2>/dev/null; do
		sleep 60
		kill -0 $pid 2>/dev/null &&
			log "  kernel build: $(($(date +%s) - start)) s, $(find "$out" -name '*.o' | wc -l) objects"
	done
	wait $pid || { tail -30 "$out/build.log"; die "kernel build failed"; }
	mk -s headers >>"$out/build.log" 2>&1 || die "make headers failed"
	log "test kernel built in $(($(date +%s) - start)) s"
	touch "$out/.done"
fi
[ -n "${RKVM_KERNEL_NOLINK:-}" ] || ln -sfn "$out" "$link"
echo "$out"
