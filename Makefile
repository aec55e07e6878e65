# SPDX-License-Identifier: GPL-2.0
#
# rkvm front door.
#   make            build rkvm.ko (against the cached test kernel unless KDIR= is given)
#   make demo       boot the emulated Intel machine, load rkvm, run a guest, show its stats
#   make check      everything tested; ends with "N passed, M failed"
#   make bench      speed and memory benchmarks
#   make fuzz       long fuzzing campaign (fuzz_ioctl, fuzz_guest) on kvm-intel, then rkvm
#   make conformance  the kernel's KVM selftests on kvm-intel and rkvm (slow: hours);
#                   writes Documentation/rkvm/conformance.rst
# See README.md and Documentation/rkvm/testing.rst.

RKVM_CACHE ?= $(HOME)/.cache/rkvm
export RKVM_CACHE
LLVM ?= -19
BENCH := $(CURDIR)/tools/bench
BUILD := $(CURDIR)/build
# The module build runs bindgen (as every Rust-enabled kernel build does): use the one
# `make setup` installed, if any, before whatever is on PATH. Looked up when the recipe
# runs: on a fresh machine it does not exist yet when this Makefile is read.
KMAKE = PATH="$$(for d in $(RKVM_CACHE)/bindgen-*/bin; do [ -d "$$d" ] && printf '%s:' "$$d"; \
	done)$$PATH" $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM)

# Without KDIR= the module builds against the cached test kernel, built on demand.
ifeq ($(origin KDIR),undefined)
KDIR := $(RKVM_CACHE)/kbuild
KDIR_DEP := kernel
endif

SELFTESTS := $(CURDIR)/selftests/rkvm
# The suite (in order) and the tests that also run on two CPUs (name@cpuN pins to CPU N).
# Shell tests (module lifecycle) come last: they unload and reload the hypervisor. After
# them, the tests whose bug would break the whole machine (host_memory: a guest writing
# the host's zero page; fpu_mxcsr: an XRSTOR fault in the VMX window).
TESTS ?= realmode_io exit_state sys_ioctls msr_lists cpuid_protocol protected_mode long_mode mmio \
	memslots pre_fault dirty_log dirty_ring triple_fault fail_entry signals cpuid_guest msrs msr_exits msr_filter platform_info \
	coalesced_mmio ioeventfd tsc_offset emulation_failure vcpu_state interrupts lapic apic_bus quirks hypercall steal_time kvmclock mce kvm_vfio xsaves one_reg tsc_sync tsc_khz irqchip pit \
	binary_stats stat_events halt_stats l1d_flush fault_race single_step apic_window huge_pages huge_pages_1g nx_huge_pages directed_yield guest_dr guest_debug ioctl_errors dirty_log_scale mmu_shrink page_idle memcg_account \
	wbinvd host_debugctl nmi_storm ioeventfd_limit state_validation exit_loop fuzz_guest \
	debugfs_stats debugfs_clear module_reload \
	suspend_resume vendor_insmod kvm_coexist \
	fpu_mxcsr host_memory
SMP_TESTS ?= realmode_io@cpu1 sys_ioctls@cpu1 smp_vms lapic cr4_stress fail_entry@cpu1 cpu_hotplug \
	suspend_resume@cpu0
# Real VMMs booting Linux on the hypervisor, rkvm's own rkvm-run and Debian's QEMU, in an
# emulated Intel machine with two CPUs; their image carries the VMMs, their libraries and
# QEMU's firmware (tools/bench/vmm.sh). VMM_TESTS= skips the leg.
VMM_TESTS ?= vmm_rkvm_run vmm_qemu
# On an Intel CPU with EPT but without unrestricted guest (real mode through vm86).
NOUG_TESTS ?= realmode_io exit_state l1d_flush
# On the debug kernel (KASAN, lockdep, kmemleak, UBSAN, Rust overflow checks), rkvm only;
# a splat in the kernel log fails the test that was running. DEBUG_TESTS= skips the leg.
# fuzz_ioctl runs only here: in 2 of 5 runs of the main suite under Bochs its fixed-seed
# campaign stopped the emulated machine (kvm-intel once, rkvm once), with Bochs looping
# on a guest's instruction fetch past its CS limit; `make fuzz` runs it on both.
DEBUG_TESTS ?= realmode_io protected_mode long_mode mmio memslots dirty_log dirty_ring dirty_log_scale \
	pre_fault msrs vcpu_state interrupts ioctl_errors signals coalesced_mmio ioeventfd \
	mmu_shrink page_idle memcg_account wbinvd nmi_storm ioeventfd_limit state_validation fuzz_ioctl \
	fuzz_guest fpu_mxcsr host_memory lapic exit_loop tsc_sync tsc_khz one_reg xsaves irqchip pit nx_huge_pages apic_window kmemleak_scan
ifeq ($(BROKEN_TEST),1)
TESTS += broken_on_purpose
endif

all: module

setup:
	@$(BENCH)/setup.sh

kernel: setup
	@$(BENCH)/kernel.sh >/dev/null

# The debug flavour of the test kernel, and rkvm.ko built against it (from a copy of the
# sources, so the two builds never share objects).
DEBUG_KDIR := $(RKVM_CACHE)/kbuild-debug
DEBUG_MOD := $(BUILD)/debug-module
debug-kernel: setup
	@$(BENCH)/kernel.sh debug >/dev/null

debug-module: debug-kernel
	@mkdir -p $(DEBUG_MOD)
	@rm -rf $(DEBUG_MOD)/rust $(DEBUG_MOD)/include
	@tar -C $(CURDIR) -cf - --exclude='*.o' --exclude='*.cmd' --exclude='*.ko' \
		--exclude='rust/generated' Kbuild include rust | tar -C $(DEBUG_MOD) -xf -
	$(subst $(KDIR) M=$(CURDIR),$(DEBUG_KDIR) M=$(DEBUG_MOD),$(KMAKE)) modules

bochs: setup
	@$(BENCH)/bochs.sh >/dev/null

# QEMU with the bench's SVM fixes (tools/bench/qemu.sh), for the AMD legs.
qemu: setup
	@$(BENCH)/qemu.sh >/dev/null

module: $(KDIR_DEP)
	$(KMAKE) modules

selftests: $(KDIR_DEP)
	@$(MAKE) -s -C $(SELFTESTS) KHDR=$(KDIR)/usr/include OUTPUT=$(BUILD)/selftests

# rkvm's own VMM (tools/rkvm-run, on the rust-vmm crates from crates.io at the versions
# of its Cargo.lock), for the VMM leg and the demo, and the statistics viewer rkvm-stat
# (the same crate's second binary).
RKVM_RUN_CARGO := cargo build --release --locked --quiet \
	--manifest-path $(CURDIR)/tools/rkvm-run/Cargo.toml --target-dir $(BUILD)/rkvm-run
export RKVM_RUN_BIN := $(BUILD)/rkvm-run/release/rkvm-run
rkvm-run:
	@$(RKVM_RUN_CARGO)

check: module nopanic selftests bochs qemu $(if $(DEBUG_TESTS),debug-module) $(if $(VMM_TESTS),rkvm-run)
	@$(BENCH)/check.sh $(KDIR) $(CURDIR)/rkvm.ko $(BUILD)/selftests $(BUILD)/check \
		"$(TESTS)" "$(SMP_TESTS)" "$(NOUG_TESTS)" "$(DEBUG_TESTS)" \
		"$(if $(DEBUG_TESTS),$(DEBUG_KDIR))" "$(DEBUG_MOD)/rkvm.ko" "$(VMM_TESTS)"

demo: module selftests bochs rkvm-run
	@$(BENCH)/demo.sh $(KDIR) $(CURDIR)/rkvm.ko $(BUILD)/selftests $(BUILD)/demo

bench: module selftests bochs qemu rkvm-run
	@$(BENCH)/bench.sh $(KDIR) $(CURDIR)/rkvm.ko $(BUILD)/selftests $(BUILD)/bench

# A long campaign of the two fuzzers under Bochs, kvm-intel then rkvm (one boot each),
# then a scan of the serial logs for host splats. FUZZ_SECONDS per fuzzer and hypervisor
# (default 600), FUZZ_SEED (default: the time), FUZZ_HVS, FUZZ_TESTS: see tools/bench/fuzz.sh.
# On the debug kernel, where KASAN, lockdep and the rest see what the fuzzers provoke.
fuzz: debug-module selftests bochs qemu
	@$(BENCH)/fuzz.sh $(DEBUG_KDIR) $(DEBUG_MOD)/rkvm.ko $(BUILD)/selftests $(BUILD)/fuzz

# The kernel's own KVM selftests (x86 and generic), on kvm-intel and then rkvm, under Bochs.
# Too slow for `make check`. Subset: CONFORMANCE_TESTS="cpuid_test ..." (then the
# scoreboard is not rewritten unless CONFORMANCE_DOC=1); see tools/conformance/conformance.sh.
CONFORMANCE_DOC ?= $(if $(CONFORMANCE_TESTS),0,1)
conformance: module selftests bochs qemu
	@CONFORMANCE_DOC=$(CONFORMANCE_DOC) $(CURDIR)/tools/conformance/conformance.sh $(KDIR) \
		$(CURDIR)/rkvm.ko $(BUILD)/selftests $(BUILD)/conformance \
		$(CURDIR)/Documentation/rkvm/conformance.rst

# The kernel's own Rust lints and formatting, on rkvm's sources.
clippy: $(KDIR_DEP)
	$(KMAKE) CLIPPY=1 modules
	cargo clippy --release --locked --quiet --manifest-path $(CURDIR)/tools/rkvm-run/Cargo.toml \
		--target-dir $(BUILD)/rkvm-run -- -D warnings

# rustfmt with the kernel's own configuration (follows every `mod` from the crate root).
rustfmt: $(KDIR_DEP)
	rustfmt --config-path $(KDIR)/source/.rustfmt.toml $(CURDIR)/rust/rkvm.rs
	cargo fmt --manifest-path $(CURDIR)/tools/rkvm-run/Cargo.toml

# No panics in kernel code: the module must not call into core::panicking (bounds checks,
# unwrap, overflow checks would).
nopanic: module
	@if objdump -dr $(CURDIR)/rust/rkvm.o | grep -q 'core9panicking'; then \
		echo "rkvm.o calls core::panicking:"; \
		objdump -dr $(CURDIR)/rust/rkvm.o | grep 'core9panicking' | sort | uniq -c; exit 1; \
	else echo "nopanic: rkvm.o has no call into core::panicking"; fi

rustfmtcheck: $(KDIR_DEP)
	rustfmt --check --config-path $(KDIR)/source/.rustfmt.toml $(CURDIR)/rust/rkvm.rs
	cargo fmt --check --manifest-path $(CURDIR)/tools/rkvm-run/Cargo.toml

clean:
	-$(KMAKE) clean 2>/dev/null
	rm -rf $(BUILD)

.PHONY: all setup kernel debug-kernel debug-module bochs qemu module selftests rkvm-run check demo bench fuzz conformance clippy rustfmt rustfmtcheck nopanic clean
