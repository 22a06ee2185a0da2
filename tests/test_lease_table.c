/* Unit tests of the lease table: grant rules, fairness, reader batching,
 * writer preference, timeouts, self-deadlock and token order.  No broker,
 * no I/O: the table's callbacks record what the server would be told. */
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

/* The server keeps resources with a durable token; so does this test, so
 * tokens are checked across idle periods. */
static int keep_all(void *ud, struct lt_resource *res) { (void)ud; (void)res; return keep; }

static const struct lt_events events = {
	.now = ev_now, .resource_keep = keep_all, .granted = ev_granted, .waiter_failed = ev_failed, .released = ev_released,
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
