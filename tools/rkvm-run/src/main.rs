// SPDX-License-Identifier: GPL-2.0
//! rkvm-run: a small VMM on the rust-vmm crates, set up the way Firecracker sets up a
//! microVM. It boots a Linux bzImage (and an initramfs) with the hypervisor's in-kernel
//! irqchip and PIT, an 8250 serial port on COM1 whose interrupt goes through an irqfd,
//! ACPI tables for the vCPUs and the I/O APIC, and nothing else. The guest's console is this program's
//! standard output. The VM ends when the guest resets (through the i8042 or a triple
//! fault); then the VM's statistics (KVM_GET_STATS_FD) go to standard error.
//!
//! ```text
//! rkvm-run --kernel bzImage [--initrd FILE] [--cmdline TEXT] [--cpus N] [--mem MiB]
//!          [--dev /dev/rkvm] [--stats]
//! ```

mod acpi;
mod boot;
mod devices;
mod stats;
mod statsfile;

use std::process::exit;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use devices::Pio;

/// The IRQ (GSI, I/O APIC pin and PIC line) of COM1.
const COM1_GSI: u32 = 4;

/// Where the three-level identity map's "TSS" for real-mode emulation lives (KVM needs
/// three pages below 4 GiB outside guest RAM on CPUs without unrestricted guest).
const TSS_ADDR: usize = 0xfffb_d000;

type Error = String;
type Result<T> = std::result::Result<T, Error>;

/// Turns an error into a message that says what failed.
trait Context<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Debug> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| format!("{what}: {e:?}"))
    }
}

struct Args {
    kernel: String,
    initrd: Option<String>,
    cmdline: String,
    cpus: u8,
    mem_mib: usize,
    dev: String,
    stats: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        kernel: String::new(),
        initrd: None,
        cmdline: "console=ttyS0 reboot=k panic=-1".into(),
        cpus: 1,
        mem_mib: 128,
        dev: "/dev/rkvm".into(),
        stats: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--stats" {
            a.stats = true;
            continue;
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kernel" => a.kernel = val,
            "--initrd" => a.initrd = Some(val),
            "--cmdline" => a.cmdline = val,
            "--cpus" => a.cpus = val.parse().ctx("--cpus")?,
            "--mem" => a.mem_mib = val.parse().ctx("--mem")?,
            "--dev" => a.dev = val,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.kernel.is_empty() {
        return Err(
            "usage: rkvm-run --kernel bzImage [--initrd FILE] [--cmdline TEXT] \
                    [--cpus N] [--mem MiB] [--dev PATH] [--stats]"
                .into(),
        );
    }
    if a.cpus == 0 || usize::from(a.cpus) > acpi::MAX_CPUS {
        return Err(format!("--cpus must be 1 to {}", acpi::MAX_CPUS));
    }
    if !(32..=3072).contains(&a.mem_mib) {
        return Err("--mem must be 32 to 3072 (MiB, below the PCI hole)".into());
    }
    Ok(a)
}

/// Gives the guest's memory to the VM as slot 0.
fn map_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .ctx("guest memory host address")?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: The region is a live mapping owned by `mem`, which outlives the VM
        // (both live until the process exits).
        unsafe { vm.set_user_memory_region(r) }.ctx("KVM_SET_USER_MEMORY_REGION")?;
    }
    Ok(())
}

/// Runs one vCPU until the guest resets or fails; never returns.
fn run_vcpu(mut vcpu: VcpuFd, id: u8, pio: Arc<Mutex<Pio>>, vm: Arc<VmFd>, stats: bool) -> ! {
    loop {
        let exit_reason = match vcpu.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => fail(&format!("vCPU {id}: KVM_RUN: {e}")),
        };
        match exit_reason {
            VcpuExit::IoOut(port, data) => {
                let reset = pio.lock().map(|mut p| p.write(port, data)).unwrap_or(true);
                if reset {
                    finish(
                        &vm,
                        stats,
                        &format!("the guest reset the machine (vCPU {id})"),
                    );
                }
            }
            VcpuExit::IoIn(port, data) => {
                if let Ok(mut p) = pio.lock() {
                    p.read(port, data);
                }
            }
            // No MMIO device: reads see all ones, writes go nowhere.
            VcpuExit::MmioRead(_, data) => data.fill(0xff),
            VcpuExit::MmioWrite(..) => {}
            VcpuExit::Shutdown => finish(
                &vm,
                stats,
                &format!("the guest shut down (triple fault, vCPU {id})"),
            ),
            VcpuExit::SystemEvent(kind, _) => {
                finish(&vm, stats, &format!("system event {kind} (vCPU {id})"))
            }
            VcpuExit::Hlt => fail(&format!(
                "vCPU {id}: HLT reached userspace with an in-kernel APIC"
            )),
            other => fail(&format!("vCPU {id}: unexpected exit {other:?}")),
        }
    }
}

fn finish(vm: &VmFd, stats: bool, why: &str) -> ! {
    eprintln!("rkvm-run: {why}");
    if stats {
        match stats::read_all(vm) {
            Ok((id, s)) => {
                eprintln!("rkvm-run: statistics of {id} and its vCPUs");
                for (name, value) in s {
                    eprintln!("rkvm-run: stat {name} = {value}");
                }
            }
            Err(e) => eprintln!("rkvm-run: no statistics: {e}"),
        }
    }
    exit(0)
}

fn fail(msg: &str) -> ! {
    eprintln!("rkvm-run: {msg}");
    exit(1)
}

fn main() {
    if let Err(e) = run() {
        fail(&e);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let dev = std::ffi::CString::new(args.dev.as_str()).ctx("--dev")?;
    let kvm = Kvm::new_with_path(dev.as_c_str()).ctx(&args.dev)?;
    let vm = kvm.create_vm().ctx("KVM_CREATE_VM")?;
    vm.set_tss_address(TSS_ADDR).ctx("KVM_SET_TSS_ADDR")?;
    vm.create_irq_chip().ctx("KVM_CREATE_IRQCHIP")?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).ctx("KVM_CREATE_PIT2")?;

    let mem_size = args.mem_mib << 20;
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).ctx("guest memory")?;
    map_memory(&vm, &mem)?;
    let entry = boot::load(&mem, &args.kernel, args.initrd.as_deref(), &args.cmdline)?;
    acpi::write(&mem, args.cpus)?;

    // COM1: its interrupt is an eventfd the hypervisor turns into IRQ 4.
    let irq = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    vm.register_irqfd(&irq, COM1_GSI).ctx("KVM_IRQFD")?;
    let pio = Arc::new(Mutex::new(Pio::new(irq)));

    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .ctx("KVM_GET_SUPPORTED_CPUID")?;
    let vm = Arc::new(vm);
    let mut vcpus = Vec::new();
    for id in 0..args.cpus {
        let vcpu = vm.create_vcpu(u64::from(id)).ctx("KVM_CREATE_VCPU")?;
        boot::setup_vcpu(&vcpu, id, args.cpus, &supported, &mem, entry)?;
        stats::add_vcpu(&vcpu);
        vcpus.push(vcpu);
    }
    // Every vCPU is set up before any runs; the APs wait for the BSP's INIT and SIPI.
    let start = Arc::new(Barrier::new(vcpus.len()));
    let mut threads = Vec::new();
    for (id, vcpu) in vcpus.into_iter().enumerate() {
        let (pio, vm, start) = (pio.clone(), vm.clone(), start.clone());
        let stats = args.stats;
        let t = thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                start.wait();
                run_vcpu(vcpu, id as u8, pio, vm, stats)
            })
            .ctx("vCPU thread")?;
        threads.push(t);
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
