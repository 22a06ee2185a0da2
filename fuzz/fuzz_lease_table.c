/* Fuzz target: the lease table as a state machine.  The input is a small
 * configuration and then a sequence of operations, two bytes each, on one
 * table with 8 owners and 4 resources: requests (read, write, checkpoint;
 * try-once, timed, forever), releases, cancels, disconnects, hold limits
 * (max hold and recall grace of a few ms, 0 for none; durable, so
 * resource_open puts them back when a resource reopens), clock steps with
 * expiry (by an amount, to the next deadline, or 1 ms short of it),
 * checkpoint blocks and lifts, changes to what the callbacks answer.
 * Requests that queue behind holders recall them.  Operations are issued
 * the way the broker issues them: an owner with a queued request sends
 * no other (COORD_EBUSYCONN), a block is set only where a checkpoint
 * could start (no holder), after a checkpoint's immediate turn the
 * resource is blocked or closed, and a disconnect cancels the owner's
 * waiter and reclaims all its leases.
 *
 * A shadow model, built only from the callbacks and return values, holds
 * every holder and every queue in order.  Each request's outcome is
 * predicted from the model before the call (self-deadlock, immediate
 * grant, COORD_EBUSY, a wait-for cycle found by a breadth-first search
 * written here, COORD_ELIMIT, queued) and must match, and a refused
 * request must change nothing and call no callback that changes state.
 * After every operation the table must agree with the model:
 *   - one writer XOR readers per resource, writers/readers matching the
 *     holder list, the queue and its counts matching the model's;
 *   - no waiter at a queue's head that could be granted (dispatch left
 *     nothing grantable), and grants only to the head of the queue (FIFO;
 *     a reader batch is granted head first, one by one);
 *   - each write grant takes the resource's last token + 1, also across
 *     the resource leaving and re-entering the table; lease ids rise by 1;
 *   - lease/waiter/resource counts match what the callbacks saw, an idle
 *     resource is kept only if resource_keep said so;
 *   - the heap's next deadline is the earliest of the waiters' timeouts
 *     and the hold limits not yet fired: never later (a timeout or limit
 *     would be missed), never earlier (a timer left behind, e.g. by a
 *     released lease), never LT_NEVER, -1 only when there is none;
 *   - a COORD_EDEADLK cycle is a real cycle of the wait-for graph and a
 *     shortest one, and a request that queued closed none;
 *   - a request that queues recalls each conflicting holder once, stamped
 *     with its time; otherwise a recall comes only for a holder that
 *     conflicts with the waiter left at the head of its queue (holders
 *     granted ahead of a waiting writer, after a checkpoint say); and after
 *     every operation every holder that conflicts with its queue's head
 *     waiter has been recalled;
 *   - limit() is called only by lease_table_expire(), once per lease at
 *     most, only for a lease still held, never before its due time (the
 *     grant + max_hold_ms or the recall + recall_grace_ms, whichever is
 *     first, by the limits in force then) and, by the time expire returns,
 *     for every held lease due by then; its reason is
 *     LT_LIMIT_RECALL_GRACE exactly when the recall grace has run out;
 *     limit_fired says it was called.  The callback only records, as the
 *     broker's only starts a revocation; setting limits changes nothing
 *     else.
 * Freed leases or waiters seen by a callback are ASan's to report. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "lease_table.h"

#define NOWNERS 8
#define NRES 4
#define MAX_HELD 64 /* above the largest max_leases (16) */

static const char *const names[NRES] = { "a", "b", "/db/c", "/db/d" };

struct sh_lease {
	struct lt_lease *l;
	int owner, res, mode;
	uint64_t id;
	int recalled;
	int64_t granted_ms, recalled_ms; /* the model's clock at the grant, the recall (-1) */
	int fired;                /* limit() was called for it */
};

struct sh_waiter {
	struct lt_waiter *w;
	int owner, mode, purpose;
	int64_t deadline;
};

struct model {
	struct lease_table *t;
	char owners[NOWNERS];     /* their addresses are the owners */
	char ext[NRES];           /* their addresses are res->ext */
	int64_t now;
	size_t max_leases, max_waiters;
	uint64_t next_id;
	uint32_t next_seq;
	/* what the callbacks answer */
	unsigned keep_mask;
	int refuse_grant, refuse_open; /* one-shot */
	int release_bits, checkpoint_bits;
	/* the shadow */
	int open[NRES];
	struct lt_resource *res[NRES];
	int blocked[NRES];
	uint64_t token[NRES];     /* last write token granted: the durable ceiling */
	uint32_t max_hold[NRES], grace[NRES]; /* hold limits, durable like the token:
	                             resource_open puts them in, as the broker's does */
	struct sh_lease held[MAX_HELD];
	size_t nheld;
	struct sh_waiter queue[NRES][NOWNERS];
	size_t qlen[NRES];
	int waits_on[NOWNERS];    /* resource of the owner's waiter, or -1 */
	/* the operation in progress */
	unsigned changes;         /* grants, turns, failures, releases seen */
	unsigned recalls;
	int req_res, req_mode;    /* of the request in progress; -1: none */
	int expiring, freeing;
	const char *why;
	const char *label;
	struct lt_lease *last_grant;
	struct lt_waiter *last_grant_w;
	struct lt_waiter *refused_w;
	struct lt_lease *released;
};

static struct model m;

static int owner_index(const void *owner)
{
	const char *p = owner;
	FUZZ_CHECK(p >= m.owners && p < m.owners + NOWNERS, "an owner the table was never given");
	return (int)(p - m.owners);
}

static int res_index(const struct lt_resource *res)
{
	for (int r = 0; r < NRES; r++)
		if (strcmp(res->name, names[r]) == 0)
			return r;
	FUZZ_CHECK(0, "a resource name that was never requested");
	return -1;
}

/* The open resource behind a callback's pointer. */
static int open_res(const struct lt_resource *res)
{
	int r = res_index(res);
	FUZZ_CHECK(m.open[r] && m.res[r] == res, "a callback saw a resource that is not open");
	FUZZ_CHECK(res->ext == &m.ext[r], "res->ext lost what resource_open put there");
	return r;
}

static size_t held_find(const struct lt_lease *l)
{
	for (size_t i = 0; i < m.nheld; i++)
		if (m.held[i].l == l)
			return i;
	return (size_t)-1;
}

static void held_remove(size_t i)
{
	m.held[i] = m.held[--m.nheld];
}

/* Writers and readers of resource r in the model. */
static void held_count(int r, int *writers, int *readers)
{
	*writers = *readers = 0;
	for (size_t i = 0; i < m.nheld; i++)
		if (m.held[i].res == r)
			++*(m.held[i].mode == COORD_WRITE ? writers : readers);
}

/* When held lease h falls due under the limits in force now, as
 * lease_table_set_limits() says: max_hold_ms after its grant or
 * recall_grace_ms after its recall, whichever is first, once.  LT_NEVER
 * if no limit applies or it fired already. */
static int64_t model_due(const struct sh_lease *h)
{
	int64_t due = LT_NEVER;
	if (h->fired)
		return LT_NEVER;
	if (m.max_hold[h->res])
		due = h->granted_ms + m.max_hold[h->res];
	if (m.grace[h->res] && h->recalled_ms >= 0 && h->recalled_ms + m.grace[h->res] < due)
		due = h->recalled_ms + m.grace[h->res];
	return due;
}

/* The reason limit() must give for h at m.now, lease_table_expire()'s
 * rule: the recall grace once it has run out, even if the max hold ran
 * out first (the holder was asked already), else the max hold. */
static int model_why(const struct sh_lease *h)
{
	uint32_t grace = m.grace[h->res];
	return h->recalled_ms >= 0 && grace && h->recalled_ms + grace <= m.now ? LT_LIMIT_RECALL_GRACE
	                                                                        : LT_LIMIT_MAX_HOLD;
}

static int model_compatible(int r, int mode)
{
	int writers, readers;
	held_count(r, &writers, &readers);
	if (mode == COORD_WRITE)
		return !writers && !readers && !(m.blocked[r] & LT_BLOCK_WRITERS);
	return !writers && !(m.blocked[r] & LT_BLOCK_READERS);
}

static void queue_remove(int r, size_t pos)
{
	FUZZ_CHECK(m.waits_on[m.queue[r][pos].owner] == r, "model: waiter index out of step");
	m.waits_on[m.queue[r][pos].owner] = -1;
	memmove(&m.queue[r][pos], &m.queue[r][pos + 1], (m.qlen[r] - pos - 1) * sizeof m.queue[r][0]);
	m.qlen[r]--;
}

/* The position of w in its resource's queue in the model. */
static size_t queue_find(int r, const struct lt_waiter *w)
{
	for (size_t i = 0; i < m.qlen[r]; i++)
		if (m.queue[r][i].w == w)
			return i;
	FUZZ_CHECK(0, "a callback saw a waiter that is not queued");
	return 0;
}

/* ---- callbacks ---- */

static int64_t ev_now(void *ud)
{
	(void)ud;
	return m.now;
}

static int ev_resource_open(void *ud, struct lt_resource *res)
{
	int r = res_index(res);
	(void)ud;
	FUZZ_CHECK(!m.open[r], "resource_open for a resource already open");
	FUZZ_CHECK(!res->holders && !res->head && !res->blocked && !res->writers && !res->readers &&
	                   !res->max_hold_ms && !res->recall_grace_ms,
	           "a new resource is not empty");
	if (m.refuse_open) {
		m.refuse_open = 0;
		return COORD_EIO;
	}
	m.open[r] = 1;
	m.res[r] = res;
	m.blocked[r] = 0;
	res->token = m.token[r];
	res->max_hold_ms = m.max_hold[r];
	res->recall_grace_ms = m.grace[r];
	res->ext = &m.ext[r];
	return 0;
}

static int ev_resource_keep(void *ud, struct lt_resource *res)
{
	int r = open_res(res);
	(void)ud;
	FUZZ_CHECK(!res->holders && !res->head && !res->blocked, "resource_keep asked for a busy resource");
	return (int)(m.keep_mask >> r) & 1;
}

static void ev_resource_close(void *ud, struct lt_resource *res)
{
	int r = open_res(res);
	(void)ud;
	if (!m.freeing) {
		FUZZ_CHECK(!res->holders && !res->head && !res->blocked && !m.blocked[r],
		           "a busy resource was closed");
		FUZZ_CHECK(!(m.keep_mask >> r & 1), "a resource closed though resource_keep keeps it");
		FUZZ_CHECK(res->token == m.token[r], "a resource closed with a token nobody was granted");
	}
	m.open[r] = 0;
	m.res[r] = NULL;
}

static int ev_grant(void *ud, struct lt_lease *l, struct lt_waiter *w)
{
	int r = open_res(l->res), o = owner_index(l->owner);
	(void)ud;
	FUZZ_CHECK(l->id == m.next_id, "lease ids do not rise by one");
	FUZZ_CHECK(l->mode == COORD_READ || l->mode == COORD_WRITE, "a grant of no mode");
	FUZZ_CHECK(l->token == m.token[r] + (l->mode == COORD_WRITE),
	           "a write grant's token is not the last + 1, or a read's not the last");
	FUZZ_CHECK(l->granted_ms == m.now, "a grant not stamped with the table's clock");
	FUZZ_CHECK(l->recalled_ms == -1, "a new lease that is already recalled");
	FUZZ_CHECK(!l->limit_fired, "a new lease whose hold limit already fell due");
	FUZZ_CHECK(m.nheld < m.max_leases, "a grant past max_leases");
	FUZZ_CHECK(held_find(l) == (size_t)-1, "a lease granted twice");
	FUZZ_CHECK(model_compatible(r, l->mode), "a grant that conflicts with a holder or a block");
	if (w) {
		FUZZ_CHECK(m.qlen[r] && m.queue[r][0].w == w, "a waiter granted before the head (FIFO)");
		FUZZ_CHECK(w->purpose == LT_FOR_CLIENT, "a lease granted to a checkpoint waiter");
		FUZZ_CHECK(w->owner == l->owner && w->mode == l->mode && w->res == l->res,
		           "a lease that is not what its waiter asked for");
		FUZZ_CHECK(l->res->head != w, "a waiter granted while still queued");
		FUZZ_CHECK(strcmp(l->label, w->label) == 0, "the lease lost its waiter's label");
	} else {
		FUZZ_CHECK(m.label && strcmp(l->label, m.label) == 0, "an immediate grant outside a request");
	}
	if (m.refuse_grant) {
		m.refuse_grant = 0;
		m.refused_w = w;
		return COORD_EIO;
	}
	m.next_id++;
	if (l->mode == COORD_WRITE)
		m.token[r] = l->token;
	FUZZ_CHECK(m.nheld < MAX_HELD, "model: too many leases");
	m.held[m.nheld++] = (struct sh_lease){ l, o, r, l->mode, l->id, 0, m.now, -1, 0 };
	m.last_grant = l;
	m.last_grant_w = w;
	m.changes++;
	return 0;
}

static int ev_granted(void *ud, struct lt_waiter *w, struct lt_lease *l)
{
	int r = open_res(w->res), bits = 0;
	(void)ud;
	FUZZ_CHECK(m.qlen[r] && m.queue[r][0].w == w, "a waiter's turn before the head's (FIFO)");
	FUZZ_CHECK(w->res->head != w, "a waiter's turn while still queued");
	if (w->purpose == LT_FOR_CLIENT) {
		FUZZ_CHECK(l && l == m.last_grant && w == m.last_grant_w,
		           "granted() with a lease grant() did not accept for it");
	} else {
		FUZZ_CHECK(w->purpose == LT_FOR_CHECKPOINT && !l, "a checkpoint's turn with a lease");
		FUZZ_CHECK(!w->res->holders && !w->res->writers && !w->res->readers &&
		                   !(w->res->blocked & LT_BLOCK_WRITERS),
		           "a checkpoint's turn while someone holds the resource");
		bits = m.checkpoint_bits;
		m.blocked[r] |= bits;
	}
	queue_remove(r, 0);
	m.changes++;
	return bits;
}

static void ev_waiter_failed(void *ud, struct lt_waiter *w, int err)
{
	int r = open_res(w->res);
	size_t pos = queue_find(r, w);
	(void)ud;
	FUZZ_CHECK(w->res->head != w && !w->next && !w->prev, "a failed waiter still queued");
	if (err == COORD_ETIMEDOUT) {
		FUZZ_CHECK(m.expiring, "a timeout outside lease_table_expire");
		FUZZ_CHECK(m.queue[r][pos].deadline >= 0 && m.queue[r][pos].deadline <= m.now,
		           "a waiter timed out before its deadline");
	} else {
		FUZZ_CHECK(pos == 0, "a refused grant to a waiter that was not at the head");
		FUZZ_CHECK((err == COORD_ELIMIT && m.nheld >= m.max_leases) ||
		                   (err == COORD_EIO && m.refused_w == w),
		           "a waiter failed with a code nobody gave");
	}
	queue_remove(r, pos);
	m.changes++;
}

static int ev_released(void *ud, struct lt_lease *l, const char *why)
{
	int r = open_res(l->res), writers, readers, bits;
	size_t i = held_find(l);
	(void)ud;
	FUZZ_CHECK(i != (size_t)-1, "released() for a lease that is not held");
	FUZZ_CHECK(l == m.released && why && m.why && strcmp(why, m.why) == 0,
	           "released() for another lease or reason than the one released");
	for (const struct lt_lease *h = l->res->holders; h; h = h->res_next)
		FUZZ_CHECK(h != l, "released() while the lease is still a holder");
	held_remove(i);
	m.released = NULL; /* seen; its memory may serve the next grant */
	held_count(r, &writers, &readers);
	FUZZ_CHECK(l->res->writers == writers && l->res->readers == readers,
	           "released() sees counters that still count the lease");
	bits = l->mode == COORD_WRITE ? m.release_bits : 0;
	m.blocked[r] |= bits;
	m.changes++;
	return bits;
}

static void ev_recall(void *ud, struct lt_lease *l)
{
	int r = open_res(l->res);
	size_t i = held_find(l);
	(void)ud;
	FUZZ_CHECK(i != (size_t)-1, "recall() for a lease that is not held");
	{
		const struct lt_waiter *head = l->res->head;
		int by_request = m.req_res == r && (m.req_mode == COORD_WRITE || l->mode == COORD_WRITE);
		int by_head = head && (head->mode == COORD_WRITE || l->mode == COORD_WRITE);
		FUZZ_CHECK(by_request || by_head,
		           "a recall of a holder that conflicts with neither the request nor the "
		           "head waiter");
	}
	FUZZ_CHECK(!m.held[i].recalled, "a lease recalled twice");
	FUZZ_CHECK(l->recalled_ms == m.now, "a recall not stamped with the request's time");
	m.held[i].recalled = 1;
	m.held[i].recalled_ms = m.now;
	m.recalls++;
}

/* Records the hold limit that fell due and changes nothing, as the
 * broker's only starts a revocation. */
static void ev_limit(void *ud, struct lt_lease *l, int why)
{
	size_t i = held_find(l);
	int r;
	(void)ud;
	FUZZ_CHECK(m.expiring, "limit() outside lease_table_expire");
	FUZZ_CHECK(i != (size_t)-1 && m.held[i].id == l->id,
	           "limit() for a lease that is not held (released, and its timer left in the heap?)");
	r = open_res(l->res);
	FUZZ_CHECK(m.held[i].res == r, "limit() for a lease on another resource than it was granted");
	FUZZ_CHECK(!m.held[i].fired, "limit() twice for one lease");
	FUZZ_CHECK(model_due(&m.held[i]) <= m.now,
	           "limit() before the lease's due time (grant + max_hold_ms, recall + recall_grace_ms)");
	FUZZ_CHECK(why == model_why(&m.held[i]),
	           "limit() gives the wrong reason: LT_LIMIT_RECALL_GRACE is for a recall grace that ran out");
	FUZZ_CHECK(l->limit_fired, "limit() for a lease whose limit_fired is not set");
	m.held[i].fired = 1;
}

static const struct lt_events events = {
	.now = ev_now,
	.resource_open = ev_resource_open,
	.resource_keep = ev_resource_keep,
	.resource_close = ev_resource_close,
	.grant = ev_grant,
	.granted = ev_granted,
	.waiter_failed = ev_waiter_failed,
	.released = ev_released,
	.recall = ev_recall,
	.limit = ev_limit,
};

/* ---- the table against the model ---- */

struct snapshot {
	size_t leases, waiters;
	int64_t next_deadline;
	struct {
		uint64_t token;
		int writers, readers, blocked;
		size_t nholders, nwaiters;
		uint64_t holders[MAX_HELD];
		const struct lt_waiter *queue[NOWNERS];
	} res[NRES];
};

/* What a refused request must not change.  A resource that is absent
 * counts as present, idle, unblocked, with its durable token: a refusal
 * may leave behind a resource that resource_keep keeps. */
static void snapshot(struct snapshot *s)
{
	memset(s, 0, sizeof *s);
	s->leases = lease_table_leases(m.t);
	s->waiters = lease_table_waiters(m.t);
	s->next_deadline = lease_table_next_deadline(m.t);
	for (int r = 0; r < NRES; r++) {
		struct lt_resource *res = lease_table_find(m.t, names[r]);
		s->res[r].token = m.token[r];
		if (!res)
			continue;
		s->res[r].token = res->token;
		s->res[r].writers = res->writers;
		s->res[r].readers = res->readers;
		s->res[r].blocked = res->blocked;
		for (struct lt_lease *h = res->holders; h && s->res[r].nholders < MAX_HELD; h = h->res_next)
			s->res[r].holders[s->res[r].nholders++] = h->id;
		for (struct lt_waiter *w = res->head; w && s->res[r].nwaiters < NOWNERS; w = w->next)
			s->res[r].queue[s->res[r].nwaiters++] = w;
	}
}

static void count_resource(struct lt_resource *res, void *arg)
{
	int r = open_res(res);
	unsigned *seen = arg;
	FUZZ_CHECK(!(*seen & 1u << r), "lease_table_foreach visited a resource twice");
	*seen |= 1u << r;
}

static void check_resource(int r)
{
	struct lt_resource *res = lease_table_find(m.t, names[r]);
	const struct lt_lease *prev_l = NULL;
	const struct lt_waiter *prev_w = NULL;
	int writers = 0, readers = 0, mw, mr;
	size_t nholders = 0, pos = 0;

	FUZZ_CHECK((res != NULL) == m.open[r] && res == m.res[r],
	           "lease_table_find disagrees with resource_open/resource_close");
	if (!res) {
		FUZZ_CHECK(m.qlen[r] == 0 && m.blocked[r] == 0, "model: state of a closed resource");
		held_count(r, &mw, &mr);
		FUZZ_CHECK(!mw && !mr, "leases on a resource that was closed");
		return;
	}
	FUZZ_CHECK(res->token == m.token[r], "res->token is not the last write token granted");
	FUZZ_CHECK(res->blocked == m.blocked[r], "block bits differ from what was set and returned");
	FUZZ_CHECK(res->max_hold_ms == m.max_hold[r] && res->recall_grace_ms == m.grace[r],
	           "the hold limits in force are not the last ones set");
	for (const struct lt_lease *h = res->holders; h; h = h->res_next) {
		size_t i = held_find(h);
		FUZZ_CHECK(h->res_prev == prev_l && h->res == res, "the holder list is broken");
		FUZZ_CHECK(i != (size_t)-1 && m.held[i].res == r && m.held[i].mode == h->mode &&
		                   h->owner == &m.owners[m.held[i].owner] && h->id == m.held[i].id,
		           "a holder the callbacks never granted");
		FUZZ_CHECK((h->recalled_ms >= 0) == m.held[i].recalled, "recalled_ms set without a recall()");
		FUZZ_CHECK(h->recalled_ms == m.held[i].recalled_ms && h->granted_ms == m.held[i].granted_ms,
		           "a holder's granted_ms or recalled_ms changed after the fact");
		FUZZ_CHECK(h->limit_fired == m.held[i].fired, "limit_fired set without a limit() call");
		++*(h->mode == COORD_WRITE ? &writers : &readers);
		nholders++;
		prev_l = h;
	}
	held_count(r, &mw, &mr);
	FUZZ_CHECK((size_t)(mw + mr) == nholders, "a granted lease is missing from the holders");
	FUZZ_CHECK(res->writers == writers && res->readers == readers,
	           "writers/readers do not count the holder list");
	FUZZ_CHECK(writers <= 1 && !(writers && readers), "two writers, or a writer with readers");
	for (const struct lt_waiter *w = res->head; w; w = w->next) {
		FUZZ_CHECK(w->prev == prev_w && w->res == res, "the queue is broken");
		FUZZ_CHECK(pos < m.qlen[r] && m.queue[r][pos].w == w, "the queue is not in request order");
		prev_w = w;
		pos++;
	}
	FUZZ_CHECK(res->tail == prev_w && pos == m.qlen[r] && res->nwaiters == m.qlen[r],
	           "the queue's tail or length is wrong");
	if (res->head) {
		int mode = res->head->mode;
		FUZZ_CHECK(!model_compatible(r, mode), "a grantable waiter left at the head of the queue");
		for (const struct lt_lease *h = res->holders; h; h = h->res_next)
			FUZZ_CHECK(h->recalled_ms >= 0 || (mode == COORD_READ && h->mode == COORD_READ),
			           "a holder the head waiter waits for was never recalled");
	} else if (!res->holders && !res->blocked) {
		FUZZ_CHECK(m.keep_mask >> r & 1, "an idle resource left in the table");
	}
}

static void check_table(void)
{
	size_t nwaiters = 0, nopen = 0;
	int64_t earliest = -1, next;
	unsigned seen = 0, opened = 0;
	for (int r = 0; r < NRES; r++) {
		check_resource(r);
		nwaiters += m.qlen[r];
		nopen += (size_t)m.open[r];
		opened |= (unsigned)m.open[r] << r;
		for (size_t i = 0; i < m.qlen[r]; i++) {
			int64_t d = m.queue[r][i].deadline;
			FUZZ_CHECK(m.waits_on[m.queue[r][i].owner] == r, "an owner with two waiters");
			if (d >= 0 && (earliest < 0 || d < earliest))
				earliest = d;
		}
	}
	for (size_t i = 0; i < m.nheld; i++) {
		int64_t d = model_due(&m.held[i]);
		if (d != LT_NEVER && (earliest < 0 || d < earliest))
			earliest = d;
	}
	FUZZ_CHECK(lease_table_leases(m.t) == m.nheld, "lease count differs from the grants seen");
	FUZZ_CHECK(lease_table_waiters(m.t) == nwaiters, "waiter count differs from the queues");
	FUZZ_CHECK(lease_table_resources(m.t) == nopen, "resource count differs from opens and closes");
	next = lease_table_next_deadline(m.t);
	FUZZ_CHECK(next != LT_NEVER, "lease_table_next_deadline() returned LT_NEVER");
	FUZZ_CHECK(earliest < 0 || (next >= 0 && next <= earliest),
	           "next deadline is later than a waiter's timeout or a held lease's limit not yet fired");
	FUZZ_CHECK(next == earliest,
	           "next deadline is earlier than any due: a timer the model does not know (left behind?)");
	lease_table_foreach(m.t, count_resource, &seen);
	FUZZ_CHECK(seen == opened, "lease_table_foreach missed an open resource");
}

/* ---- the wait-for graph, again ---- */

/* Puts into out[] the owners standing in the way of a wait for `mode` on
 * r behind the first `ahead` waiters: the conflicting holders, then the
 * waiters ahead, all of them (design.md's graph) or only the nearest (the
 * table's walk, which reaches the others through it). */
static size_t in_the_way(int r, int mode, size_t ahead, int nearest, int *out)
{
	size_t n = 0;
	for (size_t i = 0; i < m.nheld; i++)
		if (m.held[i].res == r && (mode == COORD_WRITE || m.held[i].mode == COORD_WRITE))
			out[n++] = m.held[i].owner;
	for (size_t i = nearest && ahead ? ahead - 1 : 0; i < ahead; i++)
		out[n++] = m.queue[r][i].owner;
	return n;
}

/* The length of the shortest cycle that `requester` waiting for `mode` on
 * r would close, or 0: breadth-first over owners, each owner's edges being
 * those of its one waiter.  Both graphs have the same cycles through the
 * requester, but with `nearest` a path through a queue may be longer. */
static size_t shortest_cycle(int requester, int r, int mode, int nearest)
{
	int dist[NOWNERS], todo[NOWNERS], way[MAX_HELD + NOWNERS];
	size_t head = 0, tail = 0, n;
	for (int o = 0; o < NOWNERS; o++)
		dist[o] = -1;
	n = in_the_way(r, mode, m.qlen[r], nearest, way);
	for (size_t i = 0; i < n; i++) {
		if (way[i] == requester)
			return 1;
		if (dist[way[i]] < 0) {
			dist[way[i]] = 1;
			todo[tail++] = way[i];
		}
	}
	while (head < tail) {
		int o = todo[head++], wr = m.waits_on[o];
		size_t pos;
		if (wr < 0)
			continue;
		for (pos = 0; m.queue[wr][pos].owner != o; pos++)
			;
		n = in_the_way(wr, m.queue[wr][pos].mode, pos, nearest, way);
		for (size_t i = 0; i < n; i++) {
			if (way[i] == requester)
				return (size_t)dist[o] + 1;
			if (dist[way[i]] < 0) {
				dist[way[i]] = dist[o] + 1;
				todo[tail++] = way[i];
			}
		}
	}
	return 0;
}

/* The cycle the table reported is one, and a shortest one of its walk's
 * graph: each owner waits where the next one holds a conflicting lease or
 * is queued ahead, and the last stands in the way of the requester. */
static void check_cycle(const struct lt_cycle *cy, int requester, int r, int mode, size_t len)
{
	unsigned seen = 0;
	FUZZ_CHECK(cy && cy->len == len, "the reported cycle is not a shortest one");
	FUZZ_CHECK(len <= LT_CYCLE_MAX, "model: cycle longer than the table reports");
	for (size_t i = 0; i < len; i++) {
		const struct lt_cycle_step *s = &cy->step[i], *next = &cy->step[(i + 1) % len];
		int o = owner_index(s->owner), n = owner_index(next->owner), wr, wmode;
		size_t ahead;
		FUZZ_CHECK(!(seen & 1u << o), "an owner twice in the cycle");
		seen |= 1u << o;
		if (i == 0) {
			FUZZ_CHECK(o == requester, "the cycle does not start at the requester");
			wr = r;
			wmode = mode;
			ahead = m.qlen[r];
		} else {
			wr = m.waits_on[o];
			FUZZ_CHECK(wr >= 0, "an owner in the cycle that waits for nothing");
			for (ahead = 0; m.queue[wr][ahead].owner != o; ahead++)
				;
			wmode = m.queue[wr][ahead].mode;
		}
		FUZZ_CHECK(s->waits == m.res[wr] && s->waits_mode == wmode,
		           "a cycle step names the wrong wait");
		FUZZ_CHECK(next->holds == m.res[wr], "the next owner of the cycle is not where it waits");
		if (next->queued) {
			size_t k;
			for (k = 0; k < ahead && m.queue[wr][k].owner != n; k++)
				;
			FUZZ_CHECK(k < ahead && m.queue[wr][k].mode == next->holds_mode,
			           "a cycle owner said to be queued ahead is not");
		} else {
			size_t k;
			for (k = 0; k < m.nheld; k++)
				if (m.held[k].owner == n && m.held[k].res == wr &&
				    m.held[k].mode == next->holds_mode)
					break;
			FUZZ_CHECK(k < m.nheld && (wmode == COORD_WRITE || next->holds_mode == COORD_WRITE),
			           "a cycle owner said to hold a conflicting lease does not");
		}
	}
}

/* ---- operations ---- */

/* Releases, cancels, expiries and blocks clear the last refusal's cycle. */
static void check_cycle_cleared(void)
{
	FUZZ_CHECK(lease_table_cycle(m.t) == NULL, "lease_table_cycle() outlived the next operation");
}

enum { EXPECT_GRANT = 1, EXPECT_TURN = 2, EXPECT_QUEUED = 3 };

/* What lease_table_request() must do, from the model: EXPECT_* or the
 * error code.  *cycle gets the length of the cycle behind an EDEADLK. */
static int predict(int o, int r, int mode, int64_t deadline, int purpose, size_t *cycle)
{
	int holds = 0, holds_write = 0;
	size_t nwaiters = 0;
	*cycle = 0;
	if (!m.open[r] && m.refuse_open)
		return COORD_EIO;
	for (size_t i = 0; i < m.nheld; i++)
		if (m.held[i].owner == o && m.held[i].res == r) {
			holds = 1;
			holds_write |= m.held[i].mode == COORD_WRITE;
		}
	if (purpose == LT_FOR_CLIENT && holds && (holds_write || mode == COORD_WRITE))
		return COORD_EDEADLK;
	if (!(purpose == LT_FOR_CLIENT && holds) && (m.qlen[r] || !model_compatible(r, mode))) {
		if (deadline >= 0 && deadline <= m.now)
			return COORD_EBUSY;
		*cycle = shortest_cycle(o, r, mode, 1);
		FUZZ_CHECK(!*cycle == !shortest_cycle(o, r, mode, 0) &&
		                   *cycle >= shortest_cycle(o, r, mode, 0),
		           "model: the two wait-for graphs disagree");
		if (*cycle)
			return COORD_EDEADLK;
		for (int i = 0; i < NRES; i++)
			nwaiters += m.qlen[i];
		return nwaiters >= m.max_waiters ? COORD_ELIMIT : EXPECT_QUEUED;
	}
	if (purpose == LT_FOR_CHECKPOINT)
		return EXPECT_TURN;
	if (m.nheld >= m.max_leases)
		return COORD_ELIMIT;
	return m.refuse_grant ? COORD_EIO : EXPECT_GRANT;
}

/* After a checkpoint's immediate turn, what the broker does: start the
 * job and block the resource with its bits, or close it if none ran. */
static void checkpoint_started(int r)
{
	struct lt_resource *res = m.res[r];
	FUZZ_CHECK(res, "a checkpoint's turn on a resource that is not open");
	if (m.checkpoint_bits) {
		m.blocked[r] = m.checkpoint_bits;
		lease_table_block(m.t, res, m.checkpoint_bits);
	} else {
		lease_table_maybe_close(m.t, res);
	}
}

static void op_request(int o, int r, int mode, int64_t deadline, int purpose)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	struct snapshot before, after;
	char label[32];
	size_t cycle;
	int expect, rc;
	const struct lt_cycle *cy;

	if (m.waits_on[o] >= 0)
		return; /* the broker answers COORD_EBUSYCONN without asking */
	expect = predict(o, r, mode, deadline, purpose, &cycle);
	snprintf(label, sizeof label, purpose == LT_FOR_CHECKPOINT ? "checkpoint" : "owner %d", o);
	snapshot(&before);
	m.changes = m.recalls = 0;
	m.label = label;
	m.last_grant = NULL;
	m.req_res = r;
	m.req_mode = mode;
	rc = lease_table_request(m.t, names[r], &m.owners[o], mode, m.now, deadline, purpose,
	                         ++m.next_seq, label, &l, &w);
	m.label = NULL;
	m.req_res = -1;
	FUZZ_CHECK(expect == EXPECT_QUEUED || m.recalls == 0 ||
	                   (expect == EXPECT_GRANT && m.recalls == 1 && m.res[r]->head),
	           "a recall by a request that did not queue (other than of a nested read "
	           "granted past a queue)");
	cy = lease_table_cycle(m.t);
	FUZZ_CHECK((cy != NULL) == (rc == COORD_EDEADLK && cycle > 0),
	           "lease_table_cycle() is set without a cycle refusal, or missing after one");
	switch (expect) {
	case EXPECT_GRANT:
		FUZZ_CHECK(rc == 1 && l && l == m.last_grant && !m.last_grant_w && m.changes == 1,
		           "an immediate grant was predicted");
		FUZZ_CHECK(l->owner == &m.owners[o] && l->mode == mode && l->res == m.res[r],
		           "the lease granted is not the one asked for");
		break;
	case EXPECT_TURN:
		FUZZ_CHECK(rc == 1 && m.changes == 0, "a checkpoint's immediate turn was predicted");
		checkpoint_started(r);
		break;
	case EXPECT_QUEUED:
		FUZZ_CHECK(rc == 0 && w && m.changes == 0, "the request should have queued");
		FUZZ_CHECK(w->owner == &m.owners[o] && w->mode == mode && w->purpose == purpose &&
		                   w->seq == m.next_seq && w->res == m.res[r] && w->since_ms == m.now &&
		                   w->timer.deadline_ms == deadline && strcmp(w->label, label) == 0,
		           "the waiter is not the request");
		FUZZ_CHECK(m.res[r]->tail == w, "a new waiter not at the tail of the queue");
		for (size_t i = 0; i < m.nheld; i++)
			FUZZ_CHECK(m.held[i].res != r || m.held[i].recalled ||
			                   (mode == COORD_READ && m.held[i].mode == COORD_READ),
			           "a queued request left a conflicting holder unrecalled");
		m.queue[r][m.qlen[r]++] = (struct sh_waiter){ w, o, mode, purpose, deadline };
		m.waits_on[o] = r;
		break;
	default:
		FUZZ_CHECK(rc == expect, "the request's refusal is not the one predicted");
		FUZZ_CHECK(m.changes == 0, "a refused request called back as if it changed something");
		snapshot(&after);
		FUZZ_CHECK(memcmp(&before, &after, sizeof before) == 0, "a refused request changed the table");
		if (cy)
			check_cycle(cy, o, r, mode, cycle);
	}
}

/* Releases owner o's lease number `which` (in the model's order).
 * Returns 1, or 0 if it has no such lease. */
static int op_release(int o, size_t which, const char *why)
{
	size_t n = 0;
	for (size_t i = 0; i < m.nheld; i++) {
		if (m.held[i].owner != o || n++ != which)
			continue;
		m.released = m.held[i].l;
		m.why = why;
		m.changes = 0;
		lease_table_release(m.t, m.held[i].l, why);
		check_cycle_cleared();
		FUZZ_CHECK(m.changes >= 1 && !m.released, "a release without its released() callback");
		return 1;
	}
	return 0;
}

static void op_cancel(int o)
{
	int r = m.waits_on[o];
	struct lt_waiter *w;
	size_t pos;
	if (r < 0)
		return;
	for (pos = 0; m.queue[r][pos].owner != o; pos++)
		;
	w = m.queue[r][pos].w;
	queue_remove(r, pos);
	lease_table_cancel(m.t, w);
	check_cycle_cleared();
}

/* What the broker does when a connection goes: cancel, then reclaim
 * every lease (a release may grant others, so count o's, not all). */
static void op_disconnect(int o)
{
	op_cancel(o);
	while (op_release(o, 0, "reclaim"))
		;
}

/* Moves the clock `step` forward (never back: a limit set lower than
 * what has passed puts the next deadline behind the clock) and expires. */
static void op_expire(int64_t step)
{
	m.now += step > 0 ? step : 0;
	m.expiring = 1;
	lease_table_expire(m.t, m.now);
	check_cycle_cleared();
	for (int r = 0; r < NRES; r++)
		for (size_t i = 0; i < m.qlen[r]; i++)
			FUZZ_CHECK(m.queue[r][i].deadline < 0 || m.queue[r][i].deadline > m.now,
			           "a waiter outlived its deadline");
	for (size_t i = 0; i < m.nheld; i++)
		FUZZ_CHECK(model_due(&m.held[i]) > m.now,
		           "a held lease's hold limit passed and lease_table_expire() did not call limit()");
	m.expiring = 0;
}

/* What the broker does for coord_set_limits(): the limits become durable
 * (resource_open puts them into the resource when it next opens), and an
 * open resource gets them at once.  Nothing else may change. */
static void op_set_limits(int r, uint32_t max_hold_ms, uint32_t recall_grace_ms)
{
	int rc;
	m.max_hold[r] = max_hold_ms;
	m.grace[r] = recall_grace_ms;
	if (!m.open[r])
		return;
	m.changes = m.recalls = 0;
	rc = lease_table_set_limits(m.t, m.res[r], max_hold_ms, recall_grace_ms);
	FUZZ_CHECK(rc == 0, "lease_table_set_limits failed with memory to spare");
	FUZZ_CHECK(m.changes == 0 && m.recalls == 0, "lease_table_set_limits granted, released or recalled");
}

/* A checkpoint job's block set (only where one could start: no holder)
 * or lifted (bits 0). */
static void op_block(int r, int bits)
{
	int writers, readers;
	held_count(r, &writers, &readers);
	if (!m.open[r] || (bits && (writers || readers)))
		return;
	m.blocked[r] = bits;
	lease_table_block(m.t, m.res[r], bits);
	check_cycle_cleared();
}

static void op_maybe_close(int r)
{
	if (m.open[r])
		lease_table_maybe_close(m.t, m.res[r]);
}

/* Input: byte 0: max_leases 1 + (b & 15), max_waiters 1 + (b >> 4 & 7),
 * first lease id 1000 if bit 7 else the default; byte 1: the keep mask
 * (low 4 bits, per resource), release bits (b >> 4 & 3), checkpoint bits
 * (b >> 6).  Then operations of two bytes, `op` and `arg`; see the
 * switch.  In `arg`, owner = arg & 7 and resource = arg >> 3 & 3, except
 * for op 9 (hold limits), whose resource is in `op`. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t first_id;
	if (size < 2)
		return 0;
	memset(&m, 0, sizeof m);
	m.max_leases = 1 + (data[0] & 15u);
	m.max_waiters = 1 + (data[0] >> 4 & 7u);
	first_id = data[0] & 0x80 ? 1000 : 0;
	m.next_id = first_id ? first_id : 1;
	m.keep_mask = data[1] & 15u;
	m.release_bits = data[1] >> 4 & 3;
	m.checkpoint_bits = data[1] >> 6 & 3;
	m.now = 1000;
	m.req_res = -1;
	for (int o = 0; o < NOWNERS; o++)
		m.waits_on[o] = -1;
	m.t = lease_table_new(&events, &m, m.max_leases, m.max_waiters, first_id);
	FUZZ_CHECK(m.t, "lease_table_new failed");

	for (size_t i = 2; i + 1 < size; i += 2) {
		unsigned op = data[i], arg = data[i + 1];
		int o = (int)(arg & 7), r = (int)(arg >> 3 & 3);
		int mode = arg & 0x20 ? COORD_WRITE : COORD_READ;
		int64_t deadline;
		switch (op & 15) {
		case 0: case 1: case 2: case 14:
			/* arg >> 6: 0 try once, 1 forever, else timed (op >> 4 sets how long) */
			deadline = arg >> 6 == 0 ? m.now : arg >> 6 == 1 ? -1 : m.now + 1 + (op >> 4) * 8;
			op_request(o, r, mode, deadline, LT_FOR_CLIENT);
			break;
		case 3:
			op_request(o, r, COORD_WRITE, -1, LT_FOR_CHECKPOINT);
			break;
		case 4: case 5:
			op_release(o, arg >> 3, "release");
			break;
		case 6:
			op_cancel(o);
			break;
		case 7:
			op_disconnect(o);
			break;
		case 8:
			op_expire(arg);
			break;
		case 9: {
			/* resource op >> 4 & 3; limits in units of 1, 5, 9 or 13 ms (op >> 6) */
			uint32_t unit = (op >> 6) * 4 + 1;
			op_set_limits((int)(op >> 4 & 3), (arg & 15) * unit, (arg >> 4) * unit);
			break;
		}
		case 10:
			op_block((int)(arg & 3), (int)(arg >> 2 & 3));
			break;
		case 11:
			op_block((int)(arg & 3), 0);
			break;
		case 12:
			m.refuse_grant = arg & 1;
			m.refuse_open = arg >> 1 & 1;
			m.release_bits = arg >> 2 & 3;
			m.checkpoint_bits = arg >> 4 & 3;
			break;
		case 13:
			op_maybe_close((int)(arg & 3));
			break;
		case 15: {
			/* to the next deadline exactly (1 ms short of it if op & 0x10),
			 * or arg ms if none */
			int64_t next = lease_table_next_deadline(m.t);
			op_expire(next >= 0 ? next - m.now - (op >> 4 & 1) : arg);
			break;
		}
		}
		check_table();
	}

	m.freeing = 1;
	lease_table_free(m.t);
	for (int r = 0; r < NRES; r++)
		FUZZ_CHECK(!m.open[r], "lease_table_free did not close a resource");
	return 0;
}
