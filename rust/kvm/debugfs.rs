// SPDX-License-Identifier: GPL-2.0

//! The stats in debugfs, as KVM lays them out: /sys/kernel/debug/rkvm/ holds one file per
//! VM and vCPU stat summed over every VM (the seed's `kvm_init_debug`), and a directory
//! `<pid>-<fd>` per VM holds one file per stat of that VM (vCPU stats summed over its
//! vCPUs). Each file reads as a decimal number; writing 0 to a counter's file clears it
//! (in every VM, or in every vCPU, for the files that sum them), any other value fails
//! with `EINVAL`, as KVM's `kvm_stat_data_clear` does. Current values (`pages_4k`,
//! `blocking`, ...) are read-only, as in KVM. A histogram's file shows and clears its
//! first bucket, as KVM's does (the whole histogram is in the binary stats).

use super::stats::{Kind, Ty, VCPU_STATS, VM_STATS};
use super::vcpu::Vcpu;
use super::vm::Vm;
use kernel::debugfs::{Dir, File, Scope, ScopedDir};
use kernel::prelude::*;
use kernel::uaccess::UserSliceReader;

/// What one vCPU's file value for vCPU stat `i` is.
fn vcpu_value(v: &Vcpu, i: usize) -> u64 {
    match v.halt_hists.of(i) {
        Some(h) => h.get(0),
        None => v.stats.get(i),
    }
}

fn vcpu_clear(v: &Vcpu, i: usize) {
    match v.halt_hists.of(i) {
        Some(h) => h.clear(0),
        None => v.stats.set(i, 0),
    }
}

/// The value of one VM's file for a stat.
fn vm_value(vm: &Vm, kind: Kind, i: usize) -> u64 {
    match kind {
        Kind::Vm => vm.stats.get(i),
        Kind::Vcpu => {
            let mut total = 0u64;
            vm.for_each_vcpu(|v| total = total.wrapping_add(vcpu_value(v, i)));
            total
        }
    }
}

fn vm_clear(vm: &Vm, kind: Kind, i: usize) {
    match kind {
        Kind::Vm => vm.stats.set(i, 0),
        Kind::Vcpu => vm.for_each_vcpu(|v| vcpu_clear(v, i)),
    }
}

/// Whether a stat's file takes writes: counters do, current values do not (KVM's
/// `kvm_stats_debugfs_mode`).
fn writable(ty: Ty) -> bool {
    !matches!(ty, Ty::Instant | Ty::Flag)
}

/// The number `kstrtoull(s, 0)` reads: an optional `+`, then hexadecimal after `0x`, octal
/// after `0`, decimal otherwise, and at most a newline after the digits; the text ends at
/// a NUL. `ERANGE` past `u64::MAX`, `EINVAL` for anything else it would refuse.
fn kstrtoull(s: &[u8]) -> Result<u64> {
    let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (base, digits) = match s {
        [b'0', x, d, ..] if x | 0x20 == b'x' && d.is_ascii_hexdigit() => {
            (16u64, s.get(2..).unwrap_or(&[]))
        }
        [b'0', ..] => (8, s),
        _ => (10, s),
    };
    let (mut v, mut n, mut overflow) = (0u64, 0usize, false);
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        if u64::from(d) >= base {
            break;
        }
        match v
            .checked_mul(base)
            .and_then(|x| x.checked_add(u64::from(d)))
        {
            Some(x) => v = x,
            None => overflow = true,
        }
        n += 1;
    }
    if overflow {
        return Err(ERANGE);
    }
    let rest = digits.get(n..).unwrap_or(&[]);
    let rest = rest.strip_prefix(b"\n").unwrap_or(rest);
    if n == 0 || !rest.is_empty() {
        return Err(EINVAL);
    }
    Ok(v)
}

/// A write to a stat file: `Ok` if it says 0 (KVM's `simple_attr_write` reads at most 23
/// bytes of it).
fn written_zero(r: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 23];
    let n = r.len().min(buf.len());
    let text = buf.get_mut(..n).ok_or(EINVAL)?;
    r.read_slice(text)?;
    match kstrtoull(text)? {
        0 => Ok(()),
        _ => Err(EINVAL),
    }
}

/// What a global stat file reads: one stat summed over every VM.
pub(crate) struct StatFile {
    kind: Kind,
    index: usize,
}

fn show(s: &StatFile, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    let mut total = 0u64;
    if let Some(k) = super::kvm() {
        k.for_each_vm(|vm| total = total.wrapping_add(vm_value(vm, s.kind, s.index)));
    }
    writeln!(f, "{total}")
}

fn clear(s: &StatFile, r: &mut UserSliceReader) -> Result {
    written_zero(r)?;
    if let Some(k) = super::kvm() {
        k.for_each_vm(|vm| vm_clear(vm, s.kind, s.index));
    }
    Ok(())
}

/// All stats, VM ones first, with their table and index.
fn all_stats() -> impl Iterator<Item = (Kind, usize, &'static super::stats::Stat)> {
    let vm = VM_STATS.iter().enumerate().map(|(i, s)| (Kind::Vm, i, s));
    let vcpu = VCPU_STATS
        .iter()
        .enumerate()
        .map(|(i, s)| (Kind::Vcpu, i, s));
    Iterator::chain(vm, vcpu)
}

/// The debugfs directory and its files.
pub(crate) struct Debugfs {
    _files: KVec<Pin<KBox<File<StatFile>>>>,
    dir: Dir,
}

impl Debugfs {
    /// `kvm_init_debug()`: /sys/kernel/debug/rkvm/ with one file per stat.
    pub(crate) fn init() -> Result<Self> {
        let dir = Dir::new(c"rkvm");
        let mut files = KVec::new();
        for (kind, index, stat) in all_stats() {
            let data = StatFile { kind, index };
            let file = if writable(stat.ty) {
                KBox::pin_init(
                    dir.read_write_callback_file(stat.name, data, &show, &clear),
                    GFP_KERNEL_ACCOUNT,
                )?
            } else {
                KBox::pin_init(
                    dir.read_callback_file(stat.name, data, &show),
                    GFP_KERNEL_ACCOUNT,
                )?
            };
            files.push(file, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self { _files: files, dir })
    }

    /// The directory, for per-VM subdirectories.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }
}

/// What a per-VM stat file reads: one stat of one VM.
pub(crate) struct VmStat {
    vm: *const Vm,
    kind: Kind,
    index: usize,
}

// SAFETY: `vm` is only dereferenced while the file exists, and the VM removes its files
// (which waits for readers and writers) before it is freed.
unsafe impl Send for VmStat {}
// SAFETY: As above; the VM's stats are atomics and its vCPU list is behind its mutex.
unsafe impl Sync for VmStat {}

impl VmStat {
    fn vm(&self) -> &Vm {
        // SAFETY: See `VmStat`: the VM outlives its debugfs files.
        unsafe { &*self.vm }
    }
}

fn show_vm(s: &VmStat, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    writeln!(f, "{}", vm_value(s.vm(), s.kind, s.index))
}

fn clear_vm(s: &VmStat, r: &mut UserSliceReader) -> Result {
    written_zero(r)?;
    vm_clear(s.vm(), s.kind, s.index);
    Ok(())
}

/// The VM and vCPU stats, one per file of a VM's directory.
const VM_FILES: usize = VM_STATS.len() + VCPU_STATS.len();

/// A VM's directory `<pid>-<fd>` under /sys/kernel/debug/rkvm/, as KVM names it: one
/// allocation holds what all its files read, and dropping it removes them all.
pub(crate) struct VmDir {
    _scope: Pin<KBox<Scope<[VmStat; VM_FILES]>>>,
}

fn vm_files<'data>(stats: &'data [VmStat; VM_FILES], dir: &ScopedDir<'data, '_>) {
    for (stat, (_, _, s)) in stats.iter().zip(all_stats()) {
        if writable(s.ty) {
            dir.read_write_callback_file(s.name, stat, &show_vm, &clear_vm);
        } else {
            dir.read_callback_file(s.name, stat, &show_vm);
        }
    }
}

impl VmDir {
    /// Creates the directory and one file per VM and vCPU stat. The VM must drop the
    /// result before it is freed.
    pub(crate) fn new(parent: &Dir, name: &CStr, vm: &Vm) -> Result<Self> {
        let vm = core::ptr::from_ref(vm);
        // Written in place, in the allocation below.
        let stats =
            pin_init::init_array_from_fn::<_, VM_FILES, _, core::convert::Infallible>(move |i| {
                match i.checked_sub(VM_STATS.len()) {
                    None => VmStat {
                        vm,
                        kind: Kind::Vm,
                        index: i,
                    },
                    Some(index) => VmStat {
                        vm,
                        kind: Kind::Vcpu,
                        index,
                    },
                }
            });
        let scope = parent.scope::<_, core::convert::Infallible, _>(stats, name, vm_files);
        Ok(Self {
            _scope: KBox::pin_init(scope, GFP_KERNEL_ACCOUNT)?,
        })
    }
}
