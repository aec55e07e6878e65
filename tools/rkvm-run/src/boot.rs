// SPDX-License-Identifier: GPL-2.0
//! Linux's 64-bit boot protocol: the bzImage's protected-mode kernel, the initramfs,
//! the command line and the zero page in guest memory; identity-mapped page tables, a
//! flat GDT and long mode on the boot vCPU; CPUID with each vCPU's APIC ID; LINT0 as
//! ExtINT and LINT1 as NMI on every local APIC.

use std::fs::File;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, CpuId};
use kvm_ioctls::VcpuFd;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{bzimage::BzImage, load_cmdline, KernelLoader};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{Context, Result};

// Guest-physical layout (below 1 MiB), as Firecracker's.
const GDT_ADDR: u64 = 0x500;
const IDT_ADDR: u64 = 0x520;
const BOOT_STACK: u64 = 0x8ff0;
const ZERO_PAGE: u64 = 0x7000;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
const CMDLINE: u64 = 0x20000;
const CMDLINE_MAX: usize = 4096;
/// Conventional memory ends where a PC's EBDA starts; the rest up to 1 MiB (with the
/// ACPI tables) is reserved.
const EBDA: u64 = 0x9fc00;
const HIMEM: u64 = 0x10_0000;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// The zero page as bytes for guest memory.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ZeroPage(boot_params);

// SAFETY: boot_params is plain data (integers and arrays of them, packed), valid for any
// bit pattern.
unsafe impl ByteValued for ZeroPage {}

/// Where the boot vCPU starts: the 64-bit entry of the kernel.
#[derive(Clone, Copy)]
pub(crate) struct Entry(u64);

/// Loads the kernel, the initramfs and the command line, and writes the zero page.
pub(crate) fn load(
    mem: &GuestMemoryMmap,
    kernel: &str,
    initrd: Option<&str>,
    cmdline: &str,
) -> Result<Entry> {
    let mut f = File::open(kernel).ctx(kernel)?;
    let k = BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM))).ctx("bzImage")?;
    let mut hdr = k.setup_header.ok_or("bzImage without a setup header")?;

    let mut cl = Cmdline::new(CMDLINE_MAX).ctx("command line")?;
    cl.insert_str(cmdline).ctx("command line")?;
    load_cmdline(mem, GuestAddress(CMDLINE), &cl).ctx("command line")?;

    hdr.type_of_loader = 0xff;
    hdr.boot_flag = 0xaa55;
    hdr.header = 0x5372_6448; // "HdrS"
    hdr.cmd_line_ptr = CMDLINE as u32;
    hdr.cmdline_size = cmdline.len() as u32 + 1;
    hdr.kernel_alignment = 0x100_0000;

    let mem_end = mem.last_addr().raw_value() + 1;
    if let Some(path) = initrd {
        let data = std::fs::read(path).ctx(path)?;
        let size = data.len() as u64;
        // Page-aligned at the top of memory, under the kernel's limit for it.
        let top = mem_end.min(u64::from(hdr.initrd_addr_max) + 1);
        let addr = top
            .checked_sub(size)
            .filter(|&a| a > k.kernel_end)
            .ok_or("the initramfs does not fit in guest memory")?
            & !0xfff;
        mem.write_slice(&data, GuestAddress(addr))
            .ctx("initramfs")?;
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
    }

    let mut zp = ZeroPage::default();
    zp.0.hdr = hdr;
    let e820 = [
        (0, EBDA, E820_RAM),
        (EBDA, 0x10_0000 - EBDA, E820_RESERVED),
        (HIMEM, mem_end - HIMEM, E820_RAM),
    ];
    let mut table = zp.0.e820_table;
    for (slot, &(addr, size, kind)) in table.iter_mut().zip(e820.iter()) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: kind,
        };
    }
    zp.0.e820_table = table;
    zp.0.e820_entries = e820.len() as u8;
    zp.0.acpi_rsdp_addr = crate::acpi::RSDP_ADDR;
    mem.write_obj(zp, GuestAddress(ZERO_PAGE))
        .ctx("zero page")?;
    // The 64-bit entry point is 0x200 past the start of the protected-mode kernel.
    Ok(Entry(k.kernel_load.raw_value() + 0x200))
}

/// A 4 GiB flat segment.
fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        ..Default::default()
    }
}

/// The GDT entry of a segment.
fn gdt_entry(s: &kvm_segment) -> u64 {
    let access = u64::from(s.type_)
        | u64::from(s.s) << 4
        | u64::from(s.dpl) << 5
        | u64::from(s.present) << 7;
    let flags = u64::from(s.avl) | u64::from(s.l) << 1 | u64::from(s.db) << 2 | u64::from(s.g) << 3;
    let limit = u64::from(if s.g != 0 { s.limit >> 12 } else { s.limit });
    (limit & 0xffff)
        | (s.base & 0xff_ffff) << 16
        | access << 40
        | (limit >> 16 & 0xf) << 48
        | flags << 52
        | (s.base >> 24 & 0xff) << 56
}

/// Long mode for the boot vCPU: page tables mapping the first GiB 1:1 with 2 MiB
/// pages, a GDT with 64-bit code, data and a TSS, an empty IDT.
fn long_mode(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: Entry) -> Result<()> {
    mem.write_obj(PDPT | 3, GuestAddress(PML4)).ctx("PML4")?;
    mem.write_obj(PD | 3, GuestAddress(PDPT)).ctx("PDPT")?;
    for i in 0..512u64 {
        mem.write_obj(i << 21 | 0x83, GuestAddress(PD + i * 8))
            .ctx("PD")?;
    }
    let code = segment(0x08, 0xb, true);
    let data = segment(0x10, 0x3, false);
    let mut tss = segment(0x18, 0xb, false);
    tss.s = 0;
    tss.db = 0;
    tss.g = 0;
    tss.limit = 0x67;
    for (i, s) in [code, data, tss].iter().enumerate() {
        mem.write_obj(gdt_entry(s), GuestAddress(GDT_ADDR + 8 * (i as u64 + 1)))
            .ctx("GDT")?;
    }
    mem.write_obj(0u64, GuestAddress(GDT_ADDR)).ctx("GDT")?;
    mem.write_obj(0u64, GuestAddress(IDT_ADDR)).ctx("IDT")?;

    let mut sregs = vcpu.get_sregs().ctx("KVM_GET_SREGS")?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = tss;
    sregs.cr3 = PML4;
    sregs.cr4 |= 1 << 5; // PAE
    sregs.cr0 |= 1 | 1 << 31; // PE, PG
    sregs.efer |= 1 << 8 | 1 << 10; // LME, LMA
    vcpu.set_sregs(&sregs).ctx("KVM_SET_SREGS")?;

    let regs = kvm_regs {
        rflags: 2,
        rip: entry.0,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        ..Default::default()
    };
    vcpu.set_regs(&regs).ctx("KVM_SET_REGS")
}

/// CPUID as the hypervisor supports it, with this vCPU's APIC ID and the topology of
/// `cpus` single-threaded cores in one package.
fn cpuid(vcpu: &VcpuFd, id: u8, cpus: u8, supported: &CpuId) -> Result<()> {
    let mut c = supported.clone();
    let core_bits = u32::BITS - u32::from(cpus - 1).leading_zeros();
    for e in c.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0xffff) | u32::from(cpus) << 16 | u32::from(id) << 24;
                e.edx |= 1 << 28; // HTT: the count in EBX[23:16] is valid
                e.ecx |= 1 << 31; // a hypervisor is present
            }
            0xb | 0x1f => {
                e.edx = u32::from(id);
                match e.index {
                    0 => (e.eax, e.ebx, e.ecx) = (0, 1, 1 << 8),
                    1 => (e.eax, e.ebx, e.ecx) = (core_bits, u32::from(cpus), 1 | 2 << 8),
                    n => (e.eax, e.ebx, e.ecx) = (0, 0, n),
                }
            }
            _ => {}
        }
    }
    vcpu.set_cpuid2(&c).ctx("KVM_SET_CPUID2")
}

/// Sets up vCPU `id` of `cpus`: CPUID, FPU, LINT0/LINT1, and on the boot vCPU (0) the
/// registers for the kernel's 64-bit entry. The others wait for INIT and SIPI.
pub(crate) fn setup_vcpu(
    vcpu: &VcpuFd,
    id: u8,
    cpus: u8,
    supported: &CpuId,
    mem: &GuestMemoryMmap,
    entry: Entry,
) -> Result<()> {
    cpuid(vcpu, id, cpus, supported)?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).ctx("KVM_SET_FPU")?;

    let mut lapic = vcpu.get_lapic().ctx("KVM_GET_LAPIC")?;
    let mut set = |reg: usize, mode: u32| {
        let mut v = [0u8; 4];
        for (d, s) in v.iter_mut().zip(&lapic.regs[reg..reg + 4]) {
            *d = *s as u8;
        }
        let val = (u32::from_le_bytes(v) & !0x700) | mode << 8;
        for (d, s) in lapic.regs[reg..reg + 4].iter_mut().zip(val.to_le_bytes()) {
            *d = s as _;
        }
    };
    set(0x350, 7); // LVT0: ExtINT (the PIC)
    set(0x360, 4); // LVT1: NMI
    vcpu.set_lapic(&lapic).ctx("KVM_SET_LAPIC")?;

    if id == 0 {
        long_mode(vcpu, mem, entry)?;
    }
    Ok(())
}
