// SPDX-License-Identifier: GPL-2.0
//! A binary statistics file (what KVM_GET_STATS_FD returns, Documentation/virt/kvm/api.rst
//! "KVM_GET_STATS_FD"): its header and descriptors, read once, and its single-value
//! statistics, read as often as asked. Standard library only: rkvm-run and rkvm-stat
//! both use it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `struct kvm_stats_desc` before its name.
const DESC_SIZE: usize = 16;

/// How a statistic changes (the type bits of a descriptor's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows: a count of events.
    Cumulative,
    /// A current value.
    Instant,
    /// The highest value seen.
    Peak,
}

/// One single-value statistic.
#[derive(Clone, Debug)]
pub struct Stat {
    pub name: String,
    pub kind: Kind,
    pub value: u64,
}

struct Desc {
    name: String,
    kind: Kind,
    /// Index of the value in the data block, in u64s.
    index: usize,
}

/// An open statistics file.
pub struct StatsFile {
    file: File,
    descs: Vec<Desc>,
    data_offset: u64,
    /// The words of the data block (histograms included).
    data_words: usize,
    /// The file's id string ("kvm-<pid>", "kvm-<pid>/vcpu-<n>").
    pub id: String,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| bad("short statistics record"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl StatsFile {
    /// Reads the header and the descriptors of `file`.
    pub fn new(file: File) -> io::Result<Self> {
        let mut hdr = [0u8; 24];
        file.read_exact_at(&mut hdr, 0)?;
        let name_size = u32_at(&hdr, 4)? as usize;
        let num_desc = u32_at(&hdr, 8)? as usize;
        let id_offset = u64::from(u32_at(&hdr, 12)?);
        let desc_offset = u64::from(u32_at(&hdr, 16)?);
        let data_offset = u64::from(u32_at(&hdr, 20)?);
        if name_size > 256 || num_desc > 4096 {
            return Err(bad("implausible statistics header"));
        }
        let mut id = vec![0u8; name_size];
        file.read_exact_at(&mut id, id_offset)?;
        let desc_len = DESC_SIZE + name_size;
        let mut raw = vec![0u8; desc_len * num_desc];
        file.read_exact_at(&mut raw, desc_offset)?;
        let mut descs = Vec::new();
        let mut data_words = 0;
        for d in raw.chunks_exact(desc_len) {
            let flags = u32_at(d, 0)?;
            let size = usize::from(u16::from_le_bytes([d[6], d[7]]));
            let offset = u32_at(d, 8)? as usize;
            data_words = data_words.max(offset / 8 + size);
            let kind = match flags & 0xf {
                0 => Kind::Cumulative,
                1 => Kind::Instant,
                2 => Kind::Peak,
                _ => continue, // a histogram
            };
            if size != 1 {
                continue;
            }
            descs.push(Desc {
                name: cstr(&d[DESC_SIZE..]),
                kind,
                index: offset / 8,
            });
        }
        if data_words > 1 << 20 {
            return Err(bad("implausible statistics data size"));
        }
        Ok(Self {
            file,
            descs,
            data_offset,
            data_words,
            id: cstr(&id),
        })
    }

    /// The current values, in the file's order (one read of the data block).
    pub fn read(&self) -> io::Result<Vec<Stat>> {
        let mut data = vec![0u8; self.data_words * 8];
        self.file.read_exact_at(&mut data, self.data_offset)?;
        let mut out = Vec::with_capacity(self.descs.len());
        for d in &self.descs {
            let w = data
                .get(d.index * 8..d.index * 8 + 8)
                .ok_or_else(|| bad("statistic beyond the data block"))?;
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            out.push(Stat {
                name: d.name.clone(),
                kind: d.kind,
                value: u64::from_le_bytes(v),
            });
        }
        Ok(out)
    }
}
