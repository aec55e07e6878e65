// SPDX-License-Identifier: GPL-2.0
//! The port I/O devices in userspace: COM1 (vm-superio's 8250, its interrupt an eventfd
//! registered as an irqfd) and the i8042's command port, whose reset command (0xfe) ends
//! the VM. Every other port reads as all ones and ignores writes; the PIC and the PIT
//! live in the hypervisor and never reach here.

use std::io::{self, Stdout};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

const COM1: u16 = 0x3f8;
const COM1_END: u16 = COM1 + 8;
const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

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
}

impl Pio {
    pub(crate) fn new(irq: EventFd) -> Self {
        Pio {
            com1: Serial::new(IrqLine(irq), io::stdout()),
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
            _ => data.fill(0xff),
        }
    }
}
