// SPDX-License-Identifier: GPL-2.0
/*
 * The full in-kernel irqchip: KVM_CREATE_IRQCHIP's 8259 pair and I/O APIC beside the local
 * APICs (arch/x86/kvm/i8259.c, ioapic.c, irq.c; x86.c kvm_arch_vm_ioctl).
 *
 * Protocol: KVM_IRQ_LINE and KVM_GET/SET_IRQCHIP refused (ENXIO) without it;
 * KVM_CREATE_IRQCHIP refused after a vCPU exists (EINVAL) and a second time (EEXIST), and
 * the split irqchip after it (EEXIST); the power-on state of the three chips; bad chip ids
 * (EINVAL); KVM_SET/GET_IRQCHIP round trips of unusual states; KVM_IRQ_LINE_STATUS's
 * results through the default routing (a GSI reaches both the PIC and the I/O APIC:
 * delivered, deasserted on both, coalesced, unrouted); KVM_INTERRUPT refused (ENXIO); no
 * directed EOI in the local APIC's version; GSI routing with irqchip entries and KVM's
 * errnos.
 *
 * Resampling irqfds (KVM_IRQFD_FLAG_RESAMPLE): refused without the in-kernel I/O APIC
 * (EINVAL) and with a resamplefd that is not an eventfd (EBADF); a signal asserts a
 * level-triggered I/O APIC pin, the resamplefd stays quiet while the interrupt is in
 * service and is signalled at its EOI, when the line drops (Remote IRR clear, no second
 * delivery), and the next signal delivers again.
 *
 * KVM_SET_VAPIC_ADDR (EINVAL without an in-kernel APIC or outside guest memory): before
 * each entry the page holds TPR, and TPR written there by the guest reaches the APIC at
 * the next exit. KVM_TPR_ACCESS_REPORTING (EINVAL for flags): xAPIC TPR accesses exit
 * with KVM_EXIT_TPR_ACCESS, the instruction's RIP and the direction.
 *
 * The RTC's EOI tracking (GSI 8): while the vCPU that took the last KVM_IRQ_LINE_STATUS
 * edge has not EOI'd it, the next is reported coalesced (0) and not sent; after the EOI
 * it is delivered.
 *
 * Split irqchip: the EOI of a level-triggered MSI routed from a GSI below the reserved
 * I/O APIC pins exits to userspace (KVM_EXIT_IOAPIC_EOI with the vector); an edge one
 * does not.
 *
 * From the guest (32-bit protected mode): the guest initializes both PICs (ICW1-4, OCW1),
 * writes and reads the master's IMR with string I/O (no exit to userspace),
 * and takes an edge interrupt from KVM_IRQ_LINE through the master as ExtINT, EOIs it
 * (ISR clear after), then programs an I/O APIC pin as level-triggered: Remote IRR is set
 * while the interrupt is in service, the EOI of a line still asserted delivers it again,
 * and once the line is low Remote IRR stays clear. Last, a KVM_IRQ_LINE from another
 * thread wakes the guest from HLT through the PIC.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <time.h>

#include "lib/rkvm_test.h"

#define P_VAL 0xc0
#define P_VEC 0xc1
#define P_MARK 0xc2
#define P_DONE 0xc3

#define APIC "0xfee00"
#define IOAPIC "0xfec00"
#define FLAG GUEST_DATA_GPA

#define OUTV(port) "out %eax, $" XSTR(port) "\n"
#define MARK(n) "mov $" #n ", %eax\n" OUTV(P_MARK)
#define OUTB(port, v) "mov $" #v ", %al\n" "out %al, $" #port "\n"

#define WAIT_FLAG(n) GUEST_WAIT_FLAG(FLAG, n)

/* Reads I/O APIC redirection entry 5 (low half) and reports it. */
#define REDIR5_OUT "movl $0x1a, " IOAPIC "000\n" "mov " IOAPIC "010, %eax\n" OUTV(P_VAL)

GUEST_CODE(chip_guest, 32,
	/* Master: edge, cascade, vectors 0x20-0x27, 8086 mode; only IRQ 3 unmasked. */
	OUTB(0x20, 0x11) OUTB(0x21, 0x20) OUTB(0x21, 0x04) OUTB(0x21, 0x01) OUTB(0x21, 0xf7)
	/* Slave: vectors 0x28-0x2f, cascade identity 2, all masked. */
	OUTB(0xa0, 0x11) OUTB(0xa1, 0x28) OUTB(0xa1, 0x02) OUTB(0xa1, 0x01) OUTB(0xa1, 0xff)
	"xor %eax, %eax\n"
	"in $0x21, %al\n" OUTV(P_VAL)
	/* String I/O to the master's IMR: REP OUTSB of 0xaa, 0xf7, then INSB reads it. */
	"movl $0xf7aa, " XSTR(FLAG) "+0x10\n"
	"movl $0, " XSTR(FLAG) "+0x20\n"
	"mov $" XSTR(FLAG) "+0x10, %esi\n"
	"mov $" XSTR(FLAG) "+0x20, %edi\n"
	"mov $2, %ecx\n"
	"mov $0x21, %dx\n"
	"rep outsb\n"
	"insb\n"
	"mov " XSTR(FLAG) "+0x20, %eax\n" OUTV(P_VAL)
	"movl $0, " XSTR(FLAG) "\n"
	MARK(1)
	WAIT_FLAG(1)
	/* OCW3: read ISR. */
	OUTB(0x20, 0x0b)
	"xor %eax, %eax\n"
	"in $0x20, %al\n" OUTV(P_VAL)
	MARK(2)
	/* PIC fully masked; APIC on; I/O APIC pin 5: vector 0x45, level, physical APIC 0. */
	OUTB(0x21, 0xff)
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0x1b, " IOAPIC "000\n"
	"movl $0, " IOAPIC "010\n"
	"movl $0x1a, " IOAPIC "000\n"
	"movl $0x8045, " IOAPIC "010\n"
	REDIR5_OUT
	MARK(3)
	WAIT_FLAG(2)
	REDIR5_OUT
	MARK(5)
	/* IRQ 3 through the PIC again, raised while the guest sleeps. */
	OUTB(0x21, 0xf7)
	MARK(6)
	WAIT_FLAG(1)
	MARK(7)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"pic_h:\n"
	"push %eax\n"
	"mov $0x23, %eax\n" OUTV(P_VEC)
	"incl " XSTR(FLAG) "\n"
	OUTB(0x20, 0x20)
	"pop %eax\n"
	"iret\n"
	"ioapic_h:\n"
	"push %eax\n"
	"mov $0x45, %eax\n" OUTV(P_VEC)
	REDIR5_OUT
	MARK(4)
	"incl " XSTR(FLAG) "\n"
	"movl $0, " APIC "0b0\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t pic_h[], ioapic_h[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, chip_guest, label)

GUEST_CODE(split_guest, 32,
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0, " XSTR(FLAG) "\n"
	MARK(1)
	WAIT_FLAG(1)
	MARK(2)
	WAIT_FLAG(1)
	MARK(3)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"msi55_h:\n"
	"push %eax\n"
	"mov $0x55, %eax\n" OUTV(P_VEC)
	"incl " XSTR(FLAG) "\n"
	"movl $0, " APIC "0b0\n"
	"pop %eax\n"
	"iret\n"
	"msi56_h:\n"
	"push %eax\n"
	"mov $0x56, %eax\n" OUTV(P_VEC)
	"incl " XSTR(FLAG) "\n"
	"movl $0, " APIC "0b0\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t msi55_h[], msi56_h[];

#define REDIR7_OUT "movl $0x1e, " IOAPIC "000\n" "mov " IOAPIC "010, %eax\n" OUTV(P_VAL)

GUEST_CODE(resample_guest, 32,
	/* GSI 7 also reaches PIC pin 7 (KVM's default routing): mask the PICs. */
	OUTB(0x21, 0xff) OUTB(0xa1, 0xff)
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0x1f, " IOAPIC "000\n"
	"movl $0, " IOAPIC "010\n"
	"movl $0x1e, " IOAPIC "000\n"
	"movl $0x8047, " IOAPIC "010\n"
	"movl $0, " XSTR(FLAG) "\n"
	MARK(1)
	WAIT_FLAG(1)
	REDIR7_OUT
	MARK(2)
	WAIT_FLAG(1)
	MARK(3)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"lvl47_h:\n"
	"push %eax\n"
	"mov $0x47, %eax\n" OUTV(P_VEC)
	"incl " XSTR(FLAG) "\n"
	"movl $0, " APIC "0b0\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t lvl47_h[];

/*
 * The RTC's pin (GSI 8), edge-triggered, vector 0x48, to APIC 0. The handler reports the
 * vector and counts in FLAG, and does not EOI: the code after each wait does, once the
 * host has looked.
 */
GUEST_CODE(rtc_guest, 32,
	/* GSI 8 also reaches PIC pin 8 (KVM's default routing): mask the PICs. */
	OUTB(0x21, 0xff) OUTB(0xa1, 0xff)
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0x21, " IOAPIC "000\n"
	"movl $0, " IOAPIC "010\n"
	"movl $0x20, " IOAPIC "000\n"
	"movl $0x48, " IOAPIC "010\n"
	"movl $0, " XSTR(FLAG) "\n"
	MARK(1)
	WAIT_FLAG(1)
	"sti\n"
	MARK(2)
	"movl $0, " APIC "0b0\n"
	MARK(3)
	WAIT_FLAG(1)
	"movl $0, " APIC "0b0\n"
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"rtc48_h:\n"
	"push %eax\n"
	"mov $0x48, %eax\n" OUTV(P_VEC)
	"incl " XSTR(FLAG) "\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t rtc48_h[];

#define VAPIC_GPA 0x5000

GUEST_CODE(vapic_guest, 32,
	/* The page is kept up to date only while the APIC is enabled (as KVM). */
	"movl $0x1ff, " APIC "0f0\n"
	"tpr_w: movl $0x20, " APIC "080\n"
	"tpr_r: mov " APIC "080, %eax\n"
	/*
	 * The page is where TPR lives for the hypervisor now (each exit takes it from
	 * there), so it gets the value too, as a kvmvapic guest keeps it.
	 */
	"movb $0x20, " XSTR(VAPIC_GPA) "\n"
	MARK(9)
	/* The word the hypervisor wrote before this entry. */
	"mov " XSTR(VAPIC_GPA) ", %eax\n" OUTV(P_VAL)
	/* TPR 0x30 through the page; the next exit takes it to the APIC. */
	"movb $0x30, " XSTR(VAPIC_GPA) "\n"
	MARK(1)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n");
extern const uint8_t tpr_w[], tpr_r[];

static int irq_line_status(int vm_fd, uint32_t gsi, uint32_t level, int *status)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level };
	int r = ioctl(vm_fd, KVM_IRQ_LINE_STATUS, &l);

	*status = l.status;
	return r;
}

static void irq_line(int vm_fd, uint32_t gsi, uint32_t level)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level };

	if (ioctl(vm_fd, KVM_IRQ_LINE, &l))
		BAIL("KVM_IRQ_LINE");
}

static int get_chip(int vm_fd, uint32_t id, struct kvm_irqchip *c)
{
	memset(c, 0, sizeof(*c));
	c->chip_id = id;
	return ioctl(vm_fd, KVM_GET_IRQCHIP, c);
}

static void protocol(void)
{
	struct vm vm = vm_create();
	struct kvm_irq_level l = { .irq = 4, .level = 1 };
	struct kvm_irqchip c, c2;
	struct kvm_interrupt intr = { .irq = 0x30 };
	struct kvm_lapic_state st;
	struct kvm_enable_cap split = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };
	struct vcpu v;
	int i, ok, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
	uint32_t ver;

	tap_ok(ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) == 1 &&
	       ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_INJECT_STATUS) == 1,
	       "KVM_CAP_IRQCHIP and KVM_CAP_IRQ_INJECT_STATUS");
	CHECK_ERRNO(vm.fd, KVM_IRQ_LINE, &l, ENXIO, "KVM_IRQ_LINE without an irqchip");
	c.chip_id = 0;
	CHECK_ERRNO(vm.fd, KVM_GET_IRQCHIP, &c, ENXIO, "KVM_GET_IRQCHIP without an irqchip");
	CHECK_ERRNO(vm.fd, KVM_SET_IRQCHIP, &c, ENXIO, "KVM_SET_IRQCHIP without an irqchip");
	v = vcpu_create(&vm, 0);
	CHECK_ERRNO(vm.fd, KVM_CREATE_IRQCHIP, 0, EINVAL, "KVM_CREATE_IRQCHIP after a vCPU exists");
	close(v.fd);
	close(vm.fd);

	vm.fd = ioctl(vm.sys_fd, KVM_CREATE_VM, 0);
	if (vm.fd < 0)
		BAIL("KVM_CREATE_VM");
	tap_ok(ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0) == 0, "KVM_CREATE_IRQCHIP");
	CHECK_ERRNO(vm.fd, KVM_CREATE_IRQCHIP, 0, EEXIST, "KVM_CREATE_IRQCHIP twice");
	CHECK_ERRNO(vm.fd, KVM_ENABLE_CAP, &split, EEXIST, "KVM_CAP_SPLIT_IRQCHIP after it");

	ok = get_chip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &c) == 0;
	tap_ok(ok && c.chip.pic.elcr_mask == 0xf8 && c.chip.pic.imr == 0 && c.chip.pic.irr == 0 &&
	       c.chip.pic.init_state == 0 && c.chip.pic.irq_base == 0,
	       "PIC master at power-on: ELCR mask %#x, IMR %#x", c.chip.pic.elcr_mask,
	       c.chip.pic.imr);
	ok = get_chip(vm.fd, KVM_IRQCHIP_PIC_SLAVE, &c) == 0;
	tap_ok(ok && c.chip.pic.elcr_mask == 0xde, "PIC slave at power-on: ELCR mask %#x",
	       c.chip.pic.elcr_mask);
	ok = get_chip(vm.fd, KVM_IRQCHIP_IOAPIC, &c) == 0;
	for (i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
		ok &= c.chip.ioapic.redirtbl[i].bits == 0x10000;
	tap_ok(ok && c.chip.ioapic.base_address == 0xfec00000 && c.chip.ioapic.id == 0 &&
	       c.chip.ioapic.irr == 0,
	       "I/O APIC at power-on: base %#llx, every pin masked",
	       (unsigned long long)c.chip.ioapic.base_address);
	c.chip_id = 3;
	CHECK_ERRNO(vm.fd, KVM_GET_IRQCHIP, &c, EINVAL, "KVM_GET_IRQCHIP of chip 3");
	c.chip_id = 7;
	CHECK_ERRNO(vm.fd, KVM_SET_IRQCHIP, &c, EINVAL, "KVM_SET_IRQCHIP of chip 7");

	/* GSI 4 reaches PIC pin 4 (unmasked at power-on) and I/O APIC pin 4 (masked). */
	ok = irq_line_status(vm.fd, 4, 1, &s1) == 0;
	ok &= irq_line_status(vm.fd, 4, 0, &s2) == 0;
	ok &= irq_line_status(vm.fd, 4, 1, &s3) == 0;
	ok &= irq_line_status(vm.fd, 200, 1, &s4) == 0;
	tap_ok(ok && s1 == 1 && s2 == 2 && s3 == 0 && s4 == -1,
	       "KVM_IRQ_LINE_STATUS: raised %d (want 1), lowered %d (2), raised again while "
	       "latched %d (0), unrouted GSI %d (-1)", s1, s2, s3, s4);
	ok = get_chip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &c) == 0;
	tap_ok(ok && c.chip.pic.irr == 0x10, "the edge is latched in the master's IRR (%#x)",
	       c.chip.pic.irr);
	ok = get_chip(vm.fd, KVM_IRQCHIP_IOAPIC, &c) == 0;
	tap_ok(ok && c.chip.ioapic.irr == 0x10, "and in the I/O APIC's IRR, masked (%#x)",
	       c.chip.ioapic.irr);

	/* Round trips: every field of a PIC, unusual values; I/O APIC entries as given. */
	memset(&c, 0, sizeof(c));
	c.chip_id = KVM_IRQCHIP_PIC_MASTER;
	c.chip.pic = (struct kvm_pic_state){ .last_irr = 0x81, .irr = 0x42, .imr = 0xff,
					     .isr = 0x10, .priority_add = 5, .irq_base = 0x68,
					     .read_reg_select = 1, .special_mask = 1,
					     .auto_eoi = 1, .rotate_on_auto_eoi = 1,
					     .special_fully_nested_mode = 1, .init4 = 1,
					     .elcr = 0x08, .elcr_mask = 0xf8 };
	ok = ioctl(vm.fd, KVM_SET_IRQCHIP, &c) == 0;
	ok &= get_chip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &c2) == 0;
	tap_ok(ok && !memcmp(&c.chip.pic, &c2.chip.pic, sizeof(c.chip.pic)),
	       "KVM_SET/GET_IRQCHIP round trip of the PIC master (IRR %#x, IMR %#x, base %#x)",
	       c2.chip.pic.irr, c2.chip.pic.imr, c2.chip.pic.irq_base);
	memset(&c, 0, sizeof(c));
	c.chip_id = KVM_IRQCHIP_IOAPIC;
	c.chip.ioapic.base_address = 0xfec00000;
	c.chip.ioapic.id = 5;
	c.chip.ioapic.ioregsel = 0x13;
	c.chip.ioapic.irr = 1u << 7;
	for (i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
		c.chip.ioapic.redirtbl[i].bits = 0x10000 | (uint64_t)(i + 1) << 56 | (0x30 + i);
	c.chip.ioapic.redirtbl[9].bits |= 0x4000; /* Remote IRR, as userspace may load it */
	ok = ioctl(vm.fd, KVM_SET_IRQCHIP, &c) == 0;
	ok &= get_chip(vm.fd, KVM_IRQCHIP_IOAPIC, &c2) == 0;
	ok &= !memcmp(&c.chip.ioapic, &c2.chip.ioapic, sizeof(c.chip.ioapic));
	tap_ok(ok, "KVM_SET/GET_IRQCHIP round trip of the I/O APIC (id %u, IRR %#x, entry 9 %#llx)",
	       c2.chip.ioapic.id, c2.chip.ioapic.irr,
	       (unsigned long long)c2.chip.ioapic.redirtbl[9].bits);

	/* GSI routing with irqchip entries. */
	{
		struct {
			struct kvm_irq_routing r;
			struct kvm_irq_routing_entry e[3];
		} rt;

		memset(&rt, 0, sizeof(rt));
		rt.r.nr = 2;
		rt.e[0] = (struct kvm_irq_routing_entry){ .gsi = 30, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = 23 } };
		rt.e[1] = (struct kvm_irq_routing_entry){ .gsi = 30, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_PIC_SLAVE, .pin = 7 } };
		tap_ok(ioctl(vm.fd, KVM_SET_GSI_ROUTING, &rt) == 0,
		       "KVM_SET_GSI_ROUTING: one GSI to an I/O APIC pin and a PIC pin");
		ok = irq_line_status(vm.fd, 4, 1, &s1) == 0;
		tap_ok(ok && s1 == -1, "GSI 4 has no route any more (%d)", s1);
		rt.e[1].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		rt.e[1].u.irqchip.pin = 1;
		CHECK_ERRNO(vm.fd, KVM_SET_GSI_ROUTING, &rt, EINVAL, "a GSI to the same chip twice");
		rt.e[1] = (struct kvm_irq_routing_entry){ .gsi = 30, .type = KVM_IRQ_ROUTING_MSI,
			.u.msi = { .address_lo = 0xfee00000, .data = 0x31 } };
		CHECK_ERRNO(vm.fd, KVM_SET_GSI_ROUTING, &rt, EINVAL, "a GSI to an irqchip and an MSI");
		rt.r.nr = 1;
		rt.e[0].u.irqchip.pin = 24;
		CHECK_ERRNO(vm.fd, KVM_SET_GSI_ROUTING, &rt, EINVAL, "I/O APIC pin 24");
		rt.e[0].u.irqchip.irqchip = KVM_IRQCHIP_PIC_MASTER;
		rt.e[0].u.irqchip.pin = 8;
		CHECK_ERRNO(vm.fd, KVM_SET_GSI_ROUTING, &rt, EINVAL, "PIC pin 8");
		rt.e[0].u.irqchip.irqchip = 3;
		rt.e[0].u.irqchip.pin = 0;
		CHECK_ERRNO(vm.fd, KVM_SET_GSI_ROUTING, &rt, EINVAL, "irqchip 3");
	}

	v = vcpu_create(&vm, 0);
	CHECK_ERRNO(v.fd, KVM_INTERRUPT, &intr, ENXIO, "KVM_INTERRUPT with the in-kernel PIC");
	vcpu_set_supported_cpuid(&vm, &v);
	ok = ioctl(v.fd, KVM_GET_LAPIC, &st) == 0;
	memcpy(&ver, st.regs + 0x30, 4);
	tap_ok(ok && ver == 0x50014,
	       "the local APIC exists, and offers no directed EOI with the in-kernel I/O APIC "
	       "(version %#x)", ver);
	close(v.fd);
	close(vm.fd);
	close(vm.sys_fd);
}

static void on_alarm(int sig)
{
	printf("# watchdog: no exit for check %d within the limit (HLT never woken?)\n",
	       tap_run + 1);
	fflush(stdout);
	_exit(1);
}

struct raiser {
	int vm_fd;
	int done;
};

/* Raises then lowers GSI 3 a while after the guest went to sleep. */
static void *raise_later(void *p)
{
	struct raiser *r = p;
	struct timespec ts = { .tv_nsec = 50 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	irq_line(r->vm_fd, 3, 1);
	irq_line(r->vm_fd, 3, 0);
	r->done = 1;
	return NULL;
}

/* Guest memory and one vCPU (the host's CPUID) running CODE in protected mode. */
static void guest_start(struct guest *g, const uint8_t *code, size_t len)
{
	g->mem = vm_add_memory(&g->vm, 0, 0, GUEST_LOW_SIZE, 0);
	g->v = vcpu_create(&g->vm, 0);
	vcpu_set_supported_cpuid(&g->vm, &g->v);
	memcpy(g->mem + GUEST_CODE_GPA, code, len);
	vcpu_set_protected_mode(&g->v, g->mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
}

static void guest(void)
{
	struct guest g;
	struct raiser r;
	pthread_t t;

	g.vm = vm_create();
	if (ioctl(g.vm.fd, KVM_CREATE_IRQCHIP, 0))
		BAIL("KVM_CREATE_IRQCHIP");
	if (ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	guest_start(&g, chip_guest, chip_guest_end - chip_guest);
	idt_set_gate32(g.mem, 0x23, ADDR(pic_h));
	idt_set_gate32(g.mem, 0x45, ADDR(ioapic_h));

	expect_out(&g.v, P_VAL, 0xf7, "the master's IMR after ICW1-4 and OCW1");
	expect_out(&g.v, P_VAL, 0xf7, "REP OUTSB and INSB on the master's port complete in the kernel");
	expect_out(&g.v, P_MARK, 1, "PICs initialized");
	irq_line(g.vm.fd, 3, 1);
	irq_line(g.vm.fd, 3, 0);
	expect_out(&g.v, P_VEC, 0x23, "an edge on GSI 3 arrives through the master at vector 0x23");
	expect_out(&g.v, P_VAL, 0, "the master's ISR is clear after the EOI");
	expect_out(&g.v, P_MARK, 2, "after the PIC interrupt");
	expect_out(&g.v, P_VAL, 0x8045, "I/O APIC entry 5 as programmed, Remote IRR clear");
	expect_out(&g.v, P_MARK, 3, "I/O APIC programmed");
	irq_line(g.vm.fd, 5, 1);
	expect_out(&g.v, P_VEC, 0x45, "a level on GSI 5 arrives through the I/O APIC at vector 0x45");
	expect_out(&g.v, P_VAL, 0xc045, "Remote IRR set while it is in service");
	expect_out(&g.v, P_MARK, 4, "before the EOI, line kept high");
	expect_out(&g.v, P_VEC, 0x45, "the EOI of a line still high delivers it again");
	expect_out(&g.v, P_VAL, 0xc045, "Remote IRR set again");
	expect_out(&g.v, P_MARK, 4, "before the second EOI, line now low");
	irq_line(g.vm.fd, 5, 0);
	expect_out(&g.v, P_VAL, 0x8045, "Remote IRR clear after the EOI of a low line");
	expect_out(&g.v, P_MARK, 5, "no third delivery");
	expect_out(&g.v, P_MARK, 6, "IRQ 3 unmasked again");
	r.vm_fd = g.vm.fd;
	r.done = 0;
	if (pthread_create(&t, NULL, raise_later, &r))
		BAIL("pthread_create");
	expect_out(&g.v, P_VEC, 0x23, "KVM_IRQ_LINE from another thread wakes the guest from HLT");
	pthread_join(t, NULL);
	expect_out(&g.v, P_MARK, 7, "after the wake-up");
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

static uint64_t efd_count(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static void resample(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };
	int efd = eventfd(0, EFD_NONBLOCK), rfd = eventfd(0, EFD_NONBLOCK);
	struct kvm_irqfd irqfd = { .fd = efd, .gsi = 7, .flags = KVM_IRQFD_FLAG_RESAMPLE,
				   .resamplefd = rfd };
	uint64_t one = 1;
	struct guest g;

	if (efd < 0 || rfd < 0)
		BAIL("eventfd");
	g.vm = vm_create();
	tap_ok(ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD_RESAMPLE) == 1,
	       "KVM_CAP_IRQFD_RESAMPLE");
	if (ioctl(g.vm.fd, KVM_ENABLE_CAP, &cap))
		BAIL("KVM_CAP_SPLIT_IRQCHIP");
	CHECK_ERRNO(g.vm.fd, KVM_IRQFD, &irqfd, EINVAL, "a resampling irqfd with a split irqchip");
	close(g.vm.fd);
	close(g.vm.sys_fd);

	g.vm = vm_create();
	if (ioctl(g.vm.fd, KVM_CREATE_IRQCHIP, 0) || ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_CREATE_IRQCHIP");
	irqfd.resamplefd = 1000;
	CHECK_ERRNO(g.vm.fd, KVM_IRQFD, &irqfd, EBADF, "a resamplefd that is no file");
	irqfd.resamplefd = rfd;
	tap_ok(ioctl(g.vm.fd, KVM_IRQFD, &irqfd) == 0, "KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE");
	guest_start(&g, resample_guest, resample_guest_end - resample_guest);
	idt_set_gate32(g.mem, 0x47, GUEST_ADDR(GUEST_CODE_GPA, resample_guest, lvl47_h));

	expect_out(&g.v, P_MARK, 1, "I/O APIC pin 7 level-triggered");
	if (write(efd, &one, sizeof(one)) != sizeof(one))
		BAIL("write eventfd");
	expect_out(&g.v, P_VEC, 0x47, "a signal on the irqfd asserts GSI 7");
	tap_ok(efd_count(rfd) == 0, "the resamplefd is quiet while the interrupt is in service");
	expect_out(&g.v, P_VAL, 0x8047, "after the EOI the line is low: Remote IRR clear");
	tap_ok(efd_count(rfd) == 1, "the EOI signalled the resamplefd");
	expect_out(&g.v, P_MARK, 2, "no second delivery");
	if (write(efd, &one, sizeof(one)) != sizeof(one))
		BAIL("write eventfd");
	expect_out(&g.v, P_VEC, 0x47, "the next signal delivers again");
	expect_out(&g.v, P_MARK, 3, "after it");
	tap_ok(efd_count(rfd) == 1, "and its EOI signalled the resamplefd again");
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "resample guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
	close(efd);
	close(rfd);
}

/*
 * KVM's RTC EOI tracking: a KVM_IRQ_LINE_STATUS edge on GSI 8 is reported coalesced (0)
 * and not delivered while the vCPU that took the last one has not EOI'd it; after the EOI
 * the next one is delivered (1).
 */
static void rtc(void)
{
	int st_up = -2, st_down = -2;
	struct guest g;

	g.vm = vm_create();
	if (ioctl(g.vm.fd, KVM_CREATE_IRQCHIP, 0) || ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_CREATE_IRQCHIP");
	guest_start(&g, rtc_guest, rtc_guest_end - rtc_guest);
	idt_set_gate32(g.mem, 0x48, GUEST_ADDR(GUEST_CODE_GPA, rtc_guest, rtc48_h));

	expect_out(&g.v, P_MARK, 1, "RTC: I/O APIC pin 8 edge-triggered, vector 0x48");
	irq_line_status(g.vm.fd, 8, 1, &st_up);
	irq_line_status(g.vm.fd, 8, 0, &st_down);
	tap_ok(st_up == 1 && st_down == 1, "RTC: the first edge is delivered (%d, lowered %d)",
	       st_up, st_down);
	expect_out(&g.v, P_VEC, 0x48, "RTC: the guest takes it");
	expect_out(&g.v, P_MARK, 2, "RTC: its handler returned without an EOI");
	irq_line_status(g.vm.fd, 8, 1, &st_up);
	irq_line_status(g.vm.fd, 8, 0, &st_down);
	tap_ok(st_up == 0 && st_down == 1,
	       "RTC: before the EOI the next edge is coalesced (%d, want 0; lowered %d)", st_up,
	       st_down);
	expect_out(&g.v, P_MARK, 3, "RTC: nothing was sent: after its EOI the guest goes on");
	irq_line_status(g.vm.fd, 8, 1, &st_up);
	irq_line_status(g.vm.fd, 8, 0, &st_down);
	tap_ok(st_up == 1 && st_down == 1, "RTC: after the EOI the next edge is delivered (%d)",
	       st_up);
	expect_out(&g.v, P_VEC, 0x48, "RTC: the guest takes it");
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "RTC guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

static void vapic(void)
{
	struct kvm_vapic_addr va = { .vapic_addr = 0 };
	struct kvm_tpr_access_ctl tac = { .enabled = 1, .flags = 1 };
	struct kvm_lapic_state st;
	struct guest g = guest_create();
	uint64_t rip_w, rip_r;
	uint32_t tpr = 0;

	CHECK_ERRNO(g.v.fd, KVM_SET_VAPIC_ADDR, &va, EINVAL, "KVM_SET_VAPIC_ADDR without an in-kernel APIC");
	guest_destroy(&g);

	g.vm = vm_create();
	tap_ok(ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_VAPIC) == 1, "KVM_CAP_VAPIC");
	if (ioctl(g.vm.fd, KVM_CREATE_IRQCHIP, 0) || ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_CREATE_IRQCHIP");
	guest_start(&g, vapic_guest, vapic_guest_end - vapic_guest);
	tap_ok(ioctl(g.v.fd, KVM_SET_VAPIC_ADDR, &va) == 0, "KVM_SET_VAPIC_ADDR 0 (off)");
	va.vapic_addr = 0x80000000;
	CHECK_ERRNO(g.v.fd, KVM_SET_VAPIC_ADDR, &va, EINVAL, "a VAPIC page outside guest memory");
	va.vapic_addr = VAPIC_GPA;
	tap_ok(ioctl(g.v.fd, KVM_SET_VAPIC_ADDR, &va) == 0, "KVM_SET_VAPIC_ADDR %#x", VAPIC_GPA);
	CHECK_ERRNO(g.v.fd, KVM_TPR_ACCESS_REPORTING, &tac, EINVAL, "KVM_TPR_ACCESS_REPORTING with flags");
	tac.flags = 0;
	tap_ok(ioctl(g.v.fd, KVM_TPR_ACCESS_REPORTING, &tac) == 0, "KVM_TPR_ACCESS_REPORTING on");
	rip_w = GUEST_ADDR(GUEST_CODE_GPA, vapic_guest, tpr_w);
	rip_r = GUEST_ADDR(GUEST_CODE_GPA, vapic_guest, tpr_r);
	/*
	 * rkvm emulates every xAPIC access, so it reports both; KVM reports only what
	 * traps, and a CPU with TPR virtualization (FlexPriority) lets TPR accesses through
	 * without an exit. Either way a report names the instruction and the direction.
	 */
	{
		int n = 0, good = 1, rkvm = strstr(kvm_device(), "rkvm") != NULL;

		for (;;) {
			vcpu_run(&g.v);
			if (g.v.run->exit_reason != KVM_EXIT_TPR_ACCESS || n >= 2)
				break;
			good &= g.v.run->tpr_access.is_write == (n == 0) &&
				g.v.run->tpr_access.rip == (n == 0 ? rip_w : rip_r);
			n++;
		}
		tap_ok(good && (n == 2 || (!rkvm && n == 0)) && is_out(&g.v, P_MARK, 4),
		       "TPR accesses exit with KVM_EXIT_TPR_ACCESS: %d reported (write at %#llx, "
		       "then read at %#llx)%s", n, (unsigned long long)rip_w,
		       (unsigned long long)rip_r, good ? "" : ", with a wrong RIP or direction");
	}
	expect_out(&g.v, P_VAL, 0x20, "the VAPIC page holds TPR 0x20, nothing in service or requested");
	expect_out(&g.v, P_MARK, 1, "TPR 0x30 left in the VAPIC page");
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	memcpy(&tpr, st.regs + 0x80, 4);
	tap_ok(tpr == 0x30, "the APIC took TPR from the VAPIC page at the exit (%#x)", tpr);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "vapic guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

static void split(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };
	struct {
		struct kvm_irq_routing r;
		struct kvm_irq_routing_entry e[2];
	} rt;
	struct guest g;

	g.vm = vm_create();
	if (ioctl(g.vm.fd, KVM_ENABLE_CAP, &cap))
		BAIL("KVM_CAP_SPLIT_IRQCHIP");
	if (ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	memset(&rt, 0, sizeof(rt));
	rt.r.nr = 2;
	/* GSI 5: level-triggered (data bit 15, asserted bit 14), vector 0x55; GSI 6: edge. */
	rt.e[0] = (struct kvm_irq_routing_entry){ .gsi = 5, .type = KVM_IRQ_ROUTING_MSI,
		.u.msi = { .address_lo = 0xfee00000, .data = 0xc055 } };
	rt.e[1] = (struct kvm_irq_routing_entry){ .gsi = 6, .type = KVM_IRQ_ROUTING_MSI,
		.u.msi = { .address_lo = 0xfee00000, .data = 0x0056 } };
	if (ioctl(g.vm.fd, KVM_SET_GSI_ROUTING, &rt))
		BAIL("KVM_SET_GSI_ROUTING");
	guest_start(&g, split_guest, split_guest_end - split_guest);
	idt_set_gate32(g.mem, 0x55, GUEST_ADDR(GUEST_CODE_GPA, split_guest, msi55_h));
	idt_set_gate32(g.mem, 0x56, GUEST_ADDR(GUEST_CODE_GPA, split_guest, msi56_h));

	expect_out(&g.v, P_MARK, 1, "split irqchip guest ready");
	irq_line(g.vm.fd, 5, 1);
	expect_out(&g.v, P_VEC, 0x55, "KVM_IRQ_LINE on a level MSI route delivers it");
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_IOAPIC_EOI && g.v.run->eoi.vector == 0x55,
	       "its EOI exits to userspace's I/O APIC (%s, vector %#x)", exit_str(&g.v),
	       g.v.run->eoi.vector);
	irq_line(g.vm.fd, 5, 0);
	expect_out(&g.v, P_MARK, 2, "the guest goes on after the EOI exit");
	irq_line(g.vm.fd, 6, 1);
	irq_line(g.vm.fd, 6, 0);
	expect_out(&g.v, P_VEC, 0x56, "an edge MSI route delivers");
	expect_out(&g.v, P_MARK, 3, "its EOI does not exit");
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "split guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	alarm(120);
	tap_plan(89);
	protocol();
	guest();
	resample();
	rtc();
	vapic();
	split();
	tap_done();
}
