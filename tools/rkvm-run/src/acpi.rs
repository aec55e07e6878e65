// SPDX-License-Identifier: GPL-2.0
//! ACPI tables that tell the guest its CPUs and its interrupt controllers: an RSDP, an
//! XSDT and a MADT (one local APIC per vCPU, the I/O APIC with GSIs 0-23, NMI on every
//! LINT1). The ISA IRQs need no override: the in-kernel irqchip's default routing sends
//! GSI n to I/O APIC pin n and PIC line n. There is no FADT or DSDT, so the guest's ACPI
//! interpreter stays off, as on a machine without ACPI power management; the MADT is
//! read before that, at boot.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{Context, Result};

/// Where the tables go: in the BIOS area that Linux scans for the RSDP (and the zero page
/// points to it too). The e820 map reserves it.
pub(crate) const RSDP_ADDR: u64 = 0xe0000;
const XSDT_ADDR: u64 = RSDP_ADDR + 0x40;
const MADT_ADDR: u64 = XSDT_ADDR + 0x40;

/// The vCPUs that have an xAPIC ID below the I/O APIC's (and 0xff, the broadcast ID).
pub(crate) const MAX_CPUS: usize = 254;

const LAPIC_BASE: u32 = 0xfee0_0000;
const IOAPIC_BASE: u32 = 0xfec0_0000;
const OEM_ID: &[u8; 6] = b"RKVM  ";

/// MADT entry types.
const MADT_LAPIC: u8 = 0;
const MADT_IOAPIC: u8 = 1;
const MADT_LAPIC_NMI: u8 = 4;

/// Makes the bytes of a table sum to 0 (mod 256) through the byte at `at`.
fn checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[at] = sum.wrapping_neg();
}

/// A table with its 36-byte header; the length and checksum are filled by `finish`.
fn header(signature: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(256);
    t.extend_from_slice(signature);
    t.extend_from_slice(&[0; 4]); // length
    t.extend_from_slice(&[revision, 0]); // revision, checksum
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(b"RKVMRUN ");
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"RKVM");
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    checksum(&mut t, 9);
    t
}

/// Writes the tables for `cpus` vCPUs (APIC IDs 0 to cpus-1; the I/O APIC's ID follows).
pub(crate) fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<()> {
    let mut madt = header(b"APIC", 4);
    madt.extend_from_slice(&LAPIC_BASE.to_le_bytes());
    madt.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: there are 8259s too
    for id in 0..cpus {
        // Processor UID, APIC ID, flags (enabled).
        madt.extend_from_slice(&[MADT_LAPIC, 8, id, id]);
        madt.extend_from_slice(&1u32.to_le_bytes());
    }
    madt.extend_from_slice(&[MADT_IOAPIC, 12, cpus, 0]);
    madt.extend_from_slice(&IOAPIC_BASE.to_le_bytes());
    madt.extend_from_slice(&0u32.to_le_bytes()); // first GSI
                                                 // Every processor (UID 0xff), flags (bus defaults), LINT1.
    madt.extend_from_slice(&[MADT_LAPIC_NMI, 6, 0xff, 0, 0, 1]);
    let madt = finish(madt);

    let mut xsdt = header(b"XSDT", 1);
    xsdt.extend_from_slice(&MADT_ADDR.to_le_bytes());
    let xsdt = finish(xsdt);
    if xsdt.len() > (MADT_ADDR - XSDT_ADDR) as usize {
        return Err("the XSDT overlaps the MADT".into());
    }

    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+, with the XSDT
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&XSDT_ADDR.to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]); // extended checksum, reserved
    checksum(&mut rsdp[..20], 8);
    checksum(&mut rsdp, 32);

    mem.write_slice(&rsdp, GuestAddress(RSDP_ADDR))
        .ctx("RSDP")?;
    mem.write_slice(&xsdt, GuestAddress(XSDT_ADDR))
        .ctx("XSDT")?;
    mem.write_slice(&madt, GuestAddress(MADT_ADDR)).ctx("MADT")
}
