// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm's C shim: plain functions over kernel interfaces that are macros, inline functions
 * or not yet wrapped by the Rust `kernel` crate. Each function is small and does one thing;
 * the Rust side (rust/sys/) gives them safe types. Declarations: include/rkvm_shim.h.
 */
#include <linux/module.h>
#include "rkvm_shim.h"
