/* Unit tests of the lease table: grant rules, fairness, reader batching,
 * writer preference, timeouts, self-deadlock, wait-for cycles and token
 * order.  No broker, no I/O: the table's callbacks record what the server
 * would be told. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include "lease_table.h"

#define MAXEV 64

static struct lease_table *t;
static int64_t now;
static int keep;
static int release_bits, turn_bits; /* what released/granted return */
/* what the callbacks saw */
static struct {
	int granted_owner[MAXEV];
	int ngranted;
	int failed_owner[MAXEV];
	int failed_err[MAXEV];
	int nfailed;
	int released;
	struct lt_lease *last_granted[MAXEV];
	struct lt_lease *limit_lease[MAXEV];
	int limit_why[MAXEV];
	int64_t limit_at[MAXEV];
	int nlimits;
} seen;

static int64_t ev_now(void *ud) { (void)ud; return now; }
static int ev_granted(void *ud, struct lt_waiter *w, struct lt_lease *l)
{
	(void)ud;
	seen.last_granted[seen.ngranted] = l;
	seen.granted_owner[seen.ngranted++] = (int)(intptr_t)w->owner;
	return w->purpose == LT_FOR_CHECKPOINT ? turn_bits : 0;
}
static void ev_failed(void *ud, struct lt_waiter *w, int err)
{
	(void)ud;
	seen.failed_owner[seen.nfailed] = (int)(intptr_t)w->owner;
	seen.failed_err[seen.nfailed++] = err;
}
static int ev_released(void *ud, struct lt_lease *l, const char *why)
{
	(void)ud; (void)why;
	seen.released++;
	return l->mode == COORD_WRITE ? release_bits : 0;
}

static void ev_limit(void *ud, struct lt_lease *l, int why)
{
	(void)ud;
	seen.limit_lease[seen.nlimits] = l;
	seen.limit_at[seen.nlimits] = now;
	seen.limit_why[seen.nlimits++] = why;
}

/* The server keeps resources with a durable token; so does this test, so
 * tokens are checked across idle periods. */
static int keep_all(void *ud, struct lt_resource *res) { (void)ud; (void)res; return keep; }

static const struct lt_events events = {
	.now = ev_now, .resource_keep = keep_all, .granted = ev_granted, .waiter_failed = ev_failed, .released = ev_released,
	.limit = ev_limit,
};

static void setup(void)
{
	memset(&seen, 0, sizeof seen);
	now = 1000;
	keep = 1;
	release_bits = turn_bits = 0;
	t = lease_table_new(&events, NULL, 16, 16, 1);
	cr_assert(t, "lease_table_new returned NULL");
}

static void teardown(void)
{
	lease_table_free(t);
}

TestSuite(lease_table, .init = setup, .fini = teardown);

#define OWNER(n) ((void *)(intptr_t)(n))

/* Requests `mode` for owner n; returns the lease if granted at once. */
static struct lt_lease *take(int n, int mode, int64_t timeout)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int rc = lease_table_request(t, "db", OWNER(n), mode, now, timeout < 0 ? -1 : now + timeout,
	                             LT_FOR_CLIENT, 0, NULL, &l, &w);
	cr_assert(rc >= 0, "owner %d: request failed with %s", n, coord_errname(rc));
	return rc > 0 ? l : NULL;
}

Test(lease_table, readers_share_writer_excludes)
{
	struct lt_lease *r1 = take(1, COORD_READ, -1), *r2 = take(2, COORD_READ, -1);
	cr_assert(r1 && r2, "two readers of an idle resource must both be granted at once");
	cr_assert_null(take(3, COORD_WRITE, -1), "a writer must wait while readers hold");
	lease_table_release(t, r1, "release");
	cr_assert_eq(seen.ngranted, 0, "writer granted while a reader still holds");
	lease_table_release(t, r2, "release");
	cr_assert_eq(seen.ngranted, 1, "writer not granted once the last reader left");
	cr_assert_eq(seen.granted_owner[0], 3, "the wrong owner was granted");
}

Test(lease_table, fifo_and_reader_batching)
{
	struct lt_lease *w1 = take(1, COORD_WRITE, -1);
	cr_assert(w1, "an idle resource must grant a writer at once");
	take(2, COORD_READ, -1);
	take(3, COORD_READ, -1);
	take(4, COORD_WRITE, -1);
	take(5, COORD_READ, -1);
	lease_table_release(t, w1, "release");
	cr_assert_eq(seen.ngranted, 2, "the two readers at the head must be granted together, got %d",
	             seen.ngranted);
	cr_assert(seen.granted_owner[0] == 2 && seen.granted_owner[1] == 3,
	          "readers must be granted in FIFO order");
	lease_table_release(t, seen.last_granted[0], "release");
	lease_table_release(t, seen.last_granted[1], "release");
	cr_assert_eq(seen.ngranted, 3, "the writer queued behind the readers must come next");
	cr_assert_eq(seen.granted_owner[2], 4, "writer 4 must precede reader 5 (FIFO)");
	lease_table_release(t, seen.last_granted[2], "release");
	cr_assert_eq(seen.granted_owner[3], 5, "reader 5 must be granted last");
}

Test(lease_table, waiting_writer_blocks_new_readers)
{
	struct lt_lease *r1 = take(1, COORD_READ, -1);
	cr_assert(r1, "reader must be granted");
	cr_assert_null(take(2, COORD_WRITE, -1), "writer must wait for the reader");
	cr_assert_null(take(3, COORD_READ, -1),
	               "a new reader must queue behind a waiting writer (no writer starvation)");
	lease_table_release(t, r1, "release");
	cr_assert_eq(seen.granted_owner[0], 2, "the waiting writer must be served first");
}

Test(lease_table, timeout_leaves_queue_and_unblocks_followers)
{
	struct lt_lease *r1 = take(1, COORD_READ, -1);
	cr_assert(r1, "reader must be granted");
	cr_assert_null(take(2, COORD_WRITE, 100), "writer must wait");
	cr_assert_null(take(3, COORD_READ, -1), "reader behind a waiting writer must wait");
	cr_assert_eq(lease_table_next_deadline(t), 1100, "deadline of the writer not tracked");
	now = 1099;
	lease_table_expire(t, now);
	cr_assert_eq(seen.nfailed, 0, "expired a waiter before its deadline");
	now = 1100;
	lease_table_expire(t, now);
	cr_assert_eq(seen.nfailed, 1, "the writer's timeout did not fire");
	cr_assert_eq(seen.failed_err[0], COORD_ETIMEDOUT, "timeout must report COORD_ETIMEDOUT");
	cr_assert_eq(seen.ngranted, 1,
	             "the reader queued behind the timed-out writer must be granted right away");
	cr_assert_eq(lease_table_waiters(t), 0, "a timed-out waiter stayed in the queue");
}

Test(lease_table, try_once_is_busy_not_queued)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	cr_assert(take(1, COORD_WRITE, -1), "writer must be granted");
	int rc = lease_table_request(t, "db", OWNER(2), COORD_READ, now, now, LT_FOR_CLIENT, 0, NULL,
	                             &l, &w);
	cr_assert_eq(rc, COORD_EBUSY, "timeout 0 on a held resource must be COORD_EBUSY, got %d", rc);
	cr_assert_eq(lease_table_waiters(t), 0, "timeout 0 must not leave a waiter behind");
}

struct deadlock_case {
	int held, asked, expect;
};

ParameterizedTestParameters(lease_table, self_deadlock)
{
	static struct deadlock_case cases[] = {
		{ COORD_READ, COORD_WRITE, COORD_EDEADLK },
		{ COORD_WRITE, COORD_READ, COORD_EDEADLK },
		{ COORD_WRITE, COORD_WRITE, COORD_EDEADLK },
		{ COORD_READ, COORD_READ, 1 },
	};
	return cr_make_param_array(struct deadlock_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct deadlock_case *c, lease_table, self_deadlock)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int rc;
	cr_assert(take(1, c->held, -1), "first lease must be granted");
	/* a waiting writer must not turn a nested read into a hang either */
	take(2, COORD_WRITE, -1);
	rc = lease_table_request(t, "db", OWNER(1), c->asked, now, -1, LT_FOR_CLIENT, 0, NULL, &l, &w);
	cr_assert_eq(rc, c->expect, "holding %d and asking %d: expected %d, got %d", c->held, c->asked,
	             c->expect, rc);
}

Test(lease_table, tokens_rise_at_each_write_grant)
{
	uint64_t last = 0;
	for (int i = 0; i < 5; i++) {
		struct lt_lease *w = take(1, COORD_WRITE, -1);
		cr_assert(w, "writer must be granted");
		cr_assert_gt(w->token, last, "token %llu did not rise above %llu",
		             (unsigned long long)w->token, (unsigned long long)last);
		last = w->token;
		lease_table_release(t, w, "release");
		struct lt_lease *r = take(2, COORD_READ, -1);
		cr_assert_eq(r->token, last, "a reader must carry the last write token");
		lease_table_release(t, r, "release");
	}
}

Test(lease_table, cancel_and_limits)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL, *w2 = NULL;
	cr_assert(take(1, COORD_WRITE, -1), "writer must be granted");
	cr_assert_eq(lease_table_request(t, "db", OWNER(2), COORD_WRITE, now, -1, LT_FOR_CLIENT, 0,
	                                 NULL, &l, &w), 0, "second writer must queue");
	take(3, COORD_READ, -1);
	lease_table_cancel(t, w);
	cr_assert_eq(lease_table_waiters(t), 1, "cancel must remove exactly the waiter");
	(void)w2;
	for (int i = 0; i < 20; i++) {
		char name[16];
		snprintf(name, sizeof name, "r%d", i);
		int rc = lease_table_request(t, name, OWNER(9), COORD_READ, now, -1, LT_FOR_CLIENT, 0,
		                             NULL, &l, &w);
		if (i < 15)
			cr_assert_eq(rc, 1, "lease %d of 16 must fit", i + 2);
		else
			cr_assert_eq(rc, COORD_ELIMIT, "lease %d must hit the table limit", i + 2);
	}
}

Test(lease_table, idle_resources_are_freed)
{
	struct lt_lease *w;
	keep = 0;
	w = take(1, COORD_WRITE, -1);
	cr_assert_eq(lease_table_resources(t), 1, "resource must exist while held");
	lease_table_release(t, w, "release");
	cr_assert_eq(lease_table_resources(t), 0, "an idle resource must be freed");
}

/* The broker starts a checkpoint from inside `released` and must not call
 * back into the table there: the bits it returns hold the queue. */
Test(lease_table, bits_returned_by_released_hold_the_queue)
{
	struct lt_lease *w = take(1, COORD_WRITE, -1), *r;
	struct lt_resource *res = w->res;
	release_bits = LT_BLOCK_WRITERS;
	cr_assert_null(take(2, COORD_WRITE, -1), "second writer must queue behind the first");
	lease_table_release(t, w, "release");
	cr_assert_eq(seen.ngranted, 0,
	             "the waiting writer was granted although `released` returned a writer block");
	cr_assert_eq(res->blocked, LT_BLOCK_WRITERS, "the returned bits must be set on the resource");
	release_bits = 0;
	lease_table_block(t, res, 0);
	cr_assert_eq(seen.ngranted, 1, "lifting the block must grant the waiting writer");
	cr_assert_eq(seen.granted_owner[0], 2, "owner 2 must be the one granted");
	r = seen.last_granted[0];
	lease_table_release(t, r, "release");
}

/* A checkpoint's turn comes inside dispatch; its block must be in place
 * before the next waiter is looked at. */
Test(lease_table, checkpoint_turn_blocks_before_the_next_grant)
{
	struct lt_lease *w = take(1, COORD_WRITE, -1), *l = NULL;
	struct lt_waiter *cw = NULL;
	struct lt_resource *res = w->res;
	turn_bits = LT_BLOCK_WRITERS | LT_BLOCK_READERS;
	cr_assert_eq(lease_table_request(t, "db", OWNER(5), COORD_WRITE, now, -1, LT_FOR_CHECKPOINT,
	                                 0, NULL, &l, &cw), 0, "the checkpoint must queue behind the writer");
	cr_assert_null(take(2, COORD_READ, -1), "a reader must queue behind the checkpoint");
	lease_table_release(t, w, "release");
	cr_assert_eq(seen.ngranted, 1, "only the checkpoint's turn may come, got %d grants",
	             seen.ngranted);
	cr_assert_eq(seen.granted_owner[0], 5, "the checkpoint (owner 5) must come first");
	cr_assert_eq(lease_table_leases(t), 0, "a checkpoint's turn holds no lease");
	lease_table_block(t, res, LT_BLOCK_WRITERS);
	cr_assert_eq(seen.ngranted, 2, "narrowing the block to writers must let the reader in");
	cr_assert_eq(seen.granted_owner[1], 2, "owner 2 (the reader) must be granted");
	lease_table_block(t, res, 0);
	lease_table_release(t, seen.last_granted[1], "release");
}

/* ---- wait-for cycles ---- */

static const char *rc_name(int rc)
{
	return rc > 0 ? "granted at once" : rc == 0 ? "queued" : coord_errname(rc);
}

static const char *mode_name(int mode)
{
	return mode == COORD_WRITE ? "write" : "read";
}

/* Owner n asks for `mode` on `name` for `purpose`, waiting forever;
 * returns what the table answered. */
static int ask_for(int n, int mode, const char *name, int purpose)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	return lease_table_request(t, name, OWNER(n), mode, now, -1, purpose, 0, NULL, &l, &w);
}

static int ask(int n, int mode, const char *name)
{
	return ask_for(n, mode, name, LT_FOR_CLIENT);
}

static struct lt_lease *hold(int n, int mode, const char *name)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int rc = lease_table_request(t, name, OWNER(n), mode, now, -1, LT_FOR_CLIENT, 0, NULL, &l, &w);
	cr_assert_eq(rc, 1, "setup: owner %d asking %s on %s must be granted at once, got %s", n,
	             mode_name(mode), name, rc_name(rc));
	return l;
}

static void queue(int n, int mode, const char *name)
{
	int rc = ask(n, mode, name);
	cr_assert_eq(rc, 0, "setup: owner %d asking %s on %s must queue (no cycle yet), got %s", n,
	             mode_name(mode), name, rc_name(rc));
}

/* The last refusal's cycle must be exactly `owners` (len of them), in
 * wait-for order from the requester. */
static const struct lt_cycle *expect_cycle(const int *owners, size_t len)
{
	const struct lt_cycle *cy = lease_table_cycle(t);
	cr_assert(cy, "COORD_EDEADLK for a cycle must leave the cycle in lease_table_cycle()");
	cr_assert_eq(cy->len, len, "the cycle must have %zu owners, the table reports %zu", len,
	             cy->len);
	for (size_t i = 0; i < len && i < LT_CYCLE_MAX; i++)
		cr_assert_eq((int)(intptr_t)cy->step[i].owner, owners[i],
		             "step %zu of the cycle must be owner %d, is owner %d (wrong order)", i,
		             owners[i], (int)(intptr_t)cy->step[i].owner);
	return cy;
}

static void expect_step(const struct lt_cycle *cy, size_t i, const char *holds, int held_mode,
                        int queued, const char *waits, int waits_mode)
{
	const struct lt_cycle_step *s = &cy->step[i];
	cr_assert_str_eq(s->holds->name, holds, "step %zu (owner %d) must stand in the way on %s, not %s",
	                 i, (int)(intptr_t)s->owner, holds, s->holds->name);
	cr_assert_eq(s->holds_mode, held_mode, "step %zu (owner %d) must be in the way in %s mode", i,
	             (int)(intptr_t)s->owner, mode_name(held_mode));
	cr_assert_eq(s->queued, queued, "step %zu (owner %d) must be reported as %s", i,
	             (int)(intptr_t)s->owner, queued ? "queued ahead" : "a holder");
	cr_assert_str_eq(s->waits->name, waits, "step %zu (owner %d) must wait for %s, not %s", i,
	                 (int)(intptr_t)s->owner, waits, s->waits->name);
	cr_assert_eq(s->waits_mode, waits_mode, "step %zu (owner %d) must wait for %s", i,
	             (int)(intptr_t)s->owner, mode_name(waits_mode));
}

/* Owner 1 holds x, owner 2 holds y, 1 waits for y, then 2 asks for x.
 * Whether that is a cycle depends on the modes: readers that share are no
 * edge. */
struct pair_case {
	int x1, y2, y1, x2; /* modes: 1 holds x, 2 holds y, 1 asks y, 2 asks x */
	int expect;
};

ParameterizedTestParameters(lease_table, two_owner_cycle)
{
	static struct pair_case cases[] = {
		{ COORD_WRITE, COORD_WRITE, COORD_WRITE, COORD_WRITE, COORD_EDEADLK },
		{ COORD_READ, COORD_WRITE, COORD_READ, COORD_WRITE, COORD_EDEADLK },
		{ COORD_READ, COORD_READ, COORD_WRITE, COORD_WRITE, COORD_EDEADLK },
		{ COORD_WRITE, COORD_WRITE, COORD_READ, COORD_READ, COORD_EDEADLK },
		/* 2 reads x beside reader 1: they share, 2 never waits */
		{ COORD_READ, COORD_WRITE, COORD_READ, COORD_READ, 1 },
	};
	return cr_make_param_array(struct pair_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct pair_case *c, lease_table, two_owner_cycle)
{
	int rc;
	hold(1, c->x1, "x");
	hold(2, c->y2, "y");
	queue(1, c->y1, "y");
	rc = ask(2, c->x2, "x");
	cr_assert_eq(rc, c->expect,
	             "1 holds %s x, 2 holds %s y, 1 waits %s y; 2 asking %s x must be %s, got %s",
	             mode_name(c->x1), mode_name(c->y2), mode_name(c->y1), mode_name(c->x2),
	             rc_name(c->expect), rc_name(rc));
	if (c->expect != COORD_EDEADLK) {
		cr_assert_null(lease_table_cycle(t), "a grant must not report a cycle");
		return;
	}
	const struct lt_cycle *cy = expect_cycle((int[]){ 2, 1 }, 2);
	expect_step(cy, 0, "y", c->y2, 0, "x", c->x2);
	expect_step(cy, 1, "x", c->x1, 0, "y", c->y1);
	cr_assert_eq(lease_table_waiters(t), 1, "owner 1 must still wait, and the refused 2 must not");
}

Test(lease_table, three_owner_cycle)
{
	struct lt_lease *z;
	hold(1, COORD_WRITE, "x");
	hold(2, COORD_WRITE, "y");
	z = hold(3, COORD_WRITE, "z");
	queue(1, COORD_WRITE, "y");
	queue(2, COORD_WRITE, "z");
	cr_assert_eq(ask(3, COORD_WRITE, "x"), COORD_EDEADLK,
	             "3 holds z and asks x (held by 1, who waits for 2, who waits for z): "
	             "must be refused");
	const struct lt_cycle *cy = expect_cycle((int[]){ 3, 1, 2 }, 3);
	expect_step(cy, 0, "z", COORD_WRITE, 0, "x", COORD_WRITE);
	expect_step(cy, 1, "x", COORD_WRITE, 0, "y", COORD_WRITE);
	expect_step(cy, 2, "y", COORD_WRITE, 0, "z", COORD_WRITE);
	cr_assert_eq(lease_table_waiters(t), 2, "owners 1 and 2 must still wait after the refusal");
	lease_table_release(t, z, "release");
	cr_assert(seen.ngranted == 1 && seen.granted_owner[0] == 2,
	          "releasing z must grant it to owner 2, the refused request must not stand in its way");
}

/* A reader queued behind a waiting writer waits for that writer, though
 * its read conflicts with no holder. */
Test(lease_table, cycle_through_a_queued_waiter)
{
	hold(1, COORD_READ, "x");
	hold(3, COORD_WRITE, "y");
	queue(2, COORD_WRITE, "x");
	queue(1, COORD_WRITE, "y");
	cr_assert_eq(ask(3, COORD_READ, "x"), COORD_EDEADLK,
	             "3's read of x queues behind writer 2, who waits for reader 1, who waits for 3's y: "
	             "must be refused");
	const struct lt_cycle *cy = expect_cycle((int[]){ 3, 2, 1 }, 3);
	expect_step(cy, 0, "y", COORD_WRITE, 0, "x", COORD_READ);
	expect_step(cy, 1, "x", COORD_WRITE, 1, "x", COORD_WRITE);
	expect_step(cy, 2, "x", COORD_READ, 0, "y", COORD_WRITE);
}

Test(lease_table, readers_sharing_are_not_edges)
{
	hold(1, COORD_READ, "x");
	hold(2, COORD_READ, "x");
	hold(3, COORD_WRITE, "y");
	queue(1, COORD_WRITE, "y");
	cr_assert_eq(ask(2, COORD_READ, "x"), 1,
	             "a nested read of x by reader 2 must be granted at once, whoever waits");
	cr_assert_eq(ask(3, COORD_READ, "x"), 1,
	             "3 reading x beside readers 1 and 2 waits for nobody: granted, though 1 waits for 3");
	cr_assert_null(lease_table_cycle(t), "no refusal, no cycle");
	cr_assert_eq(lease_table_waiters(t), 1, "only owner 1 waits");
}

/* A reader that waits only for a checkpoint's block waits for no owner,
 * not for the readers it would share with. */
Test(lease_table, a_block_is_not_an_edge)
{
	struct lt_lease *y;
	struct lt_resource *x;
	hold(1, COORD_READ, "x");
	y = hold(3, COORD_WRITE, "y");
	queue(1, COORD_WRITE, "y");
	x = lease_table_find(t, "x");
	lease_table_block(t, x, LT_BLOCK_READERS | LT_BLOCK_WRITERS);
	cr_assert_eq(ask(3, COORD_READ, "x"), 0,
	             "3 reading x behind a checkpoint's block must queue: reader 1 is no edge, the "
	             "block ends on its own");
	lease_table_block(t, x, 0);
	cr_assert(seen.ngranted == 1 && seen.granted_owner[0] == 3,
	          "lifting the block must grant owner 3 its read beside reader 1");
	lease_table_release(t, y, "release");
	cr_assert(seen.ngranted == 2 && seen.granted_owner[1] == 1,
	          "releasing y must grant owner 1's write");
}

Test(lease_table, no_cycle_when_the_path_does_not_return)
{
	/* a chain 4 -> 1 -> 2 -> 3, and a diamond: 5 -> {6, 7}, 7 -> 6 (ahead),
	 * both -> 8 */
	hold(1, COORD_WRITE, "x");
	hold(2, COORD_WRITE, "y");
	hold(3, COORD_WRITE, "z");
	queue(1, COORD_WRITE, "y");
	queue(2, COORD_WRITE, "z");
	cr_assert_eq(ask(4, COORD_WRITE, "x"), 0,
	             "4 holds nothing: waiting behind the chain 1 -> 2 -> 3 is no cycle");
	hold(6, COORD_READ, "a");
	hold(7, COORD_READ, "a");
	hold(8, COORD_WRITE, "b");
	hold(5, COORD_WRITE, "c");
	queue(6, COORD_WRITE, "b");
	queue(7, COORD_WRITE, "b");
	cr_assert_eq(ask(5, COORD_WRITE, "a"), 0,
	             "5 holds c, which nobody waits for: waiting for readers 6 and 7 is no cycle");
	cr_assert_null(lease_table_cycle(t), "a queued request must not report a cycle");
	cr_assert_eq(lease_table_waiters(t), 6, "all six requests must be queued");
}

Test(lease_table, refused_request_changes_nothing)
{
	struct lt_lease *l = NULL, *y;
	struct lt_waiter *w = NULL;
	struct lt_resource *x;
	int rc;
	hold(1, COORD_READ, "x");
	y = hold(2, COORD_WRITE, "y");
	hold(3, COORD_READ, "x");
	queue(1, COORD_WRITE, "y");
	x = lease_table_find(t, "x");
	rc = lease_table_request(t, "x", OWNER(2), COORD_WRITE, now, now + 500, LT_FOR_CLIENT, 7,
	                         "label", &l, &w);
	cr_assert_eq(rc, COORD_EDEADLK, "2 asking x while 1 waits for 2 must be refused, got %s",
	             rc_name(rc));
	cr_assert(!l && !w, "a refused request must hand out neither a lease nor a waiter");
	cr_assert_eq(lease_table_waiters(t), 1, "the refusal must not queue a waiter");
	cr_assert_eq(x->nwaiters, 0, "x's queue must stay empty");
	cr_assert(x->readers == 2 && x->writers == 0, "x's holders must be untouched (%d r, %d w)",
	          x->readers, x->writers);
	cr_assert_eq(lease_table_leases(t), 3, "no lease may come or go");
	cr_assert_eq(lease_table_resources(t), 2, "no resource may come or go");
	cr_assert_eq(lease_table_next_deadline(t), -1, "the refused request's deadline stayed armed");
	cr_assert(seen.ngranted == 0 && seen.nfailed == 0 && seen.released == 0,
	          "a refusal must call no callback");
	lease_table_release(t, y, "release");
	cr_assert_null(lease_table_cycle(t), "a release must clear the last refusal's cycle");
	cr_assert(seen.ngranted == 1 && seen.granted_owner[0] == 1,
	          "releasing y must grant owner 1, who waited through the refusal");
	cr_assert_eq(ask(2, COORD_WRITE, "x"), 0,
	             "once the cycle is gone owner 2 must be able to queue for x");
}

Test(lease_table, try_once_and_self_deadlock_report_no_cycle)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int rc;
	hold(1, COORD_WRITE, "x");
	hold(2, COORD_WRITE, "y");
	queue(1, COORD_WRITE, "y");
	rc = lease_table_request(t, "x", OWNER(2), COORD_WRITE, now, now, LT_FOR_CLIENT, 0, NULL, &l, &w);
	cr_assert_eq(rc, COORD_EBUSY, "a try-once never waits, so it is busy, not a deadlock; got %s",
	             rc_name(rc));
	cr_assert_null(lease_table_cycle(t), "a try-once must report no cycle");
	cr_assert_eq(ask(2, COORD_READ, "y"), COORD_EDEADLK, "read on a held write must be refused");
	cr_assert_null(lease_table_cycle(t), "a self-deadlock is no cycle through others");
}

Test(lease_table, checkpoint_waiters_are_edges)
{
	hold(1, COORD_WRITE, "x");
	hold(2, COORD_WRITE, "y");
	cr_assert_eq(ask_for(1, COORD_WRITE, "y", LT_FOR_CHECKPOINT), 0,
	             "owner 1's checkpoint of y must queue behind writer 2");
	cr_assert_eq(ask(2, COORD_WRITE, "x"), COORD_EDEADLK,
	             "2 asking x, held by 1 whose checkpoint waits for 2: must be refused");
	expect_cycle((int[]){ 2, 1 }, 2);
	hold(3, COORD_READ, "z");
	cr_assert_eq(ask_for(3, COORD_WRITE, "z", LT_FOR_CHECKPOINT), COORD_EDEADLK,
	             "a checkpoint asked by the holder of the resource would wait for itself");
	const struct lt_cycle *cy = expect_cycle((int[]){ 3 }, 1);
	expect_step(cy, 0, "z", COORD_READ, 0, "z", COORD_WRITE);
	hold(4, COORD_WRITE, "u");
	hold(5, COORD_WRITE, "v");
	queue(5, COORD_WRITE, "u");
	cr_assert_eq(ask_for(4, COORD_WRITE, "v", LT_FOR_CHECKPOINT), COORD_EDEADLK,
	             "a checkpoint request can close a cycle too");
	expect_cycle((int[]){ 4, 5 }, 2);
}

Test(lease_table, long_cycle_keeps_its_ends)
{
	enum { N = LT_CYCLE_MAX + 4 };
	char name[N + 1][8];
	const struct lt_cycle *cy;
	lease_table_free(t);
	t = lease_table_new(&events, NULL, 64, 64, 1);
	cr_assert(t, "lease_table_new returned NULL");
	for (int i = 1; i <= N; i++) {
		snprintf(name[i], sizeof name[i], "r%d", i);
		hold(i, COORD_WRITE, name[i]);
	}
	for (int i = 1; i < N; i++)
		queue(i, COORD_WRITE, name[i + 1]);
	cr_assert_eq(ask(N, COORD_WRITE, name[1]), COORD_EDEADLK,
	             "closing a ring of %d owners must be refused", N);
	cy = lease_table_cycle(t);
	cr_assert(cy && cy->len == N, "the cycle must count all %d owners, got %zu", N,
	          cy ? cy->len : 0);
	cr_assert_eq((int)(intptr_t)cy->step[0].owner, N, "the requester must come first");
	for (int i = 1; i < LT_CYCLE_MAX - 1; i++)
		cr_assert_eq((int)(intptr_t)cy->step[i].owner, i, "step %d must be owner %d", i, i);
	cr_assert_eq((int)(intptr_t)cy->step[LT_CYCLE_MAX - 1].owner, N - 1,
	             "the last step kept must be the last owner, %d, who waits for the requester",
	             N - 1);
	cr_assert_str_eq(cy->step[LT_CYCLE_MAX - 1].waits->name, name[N],
	                 "the last owner must wait for the requester's %s", name[N]);
}

/* Recall: a conflicting request queued behind holders recalls each of
 * them once; a reader queued behind readers recalls nobody. */
static int nrecalled;
static struct lt_lease *recalled[MAXEV];
static void ev_recall(void *ud, struct lt_lease *l)
{
	(void)ud;
	recalled[nrecalled++] = l;
}

Test(lease_table, conflicting_waiters_recall_holders_once)
{
	static const struct lt_events ev = {
		.now = ev_now, .resource_keep = keep_all, .granted = ev_granted,
		.waiter_failed = ev_failed, .released = ev_released, .recall = ev_recall,
	};
	struct lease_table *rt = lease_table_new(&ev, NULL, 16, 16, 1);
	struct lt_lease *r1 = NULL, *r2 = NULL, *l = NULL;
	struct lt_waiter *w = NULL;
	nrecalled = 0;
	cr_assert_eq(lease_table_request(rt, "db", OWNER(1), COORD_READ, now, -1, LT_FOR_CLIENT, 0,
	                                 NULL, &r1, &w), 1, "first reader");
	cr_assert_eq(lease_table_request(rt, "db", OWNER(2), COORD_READ, now, -1, LT_FOR_CLIENT, 0,
	                                 NULL, &r2, &w), 1, "second reader");
	cr_assert_eq(nrecalled, 0, "readers sharing recall nobody");
	cr_assert_eq(r1->recalled_ms, -1, "a fresh lease is not recalled");
	now += 5;
	cr_assert_eq(lease_table_request(rt, "db", OWNER(3), COORD_WRITE, now, -1, LT_FOR_CLIENT, 0,
	                                 NULL, &l, &w), 0, "the writer queues");
	cr_assert_eq(nrecalled, 2, "a queued writer must recall both readers, got %d", nrecalled);
	cr_assert_eq(r1->recalled_ms, now, "the recall time is recorded");
	cr_assert_eq(lease_table_request(rt, "db", OWNER(4), COORD_WRITE, now, -1, LT_FOR_CLIENT, 0,
	                                 NULL, &l, &w), 0, "a second writer queues");
	cr_assert_eq(nrecalled, 2, "a lease is recalled once, not once per waiter");
	lease_table_free(rt);
}

/* ---- hold limits ---- */

/* Advances the clock to `at` and expires what is due. */
static void run_until(int64_t at)
{
	now = at;
	lease_table_expire(t, now);
}

Test(lease_table, max_hold_falls_due_once_after_the_grant)
{
	struct lt_lease *l = take(1, COORD_WRITE, -1);
	int64_t granted = now;
	cr_assert_eq(lease_table_set_limits(t, l->res, 500, 0), 0, "set limits");
	cr_assert_eq(lease_table_next_deadline(t), granted + 500, "due max_hold after the grant");
	run_until(granted + 499);
	cr_assert_eq(seen.nlimits, 0, "not before its time");
	run_until(granted + 500);
	cr_assert_eq(seen.nlimits, 1, "due at its time");
	cr_assert(seen.limit_lease[0] == l && seen.limit_why[0] == LT_LIMIT_MAX_HOLD, "max hold");
	cr_assert_eq(lease_table_next_deadline(t), -1, "once: nothing else is due");
	run_until(granted + 5000);
	cr_assert_eq(seen.nlimits, 1, "a limit falls due once per lease");
	cr_assert_eq(seen.released, 0, "the table never takes the lease itself");
	lease_table_release(t, l, "release");
}

Test(lease_table, recall_grace_counts_from_the_recall)
{
	struct lt_lease *r = take(1, COORD_READ, -1);
	cr_assert_eq(lease_table_set_limits(t, r->res, 0, 100), 0, "set limits");
	cr_assert_eq(lease_table_next_deadline(t), -1, "nothing due while nobody waits");
	now += 1000;
	take(2, COORD_READ, -1);
	cr_assert_eq(lease_table_next_deadline(t), -1, "a reader does not recall a reader");
	take(3, COORD_WRITE, -1);
	cr_assert_eq(r->recalled_ms, now, "the queued writer recalls the reader");
	cr_assert_eq(lease_table_next_deadline(t), now + 100, "due recall_grace after the recall");
	run_until(now + 100);
	cr_assert_eq(seen.nlimits, 2, "both readers were recalled and fall due");
	cr_assert(seen.limit_why[0] == LT_LIMIT_RECALL_GRACE && seen.limit_why[1] == LT_LIMIT_RECALL_GRACE,
	          "recall grace");
}

Test(lease_table, the_earlier_limit_wins)
{
	struct lt_lease *w = take(1, COORD_WRITE, -1);
	int64_t granted = now;
	cr_assert_eq(lease_table_set_limits(t, w->res, 500, 100), 0, "set limits");
	now = granted + 450;
	take(2, COORD_WRITE, -1);
	cr_assert_eq(lease_table_next_deadline(t), granted + 500,
	             "max hold (at 500) comes before the recall grace (at 550)");
	run_until(granted + 500);
	cr_assert(seen.nlimits == 1 && seen.limit_why[0] == LT_LIMIT_MAX_HOLD, "max hold first");
	run_until(granted + 600);
	cr_assert_eq(seen.nlimits, 1, "and only once");
}

Test(lease_table, limits_set_late_apply_to_holders_and_a_release_disarms)
{
	struct lt_lease *a = take(1, COORD_READ, -1), *b = take(2, COORD_READ, -1);
	int64_t granted = now;
	now += 300;
	cr_assert_eq(lease_table_set_limits(t, a->res, 200, 0), 0, "set limits");
	cr_assert_eq(lease_table_next_deadline(t), granted + 200,
	             "a limit already passed is due at once");
	lease_table_release(t, a, "release");
	run_until(now);
	cr_assert(seen.nlimits == 1 && seen.limit_lease[0] == b, "only the lease still held: %d",
	          seen.nlimits);
	cr_assert_eq(lease_table_set_limits(t, b->res, 0, 0), 0, "clear limits");
	cr_assert_eq(lease_table_next_deadline(t), -1, "cleared limits leave nothing armed");
}

Test(lease_table, limits_off_leave_the_heap_to_waiters)
{
	struct lt_lease *w = take(1, COORD_WRITE, -1);
	cr_assert_eq(lease_table_set_limits(t, w->res, 0, 50), 0, "set limits");
	take(2, COORD_WRITE, 1000);
	cr_assert_eq(lease_table_next_deadline(t), now + 50, "the recall grace is first");
	cr_assert_eq(lease_table_set_limits(t, w->res, 0, 0), 0, "clear limits");
	cr_assert_eq(lease_table_next_deadline(t), now + 1000, "then only the waiter's timeout");
	run_until(now + 1000);
	cr_assert(seen.nfailed == 1 && seen.failed_err[0] == COORD_ETIMEDOUT && seen.nlimits == 0,
	          "the waiter timed out, no limit fell due");
}

/* Readers let in when a checkpoint's block lifts, with a writer queued
 * behind them, are recalled at once: the writer waits for them. */
Test(lease_table, holders_granted_ahead_of_a_waiting_writer_are_recalled)
{
	struct lt_events ev = events;
	struct lease_table *t2;
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int rc;
	ev.recall = ev_recall;
	nrecalled = 0;
	t2 = lease_table_new(&ev, NULL, 16, 16, 1);
	cr_assert(t2, "table");
	rc = lease_table_request(t2, "db", OWNER(9), COORD_WRITE, now, -1, LT_FOR_CHECKPOINT, 0, NULL,
	                         &l, &w);
	cr_assert_eq(rc, 1, "the checkpoint's turn at once");
	lease_table_block(t2, lease_table_find(t2, "db"), LT_BLOCK_READERS | LT_BLOCK_WRITERS);
	rc = lease_table_request(t2, "db", OWNER(1), COORD_READ, now, -1, LT_FOR_CLIENT, 0, NULL, &l, &w);
	cr_assert_eq(rc, 0, "a reader waits for the checkpoint");
	rc = lease_table_request(t2, "db", OWNER(2), COORD_WRITE, now, -1, LT_FOR_CLIENT, 0, NULL, &l,
	                         &w);
	cr_assert_eq(rc, 0, "a writer queues behind it");
	cr_assert_eq(nrecalled, 0, "nobody holds a lease yet");
	lease_table_block(t2, lease_table_find(t2, "db"), 0);
	cr_assert_eq(nrecalled, 1, "the reader granted after the checkpoint is recalled for the writer");
	lease_table_free(t2);
}

static void count_one(struct lt_resource *res, void *arg)
{
	(void)res;
	++*(int *)arg;
}

/* Thousands of resources (the name index doubles many times): each is
 * found by its name and only by it, a closed one is gone from the index
 * and the walk, and a name opened again is a new resource. */
Test(lease_table, thousands_of_resources_are_each_found_by_name)
{
	enum { N = 5000 };
	static struct lt_lease *l[N];
	char name[32];
	int walked = 0;
	lease_table_free(t);
	t = lease_table_new(&events, NULL, N, 16, 1);
	lease_table_seed_hash(t, 0x2545f4914f6cdd1dull); /* as the broker does */
	keep = 0; /* a resource closes when its last lease goes */
	for (int i = 0; i < N; i++) {
		struct lt_waiter *w = NULL;
		snprintf(name, sizeof name, "key:r%d", i);
		cr_assert_eq(lease_table_request(t, name, OWNER(1), COORD_WRITE, now, -1, LT_FOR_CLIENT,
		                                 0, NULL, &l[i], &w),
		             1, "%s not granted at once", name);
	}
	cr_assert_eq(lease_table_resources(t), N, "%zu resources", lease_table_resources(t));
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "key:r%d", i);
		cr_assert_eq(lease_table_find(t, name), l[i]->res, "%s found as another resource",
		             name);
	}
	cr_assert_null(lease_table_find(t, "key:r"), "a name never opened was found");
	cr_assert_null(lease_table_find(t, "key:r50000"), "a name never opened was found");
	for (int i = 0; i < N; i += 2)
		lease_table_release(t, l[i], "release");
	for (int i = 0; i < N; i++) {
		struct lt_resource *r;
		snprintf(name, sizeof name, "key:r%d", i);
		r = lease_table_find(t, name);
		if (i % 2)
			cr_assert_eq(r, l[i]->res, "%s lost when others closed", name);
		else
			cr_assert_null(r, "%s is still found after it closed", name);
	}
	lease_table_foreach(t, count_one, &walked);
	cr_assert_eq(walked, N / 2, "the walk sees %d resources, want %d", walked, N / 2);
	{
		struct lt_lease *again = NULL;
		struct lt_waiter *w = NULL;
		cr_assert_eq(lease_table_request(t, "key:r0", OWNER(2), COORD_READ, now, -1,
		                                 LT_FOR_CLIENT, 0, NULL, &again, &w),
		             1, "key:r0 opened again");
		cr_assert_eq(lease_table_find(t, "key:r0"), again->res, "key:r0 not found again");
		lease_table_release(t, again, "release");
	}
	for (int i = 1; i < N; i += 2)
		lease_table_release(t, l[i], "release");
	cr_assert_eq(lease_table_resources(t), 0, "%zu resources left", lease_table_resources(t));
}
