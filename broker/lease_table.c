/* The lease table: the in-memory truth of who holds and who waits.
 *
 * Rules, in one place:
 *  - one writer XOR any number of readers per resource;
 *  - waiters are served strictly in FIFO order; consecutive readers at the
 *    head of the queue are granted together; a new request that finds a
 *    queue joins its tail, so once a writer waits, later readers wait too;
 *  - a connection that already holds the resource gets COORD_EDEADLK
 *    instead of a hang, except a second read on a held read, which is
 *    granted at once (it cannot deadlock);
 *  - a request that would wait is refused with COORD_EDEADLK if waiting
 *    would close a cycle in the wait-for graph (see "the wait-for graph"
 *    below); the refusal changes nothing, and nothing is ever granted
 *    because of it;
 *  - a waiter that leaves the queue (timeout, owner gone) can unblock the
 *    ones behind it, so every removal is followed by a dispatch;
 *  - a resource may have hold limits: a holder falls due max_hold_ms after
 *    its grant or recall_grace_ms after its recall, whichever is first,
 *    once; the table only says so (ev.limit), and the broker revokes.
 *
 * This file does no I/O and trusts its callers: the broker validates every
 * request before it gets here.  Callbacks never call back into the table:
 * what they need changed (a checkpoint's block) they return, and the table
 * applies it before it grants anyone else.  The broker defers destruction
 * of clients to after the table returns.  No state lives outside struct
 * lease_table. */
#define _GNU_SOURCE
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease_table.h"


/* An owner with queued waiters, in the table's index by owner pointer: the
 * deadlock walk goes from an owner to what it waits for.  The walk_*
 * fields are the walk's scratch: how it first reached this owner. */
struct owner_waits {
	void *owner;
	struct lt_waiter *waiters;  /* linked by owner_next/owner_prev */
	uint64_t walk_epoch;        /* == the table's: reached in this walk */
	struct lt_waiter *walk_from;   /* whose wait led here; NULL: the request */
	struct lt_lease *walk_lease;   /* this owner's conflicting lease there, */
	struct lt_waiter *walk_ahead;  /* or its waiter ahead in that queue */
	struct owner_waits *walk_next; /* the walk's to-do list */
};

struct lease_table {
	struct lt_events ev;
	void *ud;
	void *root;                 /* tsearch tree of lt_resource by name,
	                               for walks in name order */
	struct lt_resource **bucket; /* the same by hash of the name, for
	                               lookups: chains through hash_next, at
	                               most one per bucket on average */
	size_t nbuckets;            /* a power of two, or 0 */
	uint64_t hash_seed;         /* lease_table_seed_hash() */
	void *owners;               /* tsearch tree of owner_waits by owner */
	size_t nresources, nleases, nwaiters;
	size_t max_leases, max_waiters;
	uint64_t next_id;
	struct lt_heap heap;        /* every armed deadline */
	uint64_t walk_epoch;        /* one per deadlock walk */
	struct lt_cycle cycle;      /* the last refusal's; len 0: none */
};

static int resource_cmp(const void *a, const void *b)
{
	return strcmp(((const struct lt_resource *)a)->name, ((const struct lt_resource *)b)->name);
}

/* ---- timers (deadline_heap.c) ---- */

static struct lt_waiter *waiter_of(struct lt_timer *tm)
{
	return (struct lt_waiter *)((char *)tm - offsetof(struct lt_waiter, timer));
}

static struct lt_lease *lease_of(struct lt_timer *tm)
{
	return (struct lt_lease *)((char *)tm - offsetof(struct lt_lease, timer));
}

/* ---- hold limits ---- */

static int limited(const struct lt_resource *res)
{
	return res->max_hold_ms || res->recall_grace_ms;
}

/* When l's hold limit falls due, or LT_NEVER. */
static int64_t limit_due(const struct lt_lease *l)
{
	const struct lt_resource *res = l->res;
	int64_t due = LT_NEVER;
	if (l->limit_fired)
		return LT_NEVER;
	if (res->max_hold_ms)
		due = l->granted_ms + res->max_hold_ms;
	if (res->recall_grace_ms && l->recalled_ms >= 0 &&
	    l->recalled_ms + res->recall_grace_ms < due)
		due = l->recalled_ms + res->recall_grace_ms;
	return due;
}

/* Puts l's timer where its resource's limits say.  A lease of a limited
 * resource keeps its timer in the heap (at LT_NEVER while nothing is
 * due), so a recall only moves it.  The caller made room in the heap for
 * a timer not in it yet, so this cannot fail. */
static void limit_arm(struct lease_table *t, struct lt_lease *l)
{
	if (!limited(l->res) || l->limit_fired) {
		lt_heap_remove(&t->heap, &l->timer);
		return;
	}
	if (l->timer.heap_index == LT_HEAP_NONE) {
		l->timer.deadline_ms = limit_due(l);
		lt_heap_push(&t->heap, &l->timer); /* room was made */
		return;
	}
	lt_heap_move(&t->heap, &l->timer, limit_due(l));
}

int lease_table_set_limits(struct lease_table *t, struct lt_resource *res, uint32_t max_hold_ms,
                           uint32_t recall_grace_ms)
{
	size_t n = 0;
	for (struct lt_lease *l = res->holders; l; l = l->res_next)
		n++;
	if (lt_heap_reserve(&t->heap, t->heap.len + n) < 0)
		return COORD_ENOMEM;
	res->max_hold_ms = max_hold_ms;
	res->recall_grace_ms = recall_grace_ms;
	for (struct lt_lease *l = res->holders; l; l = l->res_next)
		limit_arm(t, l);
	return 0;
}

/* ---- resources ---- */

/* FNV-1a of a name from a start of the table's own (hash_seed: random,
 * from the broker), then the splitmix64 finalizer, so that every bit of
 * the state reaches the low bits that pick a bucket.  Names come from
 * clients: without the seed a client could choose thousands whose hashes
 * share a bucket and make every lookup of them walk one chain. */
static uint64_t name_hash(const struct lease_table *t, const char *name)
{
	uint64_t h = 14695981039346656037ull ^ t->hash_seed;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

static struct lt_resource **bucket_of(const struct lease_table *t, uint64_t hash)
{
	return &t->bucket[hash & (t->nbuckets - 1)];
}

/* Puts res in its bucket, first doubling the buckets when there would be
 * more resources than buckets.  Returns 0 or COORD_ENOMEM (nothing
 * changed); a doubling that fails only leaves the chains longer. */
static int bucket_add(struct lease_table *t, struct lt_resource *res)
{
	struct lt_resource **b;
	if (t->nresources + 1 > t->nbuckets) {
		size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
		struct lt_resource **v = calloc(n, sizeof *v);
		if (!v && !t->nbuckets)
			return COORD_ENOMEM;
		for (size_t i = 0; v && i < t->nbuckets; i++) {
			for (struct lt_resource *r = t->bucket[i], *next; r; r = next) {
				next = r->hash_next;
				r->hash_next = v[r->hash & (n - 1)];
				v[r->hash & (n - 1)] = r;
			}
		}
		if (v) {
			free(t->bucket);
			t->bucket = v;
			t->nbuckets = n;
		}
	}
	b = bucket_of(t, res->hash);
	res->hash_next = *b;
	*b = res;
	return 0;
}

static void bucket_del(struct lease_table *t, struct lt_resource *res)
{
	struct lt_resource **p = bucket_of(t, res->hash);
	while (*p != res)
		p = &(*p)->hash_next;
	*p = res->hash_next;
}

struct lt_resource *lease_table_find(struct lease_table *t, const char *name)
{
	uint64_t h = name_hash(t, name);
	if (!t->nbuckets)
		return NULL;
	for (struct lt_resource *r = *bucket_of(t, h); r; r = r->hash_next)
		if (r->hash == h && !strcmp(r->name, name))
			return r;
	return NULL;
}

static int resource_get(struct lease_table *t, const char *name, struct lt_resource **out)
{
	struct lt_resource *res = lease_table_find(t, name);
	int rc;
	if (res) {
		*out = res;
		return 0;
	}
	res = calloc(1, sizeof *res);
	if (!res)
		return COORD_ENOMEM;
	res->name = strdup(name);
	if (!res->name) {
		rc = COORD_ENOMEM;
		goto fail;
	}
	res->hash = name_hash(t, name);
	rc = t->ev.resource_open ? t->ev.resource_open(t->ud, res) : 0;
	if (rc < 0)
		goto fail;
	if (!tsearch(res, &t->root, resource_cmp) || bucket_add(t, res) < 0) {
		tdelete(res, &t->root, resource_cmp);
		if (t->ev.resource_close)
			t->ev.resource_close(t->ud, res);
		rc = COORD_ENOMEM;
		goto fail;
	}
	t->nresources++;
	*out = res;
	return 0;
fail:
	free(res->name);
	free(res);
	return rc;
}

void lease_table_maybe_close(struct lease_table *t, struct lt_resource *res)
{
	if (res->holders || res->head || res->blocked)
		return;
	if (t->ev.resource_keep && t->ev.resource_keep(t->ud, res))
		return;
	tdelete(res, &t->root, resource_cmp);
	bucket_del(t, res);
	t->nresources--;
	if (t->ev.resource_close)
		t->ev.resource_close(t->ud, res);
	free(res->name);
	free(res);
}

/* ---- each owner's waiters ---- */

static int owner_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)((const struct owner_waits *)a)->owner;
	uintptr_t y = (uintptr_t)((const struct owner_waits *)b)->owner;
	return (x > y) - (x < y);
}

static struct owner_waits *owner_find(struct lease_table *t, void *owner)
{
	struct owner_waits key = { .owner = owner };
	void *found = tfind(&key, &t->owners, owner_cmp);
	return found ? *(struct owner_waits **)found : NULL;
}

static int owner_add_waiter(struct lease_table *t, struct lt_waiter *w)
{
	struct owner_waits *ow = owner_find(t, w->owner);
	if (!ow) {
		ow = calloc(1, sizeof *ow);
		if (!ow)
			return COORD_ENOMEM;
		ow->owner = w->owner;
		if (!tsearch(ow, &t->owners, owner_cmp)) {
			free(ow);
			return COORD_ENOMEM;
		}
	}
	w->owner_prev = NULL;
	w->owner_next = ow->waiters;
	if (ow->waiters)
		ow->waiters->owner_prev = w;
	ow->waiters = w;
	return 0;
}

static void owner_remove_waiter(struct lease_table *t, struct lt_waiter *w)
{
	struct owner_waits *ow = owner_find(t, w->owner);
	if (w->owner_prev)
		w->owner_prev->owner_next = w->owner_next;
	else
		ow->waiters = w->owner_next;
	if (w->owner_next)
		w->owner_next->owner_prev = w->owner_prev;
	w->owner_next = w->owner_prev = NULL;
	if (!ow->waiters) {
		tdelete(ow, &t->owners, owner_cmp);
		free(ow);
	}
}

/* ---- the wait-for graph ----
 *
 * Nodes are owners.  A waiter on res in mode m waits for (a) each holder
 * of res whose lease conflicts with m (readers sharing are no edge) and
 * (b) each owner queued ahead of it; an owner waits for what all its
 * waiters wait for.  Checkpoint blocks are no edge: a running checkpoint
 * ends on its own.  Before a request queues, a breadth-first walk from it
 * looks for its own owner; the first path found is the shortest cycle.
 *
 * The walk stays linear in the part of the graph it reaches: an owner is
 * expanded once (walk_epoch), a resource's holders are scanned at most
 * twice (for a reader's conflicts, the writers; for a writer's, all), and
 * of the waiters ahead only the nearest is an edge: it leads to the one
 * ahead of it, and so on, so all of them are reached.  Holders that wait
 * for nothing end a path. */

struct cycle_walk {
	struct lease_table *t;
	void *requester;
	struct owner_waits *todo, *todo_tail;
	/* the edge that returned to the requester */
	struct lt_waiter *last_from;   /* NULL: the request itself */
	struct lt_lease *last_lease;
	struct lt_waiter *last_ahead;
};

/* The owner of `lease` (or of `ahead`) stands in the way of `from` (NULL:
 * the request).  Returns 1 if it is the requester. */
static int walk_reach(struct cycle_walk *cw, struct lt_waiter *from, struct lt_lease *lease,
                      struct lt_waiter *ahead)
{
	void *owner = lease ? lease->owner : ahead->owner;
	struct owner_waits *ow;
	if (owner == cw->requester) {
		cw->last_from = from;
		cw->last_lease = lease;
		cw->last_ahead = ahead;
		return 1;
	}
	ow = owner_find(cw->t, owner);
	if (!ow || ow->walk_epoch == cw->t->walk_epoch)
		return 0; /* waits for nothing, or reached before */
	ow->walk_epoch = cw->t->walk_epoch;
	ow->walk_from = from;
	ow->walk_lease = lease;
	ow->walk_ahead = ahead;
	ow->walk_next = NULL;
	if (cw->todo_tail)
		cw->todo_tail->walk_next = ow;
	else
		cw->todo = ow;
	cw->todo_tail = ow;
	return 0;
}

/* The edges of one wait: `mode` on res, behind `ahead` (the nearest
 * waiter ahead, or NULL).  Returns 1 if one leads to the requester. */
static int walk_wait(struct cycle_walk *cw, struct lt_waiter *from, struct lt_resource *res,
                     int mode, struct lt_waiter *ahead)
{
	uint64_t epoch = cw->t->walk_epoch;
	int scan;
	if (mode == COORD_WRITE) {
		scan = res->walk_write != epoch;
		res->walk_write = epoch;
	} else {
		scan = res->walk_write != epoch && res->walk_read != epoch;
		res->walk_read = epoch;
	}
	for (struct lt_lease *h = scan ? res->holders : NULL; h; h = h->res_next) {
		if (cw->t->ev.lets_go && cw->t->ev.lets_go(cw->t->ud, h))
			continue; /* goes at the recall: nobody waits for its owner */
		if ((mode == COORD_WRITE || h->mode == COORD_WRITE) && walk_reach(cw, from, h, NULL))
			return 1;
	}
	return ahead && walk_reach(cw, from, NULL, ahead);
}

/* Puts the step of `position` among len into the table's cycle, keeping
 * the first LT_CYCLE_MAX - 1 and the last. */
static void cycle_put(struct lt_cycle *cy, size_t position, const struct lt_cycle_step *s)
{
	size_t i = position;
	if (cy->len > LT_CYCLE_MAX) {
		if (position == cy->len - 1)
			i = LT_CYCLE_MAX - 1;
		else if (position >= LT_CYCLE_MAX - 1)
			return;
	}
	cy->step[i] = *s;
}

/* Writes the cycle the walk found into t->cycle, following walk_from back
 * from the owner that waits for the requester. */
static void cycle_record(struct cycle_walk *cw, struct lt_resource *res, int mode)
{
	struct lt_cycle *cy = &cw->t->cycle;
	struct lt_cycle_step s;
	struct owner_waits *ow;
	struct lt_waiter *w;
	size_t position;
	cy->len = 1;
	for (w = cw->last_from; w; w = ow->walk_from) {
		ow = owner_find(cw->t, w->owner);
		cy->len++;
	}
	position = cy->len - 1;
	for (w = cw->last_from; w; w = ow->walk_from) {
		ow = owner_find(cw->t, w->owner);
		s.owner = w->owner;
		s.holds = ow->walk_from ? ow->walk_from->res : res;
		s.holds_mode = ow->walk_lease ? ow->walk_lease->mode : ow->walk_ahead->mode;
		s.queued = ow->walk_ahead != NULL;
		s.waits = w->res;
		s.waits_mode = w->mode;
		cycle_put(cy, position--, &s);
	}
	s.owner = cw->requester;
	s.holds = cw->last_from ? cw->last_from->res : res;
	s.holds_mode = cw->last_lease ? cw->last_lease->mode : cw->last_ahead->mode;
	s.queued = cw->last_ahead != NULL;
	s.waits = res;
	s.waits_mode = mode;
	cycle_put(cy, 0, &s);
}

/* 1 if `owner` waiting for `mode` on res would close a cycle (recorded in
 * t->cycle), else 0. */
static int closes_cycle(struct lease_table *t, void *owner, struct lt_resource *res, int mode)
{
	struct cycle_walk cw = { .t = t, .requester = owner };
	struct owner_waits *ow;
	int found;
	t->walk_epoch++;
	found = walk_wait(&cw, NULL, res, mode, res->tail);
	while (!found && (ow = cw.todo)) {
		cw.todo = ow->walk_next;
		if (!cw.todo)
			cw.todo_tail = NULL;
		for (struct lt_waiter *w = ow->waiters; w && !found; w = w->owner_next)
			found = walk_wait(&cw, w, w->res, w->mode, w->prev);
	}
	if (found)
		cycle_record(&cw, res, mode);
	return found;
}

const struct lt_cycle *lease_table_cycle(const struct lease_table *t)
{
	return t->cycle.len ? &t->cycle : NULL;
}

/* ---- granting ---- */

static int compatible(const struct lt_resource *res, int mode)
{
	if (mode == COORD_WRITE)
		return !res->writers && !res->readers && !(res->blocked & LT_BLOCK_WRITERS);
	return !res->writers && !(res->blocked & LT_BLOCK_READERS);
}

/* Makes l one of its resource's holders.  A write lease raises the
 * resource's token to its own (a granted one is token + 1; an adopted one
 * may be below the ceiling the token starts at). */
static void hold(struct lease_table *t, struct lt_lease *l)
{
	struct lt_resource *res = l->res;
	if (l->mode == COORD_WRITE) {
		if (res->token < l->token)
			res->token = l->token;
		res->writers++;
	} else {
		res->readers++;
	}
	l->res_next = res->holders;
	if (res->holders)
		res->holders->res_prev = l;
	res->holders = l;
	t->nleases++;
}

/* The bytes a label (NULL: none) takes at the end of a lease or waiter:
 * at most COORD_LABEL_MAX of it, and its terminator. */
static size_t label_size(const char *label)
{
	return (label ? strnlen(label, COORD_LABEL_MAX) : 0) + 1;
}

static void label_copy(char *to, const char *label)
{
	size_t n = label_size(label) - 1;
	if (n)
		memcpy(to, label, n);
	to[n] = 0;
}

static int grant(struct lease_table *t, struct lt_resource *res, void *owner, int mode,
                 int64_t now_ms, const char *label, struct lt_waiter *w, struct lt_lease **out)
{
	struct lt_lease *l;
	int rc;
	if (t->nleases >= t->max_leases)
		return COORD_ELIMIT;
	if (limited(res) && lt_heap_reserve(&t->heap, t->heap.len + 1) < 0)
		return COORD_ENOMEM;
	l = calloc(1, sizeof *l + label_size(label));
	if (!l)
		return COORD_ENOMEM;
	l->timer = (struct lt_timer){ LT_TIMER_LEASE, LT_NEVER, LT_HEAP_NONE };
	l->id = t->next_id;
	l->mode = mode;
	l->token = mode == COORD_WRITE ? res->token + 1 : res->token;
	l->res = res;
	l->owner = owner;
	l->granted_ms = now_ms;
	l->recalled_ms = -1;
	label_copy(l->label, label);
	rc = t->ev.grant ? t->ev.grant(t->ud, l, w) : 0;
	if (rc < 0) {
		free(l);
		return rc;
	}
	t->next_id++;
	hold(t, l);
	limit_arm(t, l);
	*out = l;
	return 0;
}

int lease_table_adopt(struct lease_table *t, const struct lt_adoption *a, struct lt_lease **out)
{
	struct lt_resource *res;
	struct lt_lease *l;
	int rc;

	t->cycle.len = 0;
	if ((a->mode != COORD_READ && a->mode != COORD_WRITE) || a->id == 0)
		return COORD_EINVAL;
	if (a->id >= t->next_id)
		return COORD_EINVAL; /* ids above the store's floor were never handed out */
	if (t->nleases >= t->max_leases)
		return COORD_ELIMIT;
	rc = resource_get(t, a->name, &res);
	if (rc < 0)
		return rc;
	if (!compatible(res, a->mode) || res->head) {
		rc = COORD_EBUSY;
		goto done;
	}
	if (limited(res) && lt_heap_reserve(&t->heap, t->heap.len + 1) < 0) {
		rc = COORD_ENOMEM;
		goto done;
	}
	l = calloc(1, sizeof *l + label_size(a->label));
	if (!l) {
		rc = COORD_ENOMEM;
		goto done;
	}
	l->timer = (struct lt_timer){ LT_TIMER_LEASE, LT_NEVER, LT_HEAP_NONE };
	l->id = a->id;
	l->mode = a->mode;
	l->token = a->token;
	l->secret = a->secret;
	l->res = res;
	l->owner = a->owner;
	l->granted_ms = a->granted_ms;
	l->granted_wall_ms = a->granted_wall_ms;
	l->recalled_ms = -1;
	l->slot = a->slot;
	l->adopted = 1;
	label_copy(l->label, a->label);
	hold(t, l);
	limit_arm(t, l);
	*out = l;
	return 0;
done:
	lease_table_maybe_close(t, res);
	return rc;
}

static void queue_unlink(struct lease_table *t, struct lt_waiter *w)
{
	struct lt_resource *res = w->res;
	if (w->prev)
		w->prev->next = w->next;
	else
		res->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		res->tail = w->prev;
	w->next = w->prev = NULL;
	res->nwaiters--;
	t->nwaiters--;
	lt_heap_remove(&t->heap, &w->timer);
	owner_remove_waiter(t, w);
}

static void recall_holders(struct lease_table *t, struct lt_resource *res, int mode,
                           int64_t now_ms);

/* Grants what the queue allows, in order.  A waiter left at the head
 * then waits for the holders it conflicts with, some of them perhaps
 * granted just now (readers let in after a checkpoint, while a writer
 * waits behind them): they are recalled, as at a request. */
static void dispatch(struct lease_table *t, struct lt_resource *res)
{
	struct lt_waiter *w;
	int64_t now_ms = t->ev.now ? t->ev.now(t->ud) : 0;
	while ((w = res->head) && compatible(res, w->mode)) {
		struct lt_lease *l = NULL;
		int rc = 0;
		queue_unlink(t, w);
		if (w->purpose == LT_FOR_CLIENT)
			rc = grant(t, res, w->owner, w->mode, now_ms, w->label, w, &l);
		if (rc < 0) {
			if (t->ev.waiter_failed)
				t->ev.waiter_failed(t->ud, w, rc);
		} else if (t->ev.granted) {
			/* A checkpoint's turn: its block holds the others back. */
			res->blocked |= t->ev.granted(t->ud, w, l);
		}
		free(w);
	}
	if (res->head)
		recall_holders(t, res, res->head->mode, now_ms);
}

/* A request for `mode` now waits on res: recall every holder it conflicts
 * with, once per lease. */
static void recall_holders(struct lease_table *t, struct lt_resource *res, int mode,
                           int64_t now_ms)
{
	for (struct lt_lease *h = res->holders; h; h = h->res_next) {
		if (h->recalled_ms >= 0 || (mode == COORD_READ && h->mode == COORD_READ))
			continue;
		h->recalled_ms = now_ms;
		if (res->recall_grace_ms)
			limit_arm(t, h);
		if (t->ev.recall)
			t->ev.recall(t->ud, h);
	}
}

int lease_table_request(struct lease_table *t, const char *name, void *owner, int mode,
                        int64_t now_ms, int64_t deadline_ms, int purpose, uint32_t seq,
                        const char *label, struct lt_lease **lease, struct lt_waiter **waiter)
{
	struct lt_resource *res;
	struct lt_waiter *w = NULL;
	int rc;

	t->cycle.len = 0;
	rc = resource_get(t, name, &res);
	if (rc < 0)
		return rc;
	if (purpose == LT_FOR_CLIENT) {
		for (struct lt_lease *h = res->holders; h; h = h->res_next) {
			if (h->owner != owner)
				continue;
			if (h->mode == COORD_READ && mode == COORD_READ) {
				/* A nested read passes the queue (it cannot deadlock);
				 * a writer waiting there waits for it too. */
				rc = grant(t, res, owner, mode, now_ms, label, NULL, lease);
				if (rc == 0 && res->head)
					recall_holders(t, res, res->head->mode, now_ms);
				goto done;
			}
			rc = COORD_EDEADLK;
			goto done;
		}
	}
	if (!res->head && compatible(res, mode)) {
		if (purpose == LT_FOR_CHECKPOINT) {
			rc = 1;
			goto done;
		}
		rc = grant(t, res, owner, mode, now_ms, label, NULL, lease);
		goto done;
	}
	if (deadline_ms >= 0 && deadline_ms <= now_ms) {
		rc = COORD_EBUSY;
		goto done;
	}
	if (closes_cycle(t, owner, res, mode)) {
		rc = COORD_EDEADLK;
		goto done;
	}
	if (t->nwaiters >= t->max_waiters) {
		rc = COORD_ELIMIT;
		goto done;
	}
	w = calloc(1, sizeof *w + label_size(label));
	if (!w) {
		rc = COORD_ENOMEM;
		goto done;
	}
	w->owner = owner;
	w->mode = mode;
	w->seq = seq;
	w->purpose = purpose;
	w->since_ms = now_ms;
	w->timer = (struct lt_timer){ LT_TIMER_WAITER, deadline_ms, LT_HEAP_NONE };
	w->res = res;
	label_copy(w->label, label);
	if (deadline_ms >= 0) {
		rc = lt_heap_push(&t->heap, &w->timer);
		if (rc < 0) {
			free(w);
			goto done;
		}
	}
	rc = owner_add_waiter(t, w);
	if (rc < 0) {
		lt_heap_remove(&t->heap, &w->timer);
		free(w);
		goto done;
	}
	w->prev = res->tail;
	if (res->tail)
		res->tail->next = w;
	else
		res->head = w;
	res->tail = w;
	res->nwaiters++;
	t->nwaiters++;
	recall_holders(t, res, mode, now_ms);
	*waiter = w;
	return 0;
done:
	if (rc < 0) {
		lease_table_maybe_close(t, res);
		return rc;
	}
	return 1;
}

void lease_table_release(struct lease_table *t, struct lt_lease *l, const char *why)
{
	struct lt_resource *res = l->res;
	t->cycle.len = 0;
	if (l->res_prev)
		l->res_prev->res_next = l->res_next;
	else
		res->holders = l->res_next;
	if (l->res_next)
		l->res_next->res_prev = l->res_prev;
	if (l->mode == COORD_WRITE)
		res->writers--;
	else
		res->readers--;
	t->nleases--;
	lt_heap_remove(&t->heap, &l->timer);
	if (t->ev.released)
		res->blocked |= t->ev.released(t->ud, l, why);
	free(l);
	dispatch(t, res);
	lease_table_maybe_close(t, res);
}

void lease_table_cancel(struct lease_table *t, struct lt_waiter *w)
{
	struct lt_resource *res = w->res;
	t->cycle.len = 0;
	queue_unlink(t, w);
	free(w);
	dispatch(t, res);
	lease_table_maybe_close(t, res);
}

void lease_table_expire(struct lease_table *t, int64_t now_ms)
{
	t->cycle.len = 0;
	struct lt_timer *top;
	while ((top = lt_heap_top(&t->heap)) && top->deadline_ms <= now_ms) {
		struct lt_waiter *w;
		struct lt_resource *res;
		if (top->kind == LT_TIMER_LEASE) {
			struct lt_lease *l = lease_of(top);
			int why = l->recalled_ms >= 0 && l->res->recall_grace_ms &&
			                  l->recalled_ms + l->res->recall_grace_ms <= now_ms
			          ? LT_LIMIT_RECALL_GRACE
			          : LT_LIMIT_MAX_HOLD;
			lt_heap_remove(&t->heap, &l->timer);
			l->limit_fired = 1;
			if (t->ev.limit)
				t->ev.limit(t->ud, l, why);
			continue;
		}
		w = waiter_of(top);
		res = w->res;
		queue_unlink(t, w);
		if (t->ev.waiter_failed)
			t->ev.waiter_failed(t->ud, w, COORD_ETIMEDOUT);
		free(w);
		dispatch(t, res);
		lease_table_maybe_close(t, res);
	}
}

int64_t lease_table_next_deadline(const struct lease_table *t)
{
	const struct lt_timer *top = lt_heap_top(&t->heap);
	return top && top->deadline_ms != LT_NEVER ? top->deadline_ms : -1;
}

void lease_table_block(struct lease_table *t, struct lt_resource *res, int bits)
{
	t->cycle.len = 0;
	res->blocked = bits;
	dispatch(t, res);
	lease_table_maybe_close(t, res);
}

struct walk {
	void (*fn)(struct lt_resource *, void *);
	void *arg;
};

static void walk_action(const void *node, VISIT which, void *closure)
{
	struct walk *w = closure;
	if (which == postorder || which == leaf)
		w->fn(*(struct lt_resource *const *)node, w->arg);
}

void lease_table_foreach(struct lease_table *t, void (*fn)(struct lt_resource *, void *), void *arg)
{
	struct walk w = { fn, arg };
	twalk_r(t->root, walk_action, &w);
}

void lease_table_seed_hash(struct lease_table *t, uint64_t seed)
{
	if (!t->nresources)
		t->hash_seed = seed;
}

struct lease_table *lease_table_new(const struct lt_events *ev, void *ud, size_t max_leases,
                                    size_t max_waiters, uint64_t first_lease_id)
{
	struct lease_table *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->ev = *ev;
	t->ud = ud;
	t->max_leases = max_leases;
	t->max_waiters = max_waiters;
	t->next_id = first_lease_id ? first_lease_id : 1;
	return t;
}

static void close_resource(struct lt_resource *res, void *arg)
{
	struct lease_table *t = arg;
	if (t->ev.resource_close)
		t->ev.resource_close(t->ud, res);
}

static void free_resource(void *p)
{
	struct lt_resource *res = p;
	struct lt_lease *l, *ln;
	struct lt_waiter *w, *wn;
	for (l = res->holders; l; l = ln) {
		ln = l->res_next;
		free(l);
	}
	for (w = res->head; w; w = wn) {
		wn = w->next;
		free(w);
	}
	free(res->name);
	free(res);
}

void lease_table_free(struct lease_table *t)
{
	if (!t)
		return;
	/* tdestroy() passes no closure: close everything first. */
	lease_table_foreach(t, close_resource, t);
	tdestroy(t->root, free_resource);
	free(t->bucket);
	tdestroy(t->owners, free);
	lt_heap_free(&t->heap);
	free(t);
}

size_t lease_table_leases(const struct lease_table *t) { return t->nleases; }
size_t lease_table_waiters(const struct lease_table *t) { return t->nwaiters; }
size_t lease_table_resources(const struct lease_table *t) { return t->nresources; }
