// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor for x86-64, as an out-of-tree Rust-for-Linux module.

use kernel::prelude::*;

mod uapi;

module! {
    type: Rkvm,
    name: "rkvm",
    authors: ["rkvm developers"],
    description: "KVM-compatible hypervisor in Rust",
    license: "GPL",
}

struct Rkvm;

impl kernel::Module for Rkvm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_err!("no backend for this CPU yet\n");
        Err(ENODEV)
    }
}
