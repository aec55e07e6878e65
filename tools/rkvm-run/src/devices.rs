// SPDX-License-Identifier: GPL-2.0
//! The port I/O devices in userspace: COM1 (vm-superio's 8250, its interrupt an eventfd
//! registered as an irqfd), the i8042's command port, whose reset command (0xfe) ends
//! the VM, and the CMOS clock (the host's UTC time, always readable). Every other port
//! reads as all ones and ignores writes; the PIC and the PIT live in the hypervisor and
//! never reach here.

use std::io::{self, Stdout};
use std::time::{SystemTime, UNIX_EPOCH};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

const COM1: u16 = 0x3f8;
const COM1_END: u16 = COM1 + 8;
const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;
const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;

/// The MC146818 clock and its RAM, as the guest reads it through ports 0x70 and 0x71.
/// Its time registers are the host's UTC time at each read, in BCD and 24-hour mode;
/// no update is ever in progress (a guest waits up to a second for one to end, and an
/// absent clock reads as one always in progress). Writes to the time and control
/// registers are ignored, the rest of the RAM keeps what the guest writes.
struct Cmos {
    index: u8,
    ram: [u8; 128],
}

impl Cmos {
    fn new() -> Self {
        Cmos {
            index: 0,
            ram: [0; 128],
        }
    }

    fn select(&mut self, v: u8) {
        // Bit 7 masks NMIs on a PC; the register is the low 7 bits.
        self.index = v & 0x7f;
    }

    fn read(&self) -> u8 {
        let bcd = |v: u64| (((v / 10 % 10) << 4) | (v % 10)) as u8;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days(secs / 86400);
        match self.index {
            0x00 => bcd(secs % 60),
            0x02 => bcd(secs / 60 % 60),
            0x04 => bcd(secs / 3600 % 24),
            // 1 = Sunday; the epoch was a Thursday.
            0x06 => bcd((secs / 86400 + 4) % 7 + 1),
            0x07 => bcd(day),
            0x08 => bcd(month),
            0x09 => bcd(year % 100),
            0x32 => bcd(year / 100),
            // Divider on, 1024 Hz, no update in progress.
            0x0a => 0x26,
            // 24-hour mode, BCD, no interrupts.
            0x0b => 0x02,
            0x0c => 0,
            // Valid RAM and time.
            0x0d => 0x80,
            i => self.ram[usize::from(i)],
        }
    }

    fn write(&mut self, v: u8) {
        if self.index > 0x0d && self.index != 0x32 {
            self.ram[usize::from(self.index)] = v;
        }
    }
}

/// The proleptic Gregorian (year, month, day) of `days` after 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// An eventfd as the serial port's interrupt line.
pub(crate) struct IrqLine(EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The devices on the I/O port bus.
pub(crate) struct Pio {
    com1: Serial<IrqLine, vm_superio::serial::NoEvents, Stdout>,
    cmos: Cmos,
}

impl Pio {
    pub(crate) fn new(irq: EventFd) -> Self {
        Pio {
            com1: Serial::new(IrqLine(irq), io::stdout()),
            cmos: Cmos::new(),
        }
    }

    /// An OUT; true if the guest asked for a reset.
    pub(crate) fn write(&mut self, port: u16, data: &[u8]) -> bool {
        let Some(&byte) = data.first() else {
            return false;
        };
        match port {
            COM1..COM1_END => {
                // A failed write to our standard output loses the byte, as a real UART
                // with nothing on the line would.
                let _ = self.com1.write((port - COM1) as u8, byte);
                false
            }
            I8042_COMMAND => byte == I8042_RESET,
            CMOS_INDEX => {
                self.cmos.select(byte);
                false
            }
            CMOS_DATA => {
                self.cmos.write(byte);
                false
            }
            _ => false,
        }
    }

    /// An IN: fills `data`.
    pub(crate) fn read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            COM1..COM1_END => {
                let v = self.com1.read((port - COM1) as u8);
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            // No keyboard: the status and data registers read 0.
            I8042_DATA | I8042_COMMAND => data.fill(0),
            CMOS_DATA => {
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = self.cmos.read();
                }
            }
            _ => data.fill(0xff),
        }
    }
}
