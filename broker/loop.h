/* The broker's event loop: one epoll set, watches that hand their events
 * to a callback, one timerfd for the earliest deadline, and the clocks. */
#ifndef COORD_LOOP_H
#define COORD_LOOP_H

#include <stdint.h>

struct watch;
/* Called with the epoll events (EPOLLIN, ...) that fired for the watch. */
typedef void (*watch_fn)(struct watch *w, uint32_t events);

struct watch {
	watch_fn fn;
	void *obj;                 /* whatever the owner of the watch needs */
};

struct loop {
	int epfd, timer_fd;
	struct watch timer_watch;
	void (*on_timer)(void *ud);
	void *timer_ud;
	int stopping;              /* set to leave loop_run() */
	int64_t armed_ms;          /* the deadline the timer is set for; -1 none,
	                              -2 unknown (not set yet, or it fired) */
};

/* Creates the epoll set and the timerfd; on_timer(ud) runs when the armed
 * deadline has passed.  Returns 0 or -1 with errno set. */
int loop_init(struct loop *l, void (*on_timer)(void *ud), void *ud);
void loop_fini(struct loop *l);

/* Adds, changes or removes the watch of fd.  Return 0 or -1 (errno). */
int loop_add(struct loop *l, int fd, struct watch *w, uint32_t events);
int loop_mod(struct loop *l, int fd, struct watch *w, uint32_t events);
void loop_del(struct loop *l, int fd);

/* Arms the timer for monotonic deadline_ms, or disarms it (-1). */
void loop_arm(struct loop *l, int64_t deadline_ms);

/* Waits for events and runs their watches, calling after(ud) once after
 * each batch, until l->stopping is set.  Returns 0, or -1 if epoll_wait
 * fails. */
int loop_run(struct loop *l, void (*after)(void *ud), void *ud);

/* Monotonic milliseconds and microseconds; wall-clock milliseconds. */
int64_t now_ms(void);
int64_t now_us(void);
int64_t wall_ms(void);

#endif
