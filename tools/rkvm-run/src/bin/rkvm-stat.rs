// SPDX-License-Identifier: GPL-2.0
//! rkvm-stat: the statistics of running VMs (rkvm's or KVM's), like the kernel's
//! kvm_stat.
//!
//! ```text
//! rkvm-stat [--once] [--pid PID] [--interval SECONDS] [--count N] [--all]
//! ```
//!
//! The values come from each VM's debugfs directory, /sys/kernel/debug/{rkvm,kvm}/PID-FD
//! (the VM's own statistics and its vCPUs' summed), so it runs as root. A VM's binary
//! statistics file (KVM_GET_STATS_FD) cannot be had from outside its process: the
//! hypervisor refuses VM ioctls from another mm (EIO). What each statistic is (a count of
//! events, a current value or a peak) comes from the binary statistics of a VM and vCPU
//! that rkvm-stat creates itself on the same device, once; without the device every
//! statistic is taken for a count. The vCPUs are counted in /proc/PID/fd.
//!
//! `--once` prints each VM's nonzero statistics (`--all`: every one) as `name value`
//! lines after a `vm PID FD vcpus N hv HV` line, for scripts. Otherwise it refreshes
//! every interval (default 1 s): per VM, the counts by their rate per second, then the
//! other values; on a terminal it redraws the screen. `--count N` stops after N
//! refreshes; with `--pid` it stops when that process is gone.

// Shared with rkvm-run, which also reads the values and the id; this program takes only
// the statistics' names and kinds from it.
#[expect(dead_code, reason = "the values and the id are rkvm-run's")]
#[path = "../statsfile.rs"]
mod statsfile;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::exit;
use std::rc::Rc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use statsfile::{Kind, StatsFile};

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;
/// `_IO(KVMIO, 0x01)`.
const KVM_CREATE_VM: libc::c_ulong = 0xae01;
/// `_IO(KVMIO, 0x41)`.
const KVM_CREATE_VCPU: libc::c_ulong = 0xae41;

struct Args {
    once: bool,
    pid: Option<i32>,
    interval: Duration,
    count: Option<u64>,
    all: bool,
}

fn usage() -> ! {
    eprintln!("usage: rkvm-stat [--once] [--pid PID] [--interval SECONDS] [--count N] [--all]");
    exit(2);
}

fn parse_args() -> Args {
    let mut a = Args {
        once: false,
        pid: None,
        interval: Duration::from_secs(1),
        count: None,
        all: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--once" => a.once = true,
            "--all" => a.all = true,
            "--pid" => a.pid = Some(val().parse().unwrap_or_else(|_| usage())),
            "--count" => a.count = Some(val().parse().unwrap_or_else(|_| usage())),
            "--interval" => {
                let s: f64 = val().parse().unwrap_or_else(|_| usage());
                if !(0.01..=3600.0).contains(&s) {
                    usage();
                }
                a.interval = Duration::from_secs_f64(s);
            }
            _ => usage(),
        }
    }
    a
}

/// One VM: its process, its VM file descriptor there, its debugfs directory.
struct Vm {
    pid: i32,
    fd: i32,
    hv: &'static str,
    dir: String,
}

/// The hypervisors whose debugfs directories are read, with their devices.
const HVS: [(&str, &[&str]); 2] = [("rkvm", &["/dev/rkvm", "/dev/kvm"]), ("kvm", &["/dev/kvm"])];

/// The kinds of a hypervisor's statistics, by name, from the binary statistics of a VM
/// and a vCPU created for the purpose (closed again); empty if that fails.
fn kinds_of(devices: &[&str]) -> BTreeMap<String, Kind> {
    let mut out = BTreeMap::new();
    for dev in devices {
        let Ok(kvm) = File::options().read(true).write(true).open(dev) else {
            continue;
        };
        // SAFETY: KVM_CREATE_VM takes the VM type and returns a new descriptor.
        let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) };
        if vm < 0 {
            continue;
        }
        // SAFETY: The descriptor is new and owned by nobody else.
        let vm = unsafe { File::from_raw_fd(vm) };
        // SAFETY: KVM_CREATE_VCPU takes the vCPU id and returns a new descriptor.
        let vcpu = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU as _, 0) };
        // SAFETY: As above (a negative result is not a descriptor and is not wrapped).
        let vcpu = (vcpu >= 0).then(|| unsafe { File::from_raw_fd(vcpu) });
        for f in std::iter::once(&vm).chain(vcpu.as_ref()) {
            let Ok(stats) = stats_file(f) else {
                continue;
            };
            for s in stats.read().unwrap_or_default() {
                out.insert(s.name, s.kind);
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

fn stats_file(f: &File) -> io::Result<StatsFile> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new descriptor.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_STATS_FD as _) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: The descriptor is new and owned by nobody else.
    StatsFile::new(unsafe { File::from_raw_fd(r) })
}

/// The vCPU descriptors of process `pid`.
fn vcpu_count(pid: i32) -> usize {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("anon_inode:kvm-vcpu:"))
        })
        .count()
}

/// Every VM with a debugfs directory, of process `only` if given.
fn find_vms(only: Option<i32>) -> Vec<Vm> {
    let mut out = Vec::new();
    for (hv, _) in HVS {
        let base = format!("/sys/kernel/debug/{hv}");
        let Ok(dir) = fs::read_dir(&base) else {
            continue;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let Some((pid, fd)) = name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            let (Ok(pid), Ok(fd)) = (pid.parse::<i32>(), fd.parse::<i32>()) else {
                continue;
            };
            if only.is_some_and(|p| p != pid) {
                continue;
            }
            out.push(Vm {
                pid,
                fd,
                hv,
                dir: format!("{base}/{}", name.to_string_lossy()),
            });
        }
    }
    out.sort_by_key(|v| (v.pid, v.fd));
    out
}

/// A VM's statistics by name, with their kinds (`Cumulative` when unknown); statistics
/// that `kinds` does not know are left out when it knows any (histograms).
fn values(vm: &Vm, kinds: &BTreeMap<String, Kind>) -> Vec<(String, Kind, u64)> {
    let Ok(dir) = fs::read_dir(&vm.dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let kind = match kinds.get(&name) {
            Some(&k) => k,
            None if kinds.is_empty() => Kind::Cumulative,
            None => continue,
        };
        let Some(v) = fs::read_to_string(e.path())
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        else {
            continue;
        };
        out.push((name, kind, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn print_once(vms: &[Vm], kinds: &Kinds, all: bool) -> io::Result<()> {
    let mut o = io::stdout().lock();
    for vm in vms {
        // The values first: the first look at a hypervisor creates a VM, and the VMM's
        // vCPUs may appear meanwhile.
        let vals = values(vm, &kinds.of(vm.hv));
        let vcpus = vcpu_count(vm.pid);
        writeln!(o, "vm {} {} vcpus {vcpus} hv {}", vm.pid, vm.fd, vm.hv)?;
        for (name, _, v) in vals {
            if all || v != 0 {
                writeln!(o, "{name} {v}")?;
            }
        }
    }
    Ok(())
}

fn alive(pid: i32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

fn live(args: &Args, kinds: &Kinds) -> io::Result<()> {
    let tty = io::stdout().is_terminal();
    // Previous values, by (pid, VM fd, name).
    let mut prev: BTreeMap<(i32, i32, String), u64> = BTreeMap::new();
    for vm in find_vms(args.pid) {
        for (name, _, v) in values(&vm, &kinds.of(vm.hv)) {
            prev.insert((vm.pid, vm.fd, name), v);
        }
    }
    let mut last = Instant::now();
    let mut n = 0u64;
    loop {
        sleep(args.interval);
        if args.pid.is_some_and(|p| !alive(p)) {
            return Ok(());
        }
        // Looked up each time: VMs come and go.
        let vms = find_vms(args.pid);
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f64().max(1e-6);
        last = now;
        let mut o = io::stdout().lock();
        if tty {
            write!(o, "\x1b[H\x1b[2J")?;
        }
        let mut next = BTreeMap::new();
        for vm in &vms {
            writeln!(
                o,
                "vm {} {} vcpus {} hv {}  (every {:.1} s)",
                vm.pid,
                vm.fd,
                vcpu_count(vm.pid),
                vm.hv,
                secs
            )?;
            let vals = values(vm, &kinds.of(vm.hv));
            let mut rates = Vec::new();
            let mut levels = Vec::new();
            for (name, kind, v) in vals {
                let key = (vm.pid, vm.fd, name.clone());
                if kind == Kind::Cumulative {
                    let d = prev.get(&key).map_or(0, |&p| v.saturating_sub(p));
                    if args.all || v != 0 {
                        rates.push((d as f64 / secs, name, v));
                    }
                } else if args.all || v != 0 {
                    levels.push((name, v));
                }
                next.insert(key, v);
            }
            rates.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            writeln!(o, " {:<28} {:>14} {:>12}", "event", "total", "per second")?;
            for (rate, name, total) in rates {
                writeln!(o, " {name:<28} {total:>14} {rate:>12.0}")?;
            }
            for (name, v) in levels {
                writeln!(o, " {name:<28} {v:>14}")?;
            }
        }
        if vms.is_empty() {
            writeln!(o, "no VM found")?;
        }
        o.flush()?;
        prev = next;
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}

/// The statistics' kinds of each hypervisor, learned when first needed.
struct Kinds(RefCell<BTreeMap<&'static str, Rc<BTreeMap<String, Kind>>>>);

impl Kinds {
    fn of(&self, hv: &'static str) -> Rc<BTreeMap<String, Kind>> {
        let mut m = self.0.borrow_mut();
        m.entry(hv)
            .or_insert_with(|| {
                let devs = HVS
                    .iter()
                    .find(|(h, _)| *h == hv)
                    .map_or(&[][..], |(_, d)| *d);
                Rc::new(kinds_of(devs))
            })
            .clone()
    }
}

fn main() {
    let args = parse_args();
    let kinds = Kinds(Default::default());
    let r = if args.once {
        let vms = find_vms(args.pid);
        if vms.is_empty() {
            eprintln!("rkvm-stat: no VM found");
            exit(1);
        }
        print_once(&vms, &kinds, args.all)
    } else {
        live(&args, &kinds)
    };
    if let Err(e) = r {
        eprintln!("rkvm-stat: {e}");
        exit(1);
    }
}
