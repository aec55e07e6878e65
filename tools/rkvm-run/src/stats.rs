// SPDX-License-Identifier: GPL-2.0
//! The binary statistics (KVM_GET_STATS_FD) of the VM and of its vCPUs, summed over
//! the vCPUs: the header, the descriptors and the data block of each file the ioctl
//! returns. The vCPUs' files are opened when they are created (their fds move to their
//! threads).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use kvm_ioctls::{VcpuFd, VmFd};

use crate::{Context, Result};

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;
/// The size of `struct kvm_stats_desc` before its name.
const DESC_SIZE: usize = 16;

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).ok_or("short statistics header")?;
    Ok(u32::from_le_bytes(s.try_into().ctx("statistics")?))
}

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

/// The VM's statistics, then the vCPUs' summed (single values that are not 0).
pub(crate) fn read_all(vm: &VmFd) -> Result<Vec<(String, u64)>> {
    let mut out = read(&stats_file(vm)?)?;
    let mut sums: Vec<(String, u64)> = Vec::new();
    for f in VCPUS.lock().map_err(|_| "statistics lock")?.iter() {
        for (name, v) in read(f)? {
            match sums.iter_mut().find(|(n, _)| *n == name) {
                Some((_, sum)) => *sum += v,
                None => sums.push((name, v)),
            }
        }
    }
    out.extend(sums);
    Ok(out)
}

/// Every single-value statistic in a statistics file that is not 0, by name.
fn read(f: &File) -> Result<Vec<(String, u64)>> {
    let mut hdr = [0u8; 24];
    f.read_exact_at(&mut hdr, 0).ctx("statistics header")?;
    let name_size = u32_at(&hdr, 4)? as usize;
    let num_desc = u32_at(&hdr, 8)? as usize;
    let desc_offset = u64::from(u32_at(&hdr, 16)?);
    let data_offset = u64::from(u32_at(&hdr, 20)?);
    if name_size > 256 || num_desc > 4096 {
        return Err("implausible statistics header".into());
    }
    let desc_len = DESC_SIZE + name_size;
    let mut descs = vec![0u8; desc_len * num_desc];
    f.read_exact_at(&mut descs, desc_offset)
        .ctx("statistics descriptors")?;
    let mut out = Vec::new();
    for d in descs.chunks_exact(desc_len) {
        let size = u16::from_le_bytes([d[6], d[7]]);
        let offset = u64::from(u32_at(d, 8)?);
        if size != 1 {
            continue; // a histogram
        }
        let name = &d[DESC_SIZE..];
        let name = String::from_utf8_lossy(
            &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())],
        );
        let mut v = [0u8; 8];
        f.read_exact_at(&mut v, data_offset + offset)
            .ctx("statistics data")?;
        let v = u64::from_le_bytes(v);
        if v != 0 {
            out.push((name.into_owned(), v));
        }
    }
    Ok(out)
}
