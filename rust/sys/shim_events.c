// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm's C shim, event sources: irqfds, device timers and the kvm-vfio check. Each keeps
 * a C struct the kernel points at, and calls back into rkvm from a work item.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/hrtimer.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "rkvm_shim.h"

/* ---- irqfd: an eventfd that injects a GSI when signalled ------------------------------ */

/*
 * The eventfd's wake-up runs in atomic context with its wait-queue lock held, so it only
 * consumes the count and schedules a work item; the work calls back into rkvm (which
 * looks up the GSI's route and delivers it). A hang-up (the eventfd closed) unhooks the
 * entry and marks it dead; rkvm frees dead entries on its next KVM_IRQFD or at VM
 * teardown.
 */
struct rkvm_irqfd {
	struct eventfd_ctx *eventfd;
	wait_queue_entry_t wait;
	wait_queue_head_t *wqh;
	poll_table pt;
	struct work_struct inject;
	void (*fire)(const void *owner, __u32 gsi);
	const void *owner;
	__u32 gsi;
	int queued; /* 0, or why it could not hook the eventfd */
	bool dead;
};

static void rkvm_irqfd_inject(struct work_struct *work)
{
	struct rkvm_irqfd *f = container_of(work, struct rkvm_irqfd, inject);

	f->fire(f->owner, f->gsi);
}

static int rkvm_irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct rkvm_irqfd *f = container_of(wait, struct rkvm_irqfd, wait);
	__poll_t flags = key_to_poll(key);
	u64 cnt;

	if (flags & EPOLLIN) {
		eventfd_ctx_do_read(f->eventfd, &cnt);
		schedule_work(&f->inject);
	}
	if (flags & EPOLLHUP) {
		/* The wait-queue lock is held here. */
		list_del_init(&f->wait.entry);
		WRITE_ONCE(f->dead, true);
	}
	return 0;
}

static void rkvm_irqfd_queue(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct rkvm_irqfd *f = container_of(pt, struct rkvm_irqfd, pt);

	f->wqh = wqh;
	/*
	 * One irqfd per eventfd, across every VM (KVM's rule): an eventfd that already has
	 * a priority waiter is taken (-EBUSY).
	 */
	f->queued = add_wait_queue_priority_exclusive(wqh, &f->wait);
}

void *rkvm_irqfd_assign(int fd, __u32 gsi, void (*fire)(const void *owner, __u32 gsi),
			const void *owner, int *err)
{
	struct rkvm_irqfd *f;
	struct eventfd_ctx *ctx;
	__poll_t events;
	CLASS(fd, file)(fd);

	if (fd_empty(file)) {
		*err = -EBADF;
		return NULL;
	}
	ctx = eventfd_ctx_fileget(fd_file(file));
	if (IS_ERR(ctx)) {
		*err = PTR_ERR(ctx);
		return NULL;
	}
	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f) {
		eventfd_ctx_put(ctx);
		*err = -ENOMEM;
		return NULL;
	}
	f->eventfd = ctx;
	f->fire = fire;
	f->owner = owner;
	f->gsi = gsi;
	INIT_WORK(&f->inject, rkvm_irqfd_inject);
	init_waitqueue_func_entry(&f->wait, rkvm_irqfd_wakeup);
	init_poll_funcptr(&f->pt, rkvm_irqfd_queue);
	events = vfs_poll(fd_file(file), &f->pt);
	if (!f->wqh || f->queued) {
		eventfd_ctx_put(ctx);
		*err = f->wqh ? f->queued : -EINVAL;
		kfree(f);
		return NULL;
	}
	/* Signalled before it was assigned: inject now, as KVM does. */
	if (events & EPOLLIN)
		schedule_work(&f->inject);
	*err = 0;
	return f;
}

/* Whether IRQFD f was made for eventfd FD (for KVM_IRQFD_FLAG_DEASSIGN). */
int rkvm_irqfd_matches(void *irqfd, int fd)
{
	struct rkvm_irqfd *f = irqfd;
	struct eventfd_ctx *ctx = eventfd_ctx_fdget(fd);
	int r;

	if (IS_ERR(ctx))
		return 0;
	r = ctx == f->eventfd;
	eventfd_ctx_put(ctx);
	return r;
}

int rkvm_eventfd_check(int fd)
{
	struct eventfd_ctx *ctx = eventfd_ctx_fdget(fd);

	if (IS_ERR(ctx))
		return PTR_ERR(ctx);
	eventfd_ctx_put(ctx);
	return 0;
}

/* An eventfd context (with a reference) for KVM_IOEVENTFD; NULL and *err on failure. */
void *rkvm_eventfd_get(int fd, int *err)
{
	struct eventfd_ctx *ctx = eventfd_ctx_fdget(fd);

	if (IS_ERR(ctx)) {
		*err = PTR_ERR(ctx);
		return NULL;
	}
	*err = 0;
	return ctx;
}

void rkvm_eventfd_signal(void *ctx) { eventfd_signal(ctx); }
void rkvm_eventfd_put(void *ctx) { eventfd_ctx_put(ctx); }

int rkvm_irqfd_dead(void *irqfd)
{
	struct rkvm_irqfd *f = irqfd;

	return READ_ONCE(f->dead);
}

/* Unhooks (if still hooked), waits for a running injection, frees. */
void rkvm_irqfd_free(void *irqfd)
{
	struct rkvm_irqfd *f = irqfd;
	u64 cnt;

	eventfd_ctx_remove_wait_queue(f->eventfd, &f->wait, &cnt);
	cancel_work_sync(&f->inject);
	eventfd_ctx_put(f->eventfd);
	kfree(f);
}

/* ---- device timers ----------------------------------------------------------------- */

/*
 * The hrtimer callback runs in hard interrupt context: it only counts the expiry and
 * queues the work, which calls back into rkvm with the count. A periodic timer moves its expiry forward by whole periods, so a
 * late callback does not drift.
 */
struct rkvm_ptimer {
	struct hrtimer timer;
	struct work_struct work;
	void (*fire)(const void *owner, __u32 expiries);
	const void *owner;
	u64 period_ns;
	atomic_t expiries; /* since the work last ran */
};

static void rkvm_ptimer_work(struct work_struct *work)
{
	struct rkvm_ptimer *t = container_of(work, struct rkvm_ptimer, work);
	int n = atomic_xchg(&t->expiries, 0);

	if (n > 0)
		t->fire(t->owner, n);
}

static enum hrtimer_restart rkvm_ptimer_expired(struct hrtimer *timer)
{
	struct rkvm_ptimer *t = container_of(timer, struct rkvm_ptimer, timer);

	/* Bounded: at most one expiry per period of at least KVM's 200 us floor. */
	atomic_add_unless(&t->expiries, 1, INT_MAX);
	schedule_work(&t->work);
	if (!t->period_ns)
		return HRTIMER_NORESTART;
	hrtimer_add_expires_ns(&t->timer, t->period_ns);
	return HRTIMER_RESTART;
}

void *rkvm_ptimer_new(void (*fire)(const void *owner, __u32 expiries), const void *owner)
{
	struct rkvm_ptimer *t = kzalloc(sizeof(*t), GFP_KERNEL_ACCOUNT);

	if (!t)
		return NULL;
	hrtimer_setup(&t->timer, rkvm_ptimer_expired, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
	INIT_WORK(&t->work, rkvm_ptimer_work);
	t->fire = fire;
	t->owner = owner;
	return t;
}

void rkvm_ptimer_stop(void *timer)
{
	struct rkvm_ptimer *t = timer;

	hrtimer_cancel(&t->timer);
	cancel_work_sync(&t->work);
	atomic_set(&t->expiries, 0);
}

void rkvm_ptimer_start(void *timer, __u64 delay_ns, __u64 period_ns)
{
	struct rkvm_ptimer *t = timer;

	rkvm_ptimer_stop(t);
	t->period_ns = period_ns;
	hrtimer_start(&t->timer, ktime_add_ns(ktime_get(), delay_ns), HRTIMER_MODE_ABS);
}

void rkvm_ptimer_free(void *timer)
{
	rkvm_ptimer_stop(timer);
	kfree(timer);
}

/* ---- kvm-vfio --------------------------------------------------------------------- */

/*
 * Whether `file` is a VFIO group or device file, asked of the VFIO core only if it is
 * loaded (as KVM's kvm-vfio device does: no hard dependency on the vfio module).
 */
int rkvm_vfio_file_is_valid(void *file)
{
	bool (*fn)(struct file *file) = symbol_get(vfio_file_is_valid);
	int ret;

	if (!fn)
		return 0;
	ret = fn(file);
	symbol_put(vfio_file_is_valid);
	return ret;
}
