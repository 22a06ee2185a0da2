/* The event loop: one thread, one epoll set.  Every file descriptor the
 * broker waits on (listening socket, client sockets, pidfds, checkpoint
 * children, the signalfd, the timerfd) is registered with a struct watch
 * whose callback gets the events, so this file knows nothing about what
 * the descriptors are.  Time-outs of every kind share one timerfd, armed
 * for the earliest deadline after each batch of events. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

static int64_t clock_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t now_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000; }
int64_t now_us(void) { return clock_us(CLOCK_MONOTONIC); }
int64_t wall_ms(void) { return clock_us(CLOCK_REALTIME) / 1000; }

static void timer_fired(struct watch *w, uint32_t events)
{
	struct loop *l = w->obj;
	uint64_t ticks;
	(void)events;
	if (read(l->timer_fd, &ticks, sizeof ticks) < 0) {
		/* EAGAIN: re-armed since; whatever is due is checked anyway */
	}
	l->armed_ms = -2; /* spent: the next loop_arm() sets it again */
	l->on_timer(l->timer_ud);
}

int loop_init(struct loop *l, void (*on_timer)(void *ud), void *ud)
{
	l->stopping = 0;
	l->armed_ms = -2;
	l->on_timer = on_timer;
	l->timer_ud = ud;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (l->epfd < 0 || l->timer_fd < 0)
		return -1;
	l->timer_watch = (struct watch){ timer_fired, l };
	return loop_add(l, l->timer_fd, &l->timer_watch, EPOLLIN);
}

void loop_fini(struct loop *l)
{
	if (l->timer_fd >= 0)
		close(l->timer_fd);
	if (l->epfd >= 0)
		close(l->epfd);
	l->timer_fd = l->epfd = -1;
}

int loop_add(struct loop *l, int fd, struct watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int loop_mod(struct loop *l, int fd, struct watch *w, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void loop_del(struct loop *l, int fd)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void loop_arm(struct loop *l, int64_t deadline_ms)
{
	struct itimerspec its = { 0 };
	/* Most batches leave the earliest deadline where it was: no call. */
	if (deadline_ms == l->armed_ms)
		return;
	l->armed_ms = deadline_ms < 0 ? -1 : deadline_ms;
	if (deadline_ms >= 0) {
		int64_t left = deadline_ms - now_ms();
		if (left < 1)
			left = 1; /* 0 would disarm */
		its.it_value.tv_sec = left / 1000;
		its.it_value.tv_nsec = (left % 1000) * 1000000;
	}
	timerfd_settime(l->timer_fd, 0, &its, NULL);
}

int loop_run(struct loop *l, void (*after)(void *ud), void *ud)
{
	struct epoll_event evs[64];
	while (!l->stopping) {
		int n = epoll_wait(l->epfd, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			w->fn(w, evs[i].events);
		}
		after(ud);
	}
	return 0;
}
