// SPDX-License-Identifier: GPL-2.0

//! Statistics: KVM's VM and vCPU stat names, per-VM and per-vCPU counters, and the
//! binary stats files (`KVM_GET_STATS_FD`). The debugfs files are in `debugfs.rs`.

use crate::uapi::{
    KVM_STATS_BASE_POW10, KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT,
    KVM_STATS_TYPE_LOG_HIST, KVM_STATS_UNIT_BOOLEAN, KVM_STATS_UNIT_NONE, KVM_STATS_UNIT_SECONDS,
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, ArcBorrow};

pub(crate) use crate::x86::stats::*;

/// Which table a stat belongs to.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Vm,
    Vcpu,
}

/// `KVM_STATS_NAME_SIZE`: the id string and every descriptor name take this many bytes.
const NAME_SIZE: usize = 48;
/// Buckets of KVM's halt histograms (`HALT_POLL_HIST_COUNT`).
pub(crate) const HIST_BUCKETS: usize = 32;
/// Bytes of `struct kvm_stats_header` and of a descriptor without its name.
const HEADER_SIZE: usize = 24;
const DESC_SIZE: usize = 16;

/// A base-2 logarithmic histogram: bucket `n` counts values whose highest set bit is
/// bit `n - 1` (bucket 0 counts zeros), the last bucket everything larger (as KVM's).
pub(crate) struct LogHist([AtomicU64; HIST_BUCKETS]);

impl LogHist {
    pub(crate) fn new() -> Self {
        Self([const { AtomicU64::new(0) }; HIST_BUCKETS])
    }

    pub(crate) fn record(&self, v: u64) {
        let i = ((u64::BITS - v.leading_zeros()) as usize).min(HIST_BUCKETS - 1);
        if let Some(b) = self.0.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, i: usize) -> u64 {
        self.0.get(i).map_or(0, |b| b.load(Ordering::Relaxed))
    }

    /// Zeroes bucket `i`.
    pub(crate) fn clear(&self, i: usize) {
        if let Some(b) = self.0.get(i) {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// How a stat is described in the binary stats: flags, exponent, number of u64s.
#[derive(Clone, Copy)]
struct Desc {
    flags: u32,
    exponent: i16,
    size: u16,
}

const fn desc(ty: u32, unit: u32, exponent: i16, size: u16) -> Desc {
    Desc {
        flags: ty | unit | KVM_STATS_BASE_POW10,
        exponent,
        size,
    }
}

/// KVM's descriptor of a stat.
fn describe(stat: &Stat) -> Desc {
    match stat.ty {
        Ty::Counter => desc(KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_UNIT_NONE, 0, 1),
        Ty::Instant => desc(KVM_STATS_TYPE_INSTANT, KVM_STATS_UNIT_NONE, 0, 1),
        Ty::Flag => desc(KVM_STATS_TYPE_INSTANT, KVM_STATS_UNIT_BOOLEAN, 0, 1),
        Ty::TimeNs => desc(KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_UNIT_SECONDS, -9, 1),
        Ty::HistNs => desc(
            KVM_STATS_TYPE_LOG_HIST,
            KVM_STATS_UNIT_SECONDS,
            -9,
            HIST_BUCKETS as u16,
        ),
    }
}

/// The three halt histograms of a vCPU.
pub(crate) struct HaltHists {
    pub(crate) poll_success: LogHist,
    pub(crate) poll_fail: LogHist,
    pub(crate) wait: LogHist,
}

impl HaltHists {
    pub(crate) fn new() -> Self {
        Self {
            poll_success: LogHist::new(),
            poll_fail: LogHist::new(),
            wait: LogHist::new(),
        }
    }

    /// The histogram of vCPU stat `i`, if it is one.
    pub(crate) fn of(&self, i: usize) -> Option<&LogHist> {
        match i {
            vcpu::HALT_POLL_SUCCESS_HIST => Some(&self.poll_success),
            vcpu::HALT_POLL_FAIL_HIST => Some(&self.poll_fail),
            vcpu::HALT_WAIT_HIST => Some(&self.wait),
            _ => None,
        }
    }
}

/// `KVM_GET_STATS_FD` of a VM or a vCPU: a read-only file laid out as KVM's binary
/// stats (header, id string, descriptors, data), read with `read` or `pread`.
pub(crate) struct StatsFile<S: StatsSource> {
    id: [u8; NAME_SIZE],
    src: S,
}

/// What a stats file reads its values from.
pub(crate) trait StatsSource: Send + Sync + 'static {
    const KIND: Kind;
    const NAME: &'static CStr;
    /// The vCPU id KVM appends to a vCPU stats file's name ("kvm-vcpu-stats:ID").
    fn name_id(&self) -> Option<u32> {
        None
    }
    /// Appends the u64s of stat `i` (as many as its descriptor's size).
    fn values(&self, i: usize, out: &mut KVec<u64>) -> Result;
}

impl StatsSource for Arc<super::vm::Vm> {
    const KIND: Kind = Kind::Vm;
    const NAME: &'static CStr = c"kvm-vm-stats";
    fn values(&self, i: usize, out: &mut KVec<u64>) -> Result {
        out.push(self.stats.get(i), GFP_KERNEL)?;
        Ok(())
    }
}

/// A vCPU's stats file holds its VM too (as KVM's holds a reference on the VM).
impl StatsSource for (Arc<super::vm::Vm>, Arc<super::vcpu::Vcpu>) {
    const KIND: Kind = Kind::Vcpu;
    const NAME: &'static CStr = c"kvm-vcpu-stats";
    fn name_id(&self) -> Option<u32> {
        Some(self.1.id)
    }
    fn values(&self, i: usize, out: &mut KVec<u64>) -> Result {
        let vcpu = &self.1;
        match vcpu.halt_hists.of(i) {
            None => out.push(vcpu.stats.get(i), GFP_KERNEL)?,
            Some(h) => {
                for b in 0..HIST_BUCKETS {
                    out.push(h.get(b), GFP_KERNEL)?;
                }
            }
        }
        Ok(())
    }
}

fn put_u32(img: &mut KVec<u8>, v: u32) -> Result {
    img.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?;
    Ok(())
}

/// A NUL-padded name field; longer names are cut to leave the terminating NUL.
fn name_field(name: &[u8]) -> [u8; NAME_SIZE] {
    let mut buf = [0u8; NAME_SIZE];
    for (d, s) in buf.iter_mut().zip(name.iter().take(NAME_SIZE - 1)) {
        *d = *s;
    }
    buf
}

fn put_name(img: &mut KVec<u8>, name: &[u8]) -> Result {
    img.extend_from_slice(&name_field(name), GFP_KERNEL)?;
    Ok(())
}

impl<S: StatsSource> StatsFile<S> {
    /// Opens the fd; `id` is KVM's stats id ("kvm-<pid>" or "kvm-<pid>/vcpu-<id>").
    pub(crate) fn open(id: &CStr, src: S) -> Result<isize> {
        let with_id = match src.name_id() {
            Some(n) => Some(CString::try_from_fmt(fmt!("{}:{n}", S::NAME.to_str()?))?),
            None => None,
        };
        let file = Arc::new(
            Self {
                id: name_field(id.to_bytes()),
                src,
            },
            GFP_KERNEL,
        )?;
        let name = with_id.as_deref().unwrap_or(S::NAME);
        Ok(crate::sys::anon_fd::install_named(file, name)? as isize)
    }

    /// The whole file as it reads now.
    fn image(&self) -> Result<KVec<u8>> {
        let table = match S::KIND {
            Kind::Vm => VM_STATS,
            Kind::Vcpu => VCPU_STATS,
        };
        let n = table.len();
        let desc_offset = HEADER_SIZE + NAME_SIZE;
        let data_offset = desc_offset + n * (DESC_SIZE + NAME_SIZE);
        let mut img = KVec::new();
        for v in [0, NAME_SIZE, n, HEADER_SIZE, desc_offset, data_offset] {
            put_u32(&mut img, u32::try_from(v).map_err(|_| EINVAL)?)?;
        }
        put_name(&mut img, &self.id)?;
        let mut offset = 0u32;
        for stat in table {
            let d = describe(stat);
            put_u32(&mut img, d.flags)?;
            img.extend_from_slice(&d.exponent.to_le_bytes(), GFP_KERNEL)?;
            img.extend_from_slice(&d.size.to_le_bytes(), GFP_KERNEL)?;
            put_u32(&mut img, offset)?;
            put_u32(&mut img, 0)?;
            put_name(&mut img, stat.name.to_bytes())?;
            offset = offset.saturating_add(u32::from(d.size) * 8);
        }
        let mut data = KVec::new();
        for i in 0..n {
            self.src.values(i, &mut data)?;
        }
        for v in data.iter() {
            img.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?;
        }
        Ok(img)
    }
}

impl<S: StatsSource> crate::sys::anon_fd::AnonFile for StatsFile<S> {
    const NAME: &'static CStr = S::NAME;
    const HAS_READ: bool = true;

    fn ioctl(_this: ArcBorrow<'_, Self>, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    fn read(this: ArcBorrow<'_, Self>, buf: usize, len: usize, pos: &mut i64) -> Result<usize> {
        let start = usize::try_from(*pos).map_err(|_| EINVAL)?;
        let img = this.image()?;
        let Some(rest) = img.get(start..) else {
            return Ok(0);
        };
        let n = rest.len().min(len);
        super::uaccess::write_slice(buf, rest.get(..n).ok_or(EINVAL)?)?;
        *pos = pos.saturating_add(n as i64);
        Ok(n)
    }
}
