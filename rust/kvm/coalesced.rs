// SPDX-License-Identifier: GPL-2.0

//! Coalesced MMIO and PIO (`KVM_REGISTER_COALESCED_MMIO`): guest writes into zones that
//! userspace registered do not exit. They are appended to a ring page shared by the VM
//! (mapped through every vCPU fd at `KVM_COALESCED_MMIO_PAGE_OFFSET`), which userspace
//! drains at its next exit. Reads of a zone, and writes when the ring is full, exit as
//! usual.

use super::uaccess;
use super::vm::Vm;
use core::sync::atomic::{fence, Ordering};
use kernel::prelude::*;

/// KVM's limit of devices on one I/O bus (`NR_IOBUS_DEVS`). Its coalesced zones are
/// devices of the MMIO or the PIO bus, so each bus holds at most this many zones.
/// ioeventfds are devices too but are not counted against the limit.
pub(crate) const BUS_DEVICES_MAX: usize = 1000;
/// Ring layout: `first` and `last` (u32 each), then 24-byte entries filling the page.
const RING_HEADER: usize = 8;
const ENTRY_SIZE: usize = 24;
/// `KVM_COALESCED_MMIO_MAX`: entries in the ring.
const RING_ENTRIES: u32 = ((4096 - RING_HEADER) / ENTRY_SIZE) as u32;

/// A registered zone (`struct kvm_coalesced_mmio_zone`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Zone {
    addr: u64,
    size: u32,
    pio: bool,
}

impl Zone {
    fn contains(&self, addr: u64, len: u32, pio: bool) -> bool {
        let Some(end) = addr.checked_add(u64::from(len)) else {
            return false;
        };
        self.pio == pio && addr >= self.addr && end <= self.addr + u64::from(self.size)
    }
}

/// Reads a `struct kvm_coalesced_mmio_zone` (addr u64, size u32, pio u32).
fn read_zone(arg: usize) -> Result<Zone> {
    let w: [u64; 2] = uaccess::read(arg)?;
    let pio = (w[1] >> 32) as u32;
    if pio > 1 {
        return Err(EINVAL);
    }
    Ok(Zone {
        addr: w[0],
        size: w[1] as u32,
        pio: pio == 1,
    })
}

/// `KVM_REGISTER_COALESCED_MMIO`.
pub(crate) fn register(vm: &Vm, arg: usize) -> Result<isize> {
    let z = read_zone(arg)?;
    if z.addr.checked_add(u64::from(z.size)).is_none() {
        return Err(EINVAL);
    }
    // The ring the zone's writes go to, made outside the lock.
    vm.coalesced_ring.get()?;
    let mut l = vm.locked.lock();
    if bus_full(&l.coalesced, z.pio) {
        return Err(ENOSPC);
    }
    l.coalesced.push(z, GFP_KERNEL_ACCOUNT)?;
    vm.coalesced_count.store(
        u32::try_from(l.coalesced.len()).unwrap_or(u32::MAX),
        Ordering::Release,
    );
    Ok(0)
}

/// Whether the MMIO (or, with `pio`, the PIO) bus has no room for another device: it
/// already holds [`BUS_DEVICES_MAX`] zones.
pub(crate) fn bus_full(zones: &[Zone], pio: bool) -> bool {
    zones.iter().filter(|z| z.pio == pio).count() >= BUS_DEVICES_MAX
}

/// `KVM_UNREGISTER_COALESCED_MMIO`: drops every zone of the same kind that contains the
/// given range (KVM's test, which also matches the exact zone that was registered).
pub(crate) fn unregister(vm: &Vm, arg: usize) -> Result<isize> {
    let r = read_zone(arg)?;
    let mut l = vm.locked.lock();
    let mut i = 0;
    while i < l.coalesced.len() {
        if l.coalesced
            .get(i)
            .is_some_and(|z| z.contains(r.addr, r.size, r.pio))
        {
            l.coalesced.remove(i)?;
        } else {
            i += 1;
        }
    }
    vm.coalesced_count.store(
        u32::try_from(l.coalesced.len()).unwrap_or(u32::MAX),
        Ordering::Release,
    );
    Ok(0)
}

/// A guest write of `data[..len]` to `addr` (a port when `pio`): appended to the ring if
/// it falls in a zone and the ring has room. `true` means it is done (no exit).
pub(crate) fn write(vm: &Vm, addr: u64, len: u32, pio: bool, data: &[u8]) -> bool {
    if len == 0 || len > 8 || vm.coalesced_count.load(Ordering::Acquire) == 0 {
        return false;
    }
    let l = vm.locked.lock();
    if !l.coalesced.iter().any(|z| z.contains(addr, len, pio)) {
        return false;
    }
    // A zone exists, so its registration made the ring.
    let Some(ring) = vm.coalesced_ring.made() else {
        return false;
    };
    let mut hdr = [0u8; RING_HEADER];
    if ring.read_bytes(0, &mut hdr).is_err() {
        return false;
    }
    let first = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let last = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    // Userspace may have written anything to `last`; full when one slot is left
    // (first == last + 1), so that an empty and a full ring differ. Then it exits.
    if last >= RING_ENTRIES || (last + 1) % RING_ENTRIES == first {
        return false;
    }
    let mut e = [0u8; ENTRY_SIZE];
    e[..8].copy_from_slice(&addr.to_le_bytes());
    e[8..12].copy_from_slice(&len.to_le_bytes());
    e[12..16].copy_from_slice(&u32::from(pio).to_le_bytes());
    for (d, s) in e[16..].iter_mut().zip(data.iter().take(len as usize)) {
        *d = *s;
    }
    let off = RING_HEADER + last as usize * ENTRY_SIZE;
    if ring.write_bytes(off, &e).is_err() {
        return false;
    }
    // The entry is complete before userspace can see the new `last`.
    fence(Ordering::Release);
    let next = (last + 1) % RING_ENTRIES;
    ring.write_bytes(4, &next.to_le_bytes()).is_ok()
}
