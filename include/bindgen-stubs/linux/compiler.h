/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Empty on purpose. The uapi headers include <linux/compiler.h>, which
 * scripts/headers_install.sh strips when it installs them for userspace. rkvm generates
 * its Rust view of <linux/kvm.h> from the kernel's uapi sources, as userspace sees them,
 * so this stub takes the place of the stripped include and of its stripped annotations.
 */
#ifndef RKVM_BINDGEN_COMPILER_H
#define RKVM_BINDGEN_COMPILER_H
/* headers_install.sh deletes these annotations; so do we. */
#define __user
#define __force
#define __iomem
#endif
