// SPDX-License-Identifier: GPL-2.0

//! Rate-limited kernel log messages, for every message a guest or a user can cause at
//! will (failed VM entries, unhandled exits, refused ioctls).
//!
//! Each call site of [`pr_warn_ratelimited!`] (or its `pr_err`/`pr_info` siblings) owns a
//! [`RateLimit`]: at most [`BURST`] messages per [`INTERVAL_NS`], the same budget as the
//! kernel's `printk_ratelimited()` (10 per 5 s). When a new interval opens after messages
//! were dropped, one line says how many. The state is lock-free (two atomics), so the
//! macros work anywhere, including inside a VMX window with interrupts off; a race at an
//! interval boundary can let a message or two more through, never block.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Length of one interval.
pub(crate) const INTERVAL_NS: u64 = 5_000_000_000;
/// Messages allowed per interval.
pub(crate) const BURST: u32 = 10;

/// One call site's budget.
pub(crate) struct RateLimit {
    /// Start of the current interval (monotonic ns); 0 before the first message.
    begin: AtomicU64,
    /// Messages asked for in the current interval.
    asked: AtomicU32,
}

impl RateLimit {
    /// A fresh budget.
    pub(crate) const fn new() -> Self {
        Self {
            begin: AtomicU64::new(0),
            asked: AtomicU32::new(0),
        }
    }

    /// Whether this message may be printed. `Some(n)` also reports `n` messages dropped
    /// in the interval that just ended (0 when none were).
    pub(crate) fn check(&self) -> Option<u32> {
        self.check_at(super::wait::now_ns())
    }

    fn check_at(&self, now: u64) -> Option<u32> {
        let begin = self.begin.load(Ordering::Relaxed);
        let mut dropped = 0;
        if begin == 0 || now.wrapping_sub(begin) >= INTERVAL_NS {
            // Only the caller that moves the interval forward resets the count.
            if self
                .begin
                .compare_exchange(begin, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                dropped = self.asked.swap(0, Ordering::Relaxed).saturating_sub(BURST);
            }
        }
        let n = self.asked.fetch_add(1, Ordering::Relaxed);
        if n == u32::MAX {
            // Never wrap back into the budget.
            self.asked.store(u32::MAX, Ordering::Relaxed);
        }
        (n < BURST).then_some(dropped)
    }
}

/// `pr_warn!` at most [`BURST`] times per [`INTERVAL_NS`] from this call site.
macro_rules! pr_warn_ratelimited {
    ($($arg:tt)*) => {
        $crate::sys::ratelimit::__ratelimited!(pr_warn, $($arg)*)
    };
}

/// `pr_err!`, rate-limited as [`pr_warn_ratelimited!`].
macro_rules! pr_err_ratelimited {
    ($($arg:tt)*) => {
        $crate::sys::ratelimit::__ratelimited!(pr_err, $($arg)*)
    };
}

/// `pr_info!`, rate-limited as [`pr_warn_ratelimited!`].
#[allow(unused_macros)]
macro_rules! pr_info_ratelimited {
    ($($arg:tt)*) => {
        $crate::sys::ratelimit::__ratelimited!(pr_info, $($arg)*)
    };
}

/// The shared body: a static budget per expansion, i.e. per call site.
macro_rules! __ratelimited {
    ($pr:ident, $($arg:tt)*) => {{
        static RL: $crate::sys::ratelimit::RateLimit = $crate::sys::ratelimit::RateLimit::new();
        if let Some(dropped) = RL.check() {
            if dropped != 0 {
                ::kernel::prelude::$pr!("{} messages like the next one suppressed\n", dropped);
            }
            ::kernel::prelude::$pr!($($arg)*);
        }
    }};
}

#[allow(unused_imports)]
pub(crate) use {__ratelimited, pr_err_ratelimited, pr_info_ratelimited, pr_warn_ratelimited};
