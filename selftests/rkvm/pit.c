// SPDX-License-Identifier: GPL-2.0
/*
 * The in-kernel 8254 PIT (arch/x86/kvm/i8254.c; x86.c kvm_arch_vm_ioctl).
 *
 * Protocol: the capabilities; KVM_CREATE_PIT2 refused without the in-kernel PIC (ENOENT)
 * and a second time (EEXIST, KVM_CREATE_PIT too); KVM_GET/SET_PIT(2) and
 * KVM_REINJECT_CONTROL refused without a PIT (ENXIO); the power-on state (no mode, the
 * largest count, gates); KVM_SET/GET_PIT2 and KVM_SET/GET_PIT round trips (counter 0's
 * load time kept, the others' restarted).
 *
 * From the guest (32-bit protected mode, in-kernel PIC): counter 2 as Linux calibrates
 * with it (gate through port 0x61, mode 0, a latched count that goes down, a read-back
 * status); counter 0 in mode 2 interrupting through the PIC three times, each waking the
 * guest from HLT (with KVM's default reinjection each tick waits for the EOI of the one
 * before); the state the guest programmed, seen by KVM_GET_PIT2; counter 0 in mode 0
 * interrupting once.
 */
#define _GNU_SOURCE
#include <signal.h>

#include "lib/rkvm_test.h"

#define P_VAL 0xc0
#define P_VEC 0xc1
#define P_MARK 0xc2
#define P_DONE 0xc3

#define FLAG GUEST_DATA_GPA

#define OUTV(port) "out %eax, $" XSTR(port) "\n"
#define MARK(n) "mov $" #n ", %eax\n" OUTV(P_MARK)
#define OUTB(port, v) "mov $" #v ", %al\n" "out %al, $" #port "\n"
/* Reads a 16-bit count (LSB then MSB) from counter port P into EAX. */
#define READ16(p) "in $" #p ", %al\n" "mov %al, %cl\n" "in $" #p ", %al\n" "mov %al, %ah\n" \
	"mov %cl, %al\n" "movzwl %ax, %eax\n"

#define WAIT_FLAG(n) GUEST_WAIT_FLAG(FLAG, n)

GUEST_CODE(pit_guest, 32,
	/* Counter 2: gate high, speaker off; mode 0, LSB then MSB, count 0xffff. */
	OUTB(0x61, 0x01)
	OUTB(0x43, 0xb0) OUTB(0x42, 0xff) OUTB(0x42, 0xff)
	/* Latch and read twice, a while apart. */
	OUTB(0x43, 0x80)
	READ16(0x42) OUTV(P_VAL)
	"mov $2000, %ecx\n"
	"3: loop 3b\n"
	OUTB(0x43, 0x80)
	READ16(0x42) OUTV(P_VAL)
	/* Read-back of counter 2's status only. */
	OUTB(0x43, 0xe8)
	"xor %eax, %eax\n"
	"in $0x42, %al\n" OUTV(P_VAL)
	MARK(1)
	/* PICs at 0x20/0x28; only IRQ 0 unmasked. */
	OUTB(0x20, 0x11) OUTB(0x21, 0x20) OUTB(0x21, 0x04) OUTB(0x21, 0x01) OUTB(0x21, 0xfe)
	OUTB(0xa0, 0x11) OUTB(0xa1, 0x28) OUTB(0xa1, 0x02) OUTB(0xa1, 0x01) OUTB(0xa1, 0xff)
	"movl $0, " XSTR(FLAG) "\n"
	/* Counter 0: mode 2, 11932 (10 ms). */
	OUTB(0x43, 0x34) OUTB(0x40, 0x9c) OUTB(0x40, 0x2e)
	WAIT_FLAG(3)
	MARK(2)
	/* Counter 0: mode 0, 1193 (1 ms): one interrupt. */
	OUTB(0x43, 0x30) OUTB(0x40, 0xa9) OUTB(0x40, 0x04)
	WAIT_FLAG(1)
	MARK(3)
	OUTB(0x21, 0xff)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"irq0_h:\n"
	"push %eax\n"
	"mov $0x20, %eax\n" OUTV(P_VEC)
	"incl " XSTR(FLAG) "\n"
	OUTB(0x20, 0x20)
	"pop %eax\n"
	"iret\n");
extern const uint8_t irq0_h[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, pit_guest, label)

static void protocol(void)
{
	struct vm vm = vm_create();
	struct kvm_pit_config cfg = { .flags = KVM_PIT_SPEAKER_DUMMY };
	struct kvm_pit_state2 s2, g2;
	struct kvm_pit_state s1, g1;
	struct kvm_reinject_control rc = { .pit_reinject = 0 };
	int i, ok;

	tap_ok(ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_PIT2) == 1 &&
	       ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_PIT_STATE2) == 1 &&
	       ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_REINJECT_CONTROL) == 1,
	       "KVM_CAP_PIT2, KVM_CAP_PIT_STATE2, KVM_CAP_REINJECT_CONTROL");
	CHECK_ERRNO(vm.fd, KVM_CREATE_PIT2, &cfg, ENOENT, "KVM_CREATE_PIT2 without an irqchip");
	CHECK_ERRNO(vm.fd, KVM_GET_PIT2, &s2, ENXIO, "KVM_GET_PIT2 without a PIT");
	CHECK_ERRNO(vm.fd, KVM_SET_PIT2, &s2, ENXIO, "KVM_SET_PIT2 without a PIT");
	CHECK_ERRNO(vm.fd, KVM_GET_PIT, &s1, ENXIO, "KVM_GET_PIT without a PIT");
	CHECK_ERRNO(vm.fd, KVM_REINJECT_CONTROL, &rc, ENXIO, "KVM_REINJECT_CONTROL without a PIT");
	if (ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0))
		BAIL("KVM_CREATE_IRQCHIP");
	tap_ok(ioctl(vm.fd, KVM_CREATE_PIT2, &cfg) == 0, "KVM_CREATE_PIT2 with the speaker port");
	CHECK_ERRNO(vm.fd, KVM_CREATE_PIT2, &cfg, EEXIST, "KVM_CREATE_PIT2 twice");
	CHECK_ERRNO(vm.fd, KVM_CREATE_PIT, 0, EEXIST, "KVM_CREATE_PIT after it");

	memset(&g2, 0xaa, sizeof(g2));
	ok = ioctl(vm.fd, KVM_GET_PIT2, &g2) == 0;
	for (i = 0; i < 3; i++)
		ok &= g2.channels[i].mode == 0xff && g2.channels[i].count == 0x10000 &&
		      g2.channels[i].gate == (i != 2);
	tap_ok(ok && g2.flags == 0 && g2.reserved[0] == 0 && g2.reserved[8] == 0,
	       "power-on: no mode (%#x), count %#x, gates %u %u %u, flags %#x, reserved zeroed",
	       g2.channels[0].mode, g2.channels[0].count, g2.channels[0].gate,
	       g2.channels[1].gate, g2.channels[2].gate, g2.flags);

	memset(&s2, 0, sizeof(s2));
	for (i = 0; i < 3; i++) {
		struct kvm_pit_channel_state *c = &s2.channels[i];

		c->count = 1000 + i;
		c->latched_count = 0x1234 + i;
		c->count_latched = 1;
		c->status_latched = 1;
		c->status = 0x30 + i;
		c->read_state = 3;
		c->write_state = 4;
		c->write_latch = 0x55;
		c->rw_mode = 3;
		c->mode = 0xff;
		c->bcd = 1;
		c->gate = 1;
		c->count_load_time = 123456789 + i;
	}
	s2.flags = KVM_PIT_FLAGS_SPEAKER_DATA_ON;
	ok = ioctl(vm.fd, KVM_SET_PIT2, &s2) == 0;
	ok &= ioctl(vm.fd, KVM_GET_PIT2, &g2) == 0;
	ok &= g2.channels[0].count_load_time == 123456789 && g2.channels[1].count_load_time != 123456790;
	for (i = 0; i < 3; i++)
		g2.channels[i].count_load_time = s2.channels[i].count_load_time;
	tap_ok(ok && !memcmp(&s2, &g2, sizeof(s2)),
	       "KVM_SET/GET_PIT2 round trip (flags %#x; counter 0's load time kept, the others' "
	       "restarted)", g2.flags);
	memset(&s1, 0, sizeof(s1));
	s1.channels[1].count = 0;
	s1.channels[1].mode = 3;
	s1.channels[1].rw_mode = 3;
	s1.channels[1].gate = 1;
	s1.channels[0].mode = 0xff;
	s1.channels[2].mode = 0xff;
	ok = ioctl(vm.fd, KVM_SET_PIT, &s1) == 0;
	ok &= ioctl(vm.fd, KVM_GET_PIT, &g1) == 0;
	tap_ok(ok && g1.channels[1].count == 0x10000 && g1.channels[1].mode == 3,
	       "KVM_SET/GET_PIT: a count of 0 is 0x10000 (%#x), mode %u", g1.channels[1].count,
	       g1.channels[1].mode);
	ok = ioctl(vm.fd, KVM_GET_PIT2, &g2) == 0;
	tap_ok(ok && g2.flags == KVM_PIT_FLAGS_SPEAKER_DATA_ON,
	       "KVM_SET_PIT leaves the flags (%#x)", g2.flags);
	tap_ok(ioctl(vm.fd, KVM_REINJECT_CONTROL, &rc) == 0, "KVM_REINJECT_CONTROL off");
	rc.pit_reinject = 1;
	tap_ok(ioctl(vm.fd, KVM_REINJECT_CONTROL, &rc) == 0, "KVM_REINJECT_CONTROL on");
	close(vm.fd);

	vm.fd = ioctl(vm.sys_fd, KVM_CREATE_VM, 0);
	if (vm.fd < 0 || ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0))
		BAIL("KVM_CREATE_VM/IRQCHIP");
	tap_ok(ioctl(vm.fd, KVM_CREATE_PIT, 0) == 0, "KVM_CREATE_PIT (the old form)");
	close(vm.fd);
	close(vm.sys_fd);
}

static void on_alarm(int sig)
{
	printf("# watchdog: the guest stopped making progress\n");
	fflush(stdout);
	_exit(1);
}

static void guest(void)
{
	struct guest g;
	struct kvm_pit_config cfg = { .flags = KVM_PIT_SPEAKER_DUMMY };
	struct kvm_pit_state2 s;
	uint32_t c1 = 0, c2 = 0, st = 0;
	int ok, i;

	g.vm = vm_create();
	if (ioctl(g.vm.fd, KVM_CREATE_IRQCHIP, 0) || ioctl(g.vm.fd, KVM_CREATE_PIT2, &cfg))
		BAIL("KVM_CREATE_IRQCHIP/PIT2");
	if (ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	g.mem = vm_add_memory(&g.vm, 0, 0, GUEST_LOW_SIZE, 0);
	g.v = vcpu_create(&g.vm, 0);
	vcpu_set_supported_cpuid(&g.vm, &g.v);
	guest_load(g.mem, GUEST_CODE_GPA, pit_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 0x20, ADDR(irq0_h));

	ok = guest_next_out(&g.v, P_VAL, &c1);
	ok &= guest_next_out(&g.v, P_VAL, &c2);
	tap_ok(ok && c1 <= 0xffff && c2 < c1, "counter 2 counts down: %#x, then %#x", c1, c2);
	ok = guest_next_out(&g.v, P_VAL, &st);
	tap_ok(ok && (st & 0x7f) == 0x30,
	       "read-back status of counter 2: LSB/MSB access, mode 0, binary (%#x)", st);
	expect_out(&g.v, P_MARK, 1, "after counter 2");
	expect_out(&g.v, P_VEC, 0x20, "counter 0, mode 2: first tick through the PIC");
	expect_out(&g.v, P_VEC, 0x20, "second tick");
	expect_out(&g.v, P_VEC, 0x20, "third tick");
	ok = ioctl(g.vm.fd, KVM_GET_PIT2, &s) == 0;
	tap_ok(ok && s.channels[0].mode == 2 && s.channels[0].count == 11932 &&
	       s.channels[0].rw_mode == 3 && s.channels[2].gate == 1,
	       "KVM_GET_PIT2 sees what the guest programmed: mode %u, count %u, access %u, "
	       "gate 2 %u", s.channels[0].mode, s.channels[0].count, s.channels[0].rw_mode,
	       s.channels[2].gate);
	/*
	 * A fourth periodic tick may come before the guest reprograms the counter, and one
	 * may wait in the PIC's IRR while the guest runs with IF clear: count the ticks up
	 * to each marker instead of expecting an exact sequence.
	 */
	{
		int n = 0, m2 = 0, m3 = 0, port = 0;
		uint32_t v = 0;

		for (i = 0; i < 8 && !m3; i++) {
			vcpu_run(&g.v);
			if (g.v.run->exit_reason != KVM_EXIT_IO || g.v.run->io.size != 4)
				break;
			port = g.v.run->io.port;
			v = io_out_value(&g.v);
			if (port == P_VEC && v == 0x20)
				n++;
			else if (port == P_MARK && v == 2 && !m2) {
				m2 = 1;
				tap_ok(n <= 1, "after the periodic ticks: at most one more came (%d)", n);
				n = 0;
			} else if (port == P_MARK && v == 3 && m2)
				m3 = 1;
			else
				break;
		}
		tap_ok(m3 && n >= 1 && n <= 2,
		       "counter 0, mode 0: its tick came (%d, one more may have been waiting)", n);
	}
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	alarm(120);
	tap_plan(26);
	protocol();
	guest();
	tap_done();
}
