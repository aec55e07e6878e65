/* SPDX-License-Identifier: GPL-2.0 */
/* The C shim's functions, called from rust/sys/. */
#ifndef RKVM_SHIM_H
#define RKVM_SHIM_H
#endif
