// SPDX-License-Identifier: GPL-2.0

//! Enabling virtualization on the CPUs (the seed's `hardware_enable_nolock`,
//! `kvm_usage_count`, `kvm_starting_cpu`/`kvm_dying_cpu`, reboot and syscore callbacks).
//!
//! Virtualization is enabled on every online CPU while at least one VM exists. In rkvm,
//! "enabled" means the CPU was checked and proved able to enter VMX operation (a VMXON/VMXOFF
//! round trip): VMX itself is only on inside a VMX window (see `vmx/window.rs`).

use crate::sys::cpu;
use crate::sys::ratelimit::pr_info_ratelimited;
use crate::x86::X86Ops;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;

/// The usage count and what goes with it.
#[pin_data]
pub(crate) struct Hardware {
    /// Number of VMs (the seed's `kvm_usage_count`), under the seed's `kvm_lock`.
    #[pin]
    usage: Mutex<u32>,
    /// CPUs that failed to enable during the last enable-all.
    failed: AtomicU32,
    /// Set by the reboot notifier: no CPU may be enabled again.
    rebooting: AtomicBool,
    /// A copy of the usage count for contexts that cannot take the mutex (syscore).
    in_use: AtomicBool,
}

impl Hardware {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            usage <- new_mutex!(0),
            failed: AtomicU32::new(0),
            rebooting: AtomicBool::new(false),
            in_use: AtomicBool::new(false),
        })
    }

    /// `hardware_enable_nolock()` on the CPU this runs on.
    fn enable_this_cpu(&self, ops: &dyn X86Ops) {
        if self.rebooting.load(Ordering::Acquire) || ops.hardware_enable().is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            pr_info_ratelimited!("enabling virtualization on CPU{} failed\n", cpu::this_cpu());
        }
    }

    /// A VM is being created: enables every online CPU on the first one. `EBUSY` when a
    /// CPU cannot (another hypervisor holds VMX there, or the machine is rebooting).
    pub(crate) fn get(&self, ops: &dyn X86Ops) -> Result {
        let _cpus = cpu::CpusReadGuard::new();
        let mut usage = self.usage.lock();
        if *usage == 0 {
            self.failed.store(0, Ordering::Relaxed);
            cpu::run_on_each(|| self.enable_this_cpu(ops));
            if self.failed.load(Ordering::Relaxed) != 0 {
                cpu::run_on_each(|| ops.hardware_disable());
                return Err(EBUSY);
            }
        }
        *usage = usage.checked_add(1).ok_or(EOVERFLOW)?;
        self.in_use.store(true, Ordering::Release);
        Ok(())
    }

    /// A VM is gone: disables every CPU with the last one.
    pub(crate) fn put(&self, ops: &dyn X86Ops) {
        let _cpus = cpu::CpusReadGuard::new();
        let mut usage = self.usage.lock();
        *usage = usage.saturating_sub(1);
        if *usage == 0 {
            self.in_use.store(false, Ordering::Release);
            cpu::run_on_each(|| ops.hardware_disable());
        }
    }

    /// CPU hotplug: `cpu` came online (runs on it). Checks it and enables it if VMs exist.
    pub(crate) fn cpu_online(&self, ops: &dyn X86Ops) -> Result {
        ops.check_processor_compat()?;
        let usage = self.usage.lock();
        if *usage > 0 && !self.rebooting.load(Ordering::Acquire) {
            ops.hardware_enable()?;
        }
        drop(usage);
        Ok(())
    }

    /// CPU hotplug: the CPU this runs on is going offline.
    pub(crate) fn cpu_offline(&self, ops: &dyn X86Ops) {
        let usage = self.usage.lock();
        if *usage > 0 {
            ops.hardware_disable();
        }
        drop(usage);
    }

    /// The reboot notifier: disable everywhere and never enable again.
    pub(crate) fn reboot(&self, ops: &dyn X86Ops) {
        self.rebooting.store(true, Ordering::Release);
        // Each CPU handles this IPI only outside a VMX window, so when this returns no
        // CPU is in VMX operation, and none can enter it again.
        cpu::run_on_each(|| ops.hardware_disable());
    }

    /// syscore suspend: runs on the last CPU, interrupts off, others already offline.
    pub(crate) fn suspend(&self, ops: &dyn X86Ops) {
        // The mutex cannot be taken here (interrupts off); the count is only read, and
        // nothing else runs on the machine at this point.
        ops.hardware_disable();
    }

    /// syscore resume: the mirror of `suspend`.
    pub(crate) fn resume(&self, ops: &dyn X86Ops) {
        if self.in_use.load(Ordering::Acquire)
            && !self.rebooting.load(Ordering::Acquire)
            && ops.hardware_enable().is_err()
        {
            pr_err!("could not re-enable virtualization after resume\n");
        }
    }
}
