/* The lease table's deadline heap (deadline_heap.h): a binary min-heap of
 * timers ordered by deadline_ms, where every timer keeps its own index so
 * the table can move a lease's hold-limit deadline at a recall, or drop a
 * waiter that leaves its queue, without a search. */
#include <stdlib.h>

#include "coord.h"
#include "deadline_heap.h"

static void swap(struct lt_heap *h, size_t i, size_t j)
{
	struct lt_timer *tmp = h->v[i];
	h->v[i] = h->v[j];
	h->v[j] = tmp;
	h->v[i]->heap_index = i;
	h->v[j]->heap_index = j;
}

static void up(struct lt_heap *h, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h->v[p]->deadline_ms <= h->v[i]->deadline_ms)
			break;
		swap(h, i, p);
		i = p;
	}
}

static void down(struct lt_heap *h, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->len && h->v[l]->deadline_ms < h->v[m]->deadline_ms)
			m = l;
		if (r < h->len && h->v[r]->deadline_ms < h->v[m]->deadline_ms)
			m = r;
		if (m == i)
			return;
		swap(h, i, m);
		i = m;
	}
}

int lt_heap_reserve(struct lt_heap *h, size_t n)
{
	size_t cap = h->cap ? h->cap : 64;
	struct lt_timer **v;
	if (n <= h->cap)
		return 0;
	while (cap < n)
		cap *= 2;
	v = realloc(h->v, cap * sizeof *v);
	if (!v)
		return COORD_ENOMEM;
	h->v = v;
	h->cap = cap;
	return 0;
}

int lt_heap_push(struct lt_heap *h, struct lt_timer *tm)
{
	if (lt_heap_reserve(h, h->len + 1) < 0)
		return COORD_ENOMEM;
	tm->heap_index = h->len;
	h->v[h->len++] = tm;
	up(h, tm->heap_index);
	return 0;
}

void lt_heap_remove(struct lt_heap *h, struct lt_timer *tm)
{
	size_t i = tm->heap_index;
	if (i == LT_HEAP_NONE)
		return;
	h->len--;
	if (i != h->len) {
		h->v[i] = h->v[h->len];
		h->v[i]->heap_index = i;
		down(h, i);
		up(h, h->v[i]->heap_index);
	}
	tm->heap_index = LT_HEAP_NONE;
}

void lt_heap_move(struct lt_heap *h, struct lt_timer *tm, int64_t deadline_ms)
{
	tm->deadline_ms = deadline_ms;
	down(h, tm->heap_index);
	up(h, tm->heap_index);
}

void lt_heap_free(struct lt_heap *h)
{
	free(h->v);
	h->v = NULL;
	h->len = h->cap = 0;
}
