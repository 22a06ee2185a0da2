/* The lease table's deadlines: a binary min-heap of timers that live
 * inside the objects they time (a waiter's timeout, a lease's hold
 * limit), each knowing its place so it can be moved or removed in
 * O(log n).  Pure data structure, no clock, no I/O; see deadline_heap.c. */
#ifndef COORD_DEADLINE_HEAP_H
#define COORD_DEADLINE_HEAP_H

#include <stddef.h>
#include <stdint.h>

/* heap_index of a timer not in a heap. */
#define LT_HEAP_NONE ((size_t)-1)

/* A deadline.  Waiters embed one (their timeout), and so do leases of
 * resources with hold limits (when the limit falls due), in the table's
 * one heap, so one timerfd serves both. */
enum { LT_TIMER_WAITER = 1, LT_TIMER_LEASE = 2 };
struct lt_timer {
	int kind;                   /* LT_TIMER_* */
	int64_t deadline_ms;        /* monotonic; -1: none, not in the heap */
	size_t heap_index;          /* LT_HEAP_NONE when not in the heap */
};

struct lt_heap {
	struct lt_timer **v;
	size_t len, cap;
};

/* Makes room for n timers in all, so that pushes up to there cannot
 * fail.  Returns 0 or COORD_ENOMEM. */
int lt_heap_reserve(struct lt_heap *h, size_t n);
/* Adds tm at tm->deadline_ms.  Returns 0 or COORD_ENOMEM. */
int lt_heap_push(struct lt_heap *h, struct lt_timer *tm);
/* Takes tm out, if it is in. */
void lt_heap_remove(struct lt_heap *h, struct lt_timer *tm);
/* Moves tm, which is in, to a new deadline. */
void lt_heap_move(struct lt_heap *h, struct lt_timer *tm, int64_t deadline_ms);
/* The earliest timer, or NULL. */
static inline struct lt_timer *lt_heap_top(const struct lt_heap *h)
{
	return h->len ? h->v[0] : NULL;
}
void lt_heap_free(struct lt_heap *h);

#endif
