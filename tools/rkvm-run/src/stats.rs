// SPDX-License-Identifier: GPL-2.0
//! The binary statistics (KVM_GET_STATS_FD) of the VM and of its vCPUs, summed over
//! the vCPUs: the header, the descriptors and the data block of each file the ioctl
//! returns. The vCPUs' files are opened when they are created (their fds move to their
//! threads).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Mutex;

use kvm_ioctls::{VcpuFd, VmFd};

use crate::statsfile::{Kind, StatsFile};
use crate::{Context, Result};

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;

/// The vCPUs' statistics files.
static VCPUS: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn stats_file(fd: &impl AsRawFd) -> Result<File> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor.
    let r = unsafe { vmm_sys_util::ioctl::ioctl(fd, KVM_GET_STATS_FD) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("KVM_GET_STATS_FD: {e}"));
    }
    // SAFETY: The descriptor is new and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(r) })
}

/// Opens a vCPU's statistics for `read_all` (without them, it reports the VM's only).
pub(crate) fn add_vcpu(vcpu: &VcpuFd) {
    if let (Ok(f), Ok(mut v)) = (stats_file(vcpu), VCPUS.lock()) {
        v.push(f);
    }
}

/// The VM's statistics file id, then its statistics, then the vCPUs' summed (peaks: the
/// highest), single values that are not 0.
pub(crate) fn read_all(vm: &VmFd) -> Result<(String, Vec<(String, u64)>)> {
    let (id, mut out) = read(&stats_file(vm)?)?;
    let mut sums: Values = Vec::new();
    for f in VCPUS.lock().map_err(|_| "statistics lock")?.iter() {
        for (name, kind, v) in read(f)?.1 {
            match sums.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, Kind::Peak, x)) => *x = (*x).max(v),
                Some((_, _, sum)) => *sum += v,
                None => sums.push((name, kind, v)),
            }
        }
    }
    out.extend(sums);
    Ok((id, out.into_iter().map(|(n, _, v)| (n, v)).collect()))
}

/// Single-value statistics by name, with how they change.
type Values = Vec<(String, Kind, u64)>;

/// A statistics file's id and its single-value statistics that are not 0.
fn read(f: &File) -> Result<(String, Values)> {
    let f = f.try_clone().ctx("statistics file")?;
    let stats = StatsFile::new(f).ctx("statistics header")?;
    let values = stats
        .read()
        .ctx("statistics data")?
        .into_iter()
        .filter(|s| s.value != 0)
        .map(|s| (s.name, s.kind, s.value))
        .collect();
    Ok((stats.id, values))
}
