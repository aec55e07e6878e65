// SPDX-License-Identifier: GPL-2.0

//! Short C strings built on the stack from text and decimal numbers: the names of new
//! fds and debugfs directories, made on every VM and vCPU creation without an allocation
//! or a pass through `core::fmt`.

use kernel::prelude::*;

/// Bytes of a name, its terminating NUL included.
const CAP: usize = 32;

/// A NUL-terminated name of at most `CAP - 1` bytes.
///
/// # Invariants
///
/// `buf[..len]` holds no NUL and `buf[len]` is NUL (`len < CAP`).
pub(crate) struct ShortName {
    buf: [u8; CAP],
    len: usize,
}

impl ShortName {
    /// `text` followed by the decimal `n`; `EINVAL` if that does not fit.
    pub(crate) fn of(text: &str, n: u64) -> Result<Self> {
        // INVARIANT: Empty, and the buffer is all NULs.
        let mut s = Self {
            buf: [0; CAP],
            len: 0,
        };
        s.text(text)?;
        s.num(n)?;
        Ok(s)
    }

    /// Appends `text` (no NUL in it).
    pub(crate) fn text(&mut self, text: &str) -> Result<&mut Self> {
        for &b in text.as_bytes() {
            self.push(b)?;
        }
        Ok(self)
    }

    /// Appends the decimal digits of `n`.
    pub(crate) fn num(&mut self, n: u64) -> Result<&mut Self> {
        // u64::MAX has 20 digits.
        let mut digits = [0u8; 20];
        let mut first = digits.len();
        let mut v = n;
        while let Some(i) = first.checked_sub(1) {
            first = i;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0'.wrapping_add((v % 10) as u8);
            }
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &d in digits.get(first..).unwrap_or(&[]) {
            self.push(d)?;
        }
        Ok(self)
    }

    fn push(&mut self, b: u8) -> Result {
        // One byte stays for the NUL.
        if b == 0 || self.len >= CAP - 1 {
            return Err(EINVAL);
        }
        *self.buf.get_mut(self.len).ok_or(EINVAL)? = b;
        // INVARIANT: `b` is not NUL, and the byte after it is NUL: `len` only grows, so
        // nothing was written there yet.
        self.len = self.len.saturating_add(1);
        Ok(())
    }

    /// The name.
    pub(crate) fn as_cstr(&self) -> &CStr {
        // By the invariant this always succeeds; an empty name otherwise.
        self.buf
            .get(..=self.len)
            .and_then(|b| CStr::from_bytes_with_nul(b).ok())
            .unwrap_or(c"")
    }
}
