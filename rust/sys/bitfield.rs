// SPDX-License-Identifier: GPL-2.0

//! `bitfield!`: a named view of a hardware word (exit qualifications, event formats), so
//! that code says `q.gpr()` instead of `(q >> 8) & 15`.
//!
//! ```ignore
//! bitfield! {
//!     /// MOV DR exit qualification.
//!     pub(crate) struct DrQual(u64) {
//!         fields { dr: 0..=2, gpr: 8..=11 }
//!         flags { to_gpr: 4 }
//!     }
//! }
//! ```
//!
//! A field reads as the word's type, shifted down; a flag reads as `bool`. Widths are
//! checked at compile time (a field must fit in the word and be narrower than it).

macro_rules! bitfield {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($t:ty) {
            fields { $( $(#[$fmeta:meta])* $field:ident : $lo:literal ..= $hi:literal ),* $(,)? }
            flags { $( $(#[$gmeta:meta])* $flag:ident : $bit:literal ),* $(,)? }
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        $vis struct $name(pub(crate) $t);

        impl $name {
            $(
                $(#[$fmeta])*
                #[inline]
                pub(crate) const fn $field(self) -> $t {
                    const _: () = assert!($lo <= $hi && $hi - $lo + 1 < <$t>::BITS);
                    (self.0 >> $lo) & ((1 << ($hi - $lo + 1)) - 1)
                }
            )*
            $(
                $(#[$gmeta])*
                #[inline]
                pub(crate) const fn $flag(self) -> bool {
                    const _: () = assert!($bit < <$t>::BITS);
                    self.0 & (1 << $bit) != 0
                }
            )*
        }
    };
}

pub(crate) use bitfield;
