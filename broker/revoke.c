/* Revoke: taking leases back from holders that do not let go.
 *
 * `coordctl revoke` names a lease, a pid or a resource.  Only the
 * holders' own user, root, or a member of the broker's --admin-group
 * (client.c tells at accept) may revoke them.  Then, for every selected
 * lease, step by step, each step logged (event=revoke):
 *   1. recall: COORD_SLOT_RECALL in the lease's slot (see grants.c), then
 *      wait `grace` for the holder to release;
 *   2. SIGTERM to the holder, through its pidfd (a reused pid can never be
 *      hit), and wait `grace` again;
 *   3. SIGKILL.
 * The lease is never taken from a living process: it leaves the table only
 * by its release or by the reclaim that follows the holder's exit (its
 * pidfd), as for any death, so a revoke can never make two writers.  If the
 * broker may not signal the holder (another user, and the broker is
 * neither root nor has CAP_KILL: an admin group member's revoke of another
 * user's lease needs a root broker), the revocation ends with COORD_EPERM
 * and the lease stays held.
 * The requester is answered once every selected lease is gone.
 *
 * Hold limits (coord_set_limits()) start the same escalation with no
 * requester, for one lease, when the lease table says its limit fell due
 * (revoke_limit()): after max_hold_ms it is recalled and the steps
 * follow; after recall_grace_ms of a recall it was already asked, so
 * SIGTERM comes at once.  Each step waits the resource's recall grace
 * (or the default), and every line says reason=max-hold|recall-grace. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "grants.h"
#include "protocol.h"
#include "revoke.h"
#include "state.h"

#define DEFAULT_GRACE_MS 5000
#define MAX_TARGETS 1024

enum { STEP_RECALLED, STEP_TERMINATED, STEP_KILLED };

struct revocation {
	struct revocation *next;
	const struct owner *requester; /* NULL once gone, or for a hold limit */
	uint32_t seq;
	uint32_t grace_ms;
	const char *reason;            /* "revoke", "max-hold", "recall-grace" */
	int step;
	int64_t deadline_ms;           /* of the next step; -1 after SIGKILL */
	size_t n;                      /* leases still held */
	uint64_t ids[];
};

/* ---- finding the selected leases ---- */

struct select {
	const struct request *req;
	struct lt_lease *found[MAX_TARGETS];
	size_t n;
	int too_many;
};

static void select_in(struct lt_resource *res, void *arg)
{
	struct select *sel = arg;
	const struct request *req = sel->req;
	for (struct lt_lease *l = res->holders; l; l = l->res_next) {
		const struct owner *o = l->owner;
		int match = req->lease_id ? l->id == req->lease_id
		            : req->pid    ? (uint64_t)o->pid == req->pid
		                          : !strcmp(res->name, req->name);
		if (!match)
			continue;
		if (sel->n == MAX_TARGETS)
			sel->too_many = 1;
		else
			sel->found[sel->n++] = l;
	}
}

/* The lease with this id, or NULL. */
struct find {
	uint64_t id;
	struct lt_lease *l;
};

static void find_in(struct lt_resource *res, void *arg)
{
	struct find *f = arg;
	for (struct lt_lease *l = res->holders; l && !f->l; l = l->res_next)
		if (l->id == f->id)
			f->l = l;
}

static struct lt_lease *find_lease(struct broker *b, uint64_t id)
{
	struct find f = { id, NULL };
	lease_table_foreach(b->table, find_in, &f);
	return f.l;
}

/* ---- steps ---- */

static void answer(struct revocation *r, int status)
{
	const struct owner *o = r->requester;
	if (o && o->client)
		client_reply(o->client, r->seq, status);
}

static void unlink_revocation(struct broker *b, struct revocation *r)
{
	for (struct revocation **p = &b->revocations; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
}

static void log_step(struct broker *b, const struct revocation *r, const struct lt_lease *l,
                     const char *step)
{
	const struct owner *o = l->owner;
	log_event(&b->log, "revoke", "lease=%llu resource=%s mode=%s pid=%d comm=%s step=%s "
	          "reason=%s held_ms=%lld",
	          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
	          grants_mode_name(l->mode), (int)o->pid, log_quote(&b->log, o->comm), step,
	          r->reason, (long long)(now_ms() - l->granted_ms));
}

/* Sends sig to the holder of every lease still selected; 0, or the first
 * COORD_EPERM. */
static int signal_holders(struct broker *b, struct revocation *r, int sig)
{
	for (size_t i = 0; i < r->n; i++) {
		struct lt_lease *l = find_lease(b, r->ids[i]);
		const struct owner *o = l ? l->owner : NULL;
		if (!o || o->pidfd < 0)
			continue;
		log_step(b, r, l, sig == SIGTERM ? "sigterm" : "sigkill");
		if (syscall(SYS_pidfd_send_signal, o->pidfd, sig, NULL, 0) < 0 &&
		    errno == EPERM) {
			log_event(&b->log, "revoke-failed",
			          "lease=%llu pid=%d reason=not-permitted-to-signal lease=still-held",
			          (unsigned long long)l->id, (int)o->pid);
			return COORD_EPERM;
		}
	}
	return 0;
}

/* The first step: ask, unless it was asked already. */
static void recall(struct broker *b, const struct revocation *r, struct lt_lease *l)
{
	log_step(b, r, l, "recall");
	if (l->recalled_ms < 0) {
		l->recalled_ms = now_ms();
		grants_recall(b, l);
	}
}

/* 1 if a revocation already covers the lease. */
static int revoking(const struct broker *b, uint64_t id)
{
	for (const struct revocation *r = b->revocations; r; r = r->next)
		for (size_t i = 0; i < r->n; i++)
			if (r->ids[i] == id)
				return 1;
	return 0;
}

void revoke_limit(struct broker *b, struct lt_lease *l, int why)
{
	const struct lt_resource *res = l->res;
	struct revocation *r;
	int64_t now = now_ms();
	if (revoking(b, l->id))
		return;
	r = calloc(1, sizeof *r + sizeof r->ids[0]);
	if (!r) {
		log_event(&b->log, "error", "op=hold-limit lease=%llu code=COORD_ENOMEM",
		          (unsigned long long)l->id);
		return;
	}
	r->grace_ms = res->recall_grace_ms ? res->recall_grace_ms : DEFAULT_GRACE_MS;
	r->reason = why == LT_LIMIT_RECALL_GRACE ? "recall-grace" : "max-hold";
	r->step = STEP_RECALLED;
	r->ids[r->n++] = l->id;
	if (why == LT_LIMIT_RECALL_GRACE) {
		r->deadline_ms = now; /* asked and waited already: SIGTERM next */
	} else {
		r->deadline_ms = now + r->grace_ms;
		recall(b, r, l);
	}
	r->next = b->revocations;
	b->revocations = r;
}

void revoke_start(struct broker *b, struct client *c, const struct request *req)
{
	const struct owner *me = c->user;
	struct select *sel = calloc(1, sizeof *sel);
	struct revocation *r = NULL;
	int rc = COORD_ENOMEM;

	if (!sel)
		goto fail;
	sel->req = req;
	lease_table_foreach(b->table, select_in, sel);
	rc = sel->too_many ? COORD_ELIMIT : sel->n ? 0 : COORD_ENOLEASE;
	for (size_t i = 0; rc == 0 && i < sel->n; i++) {
		const struct owner *o = sel->found[i]->owner;
		if (me->uid != 0 && me->uid != o->uid && !c->admin) {
			log_event(&b->log, "revoke-refused", "lease=%llu pid=%d by_pid=%d by_uid=%d "
			          "reason=not-the-holders-user-nor-admin",
			          (unsigned long long)sel->found[i]->id, (int)o->pid, (int)me->pid,
			          (int)me->uid);
			rc = COORD_EPERM;
		}
	}
	if (rc < 0)
		goto fail;
	r = calloc(1, sizeof *r + sel->n * sizeof r->ids[0]);
	if (!r) {
		rc = COORD_ENOMEM;
		goto fail;
	}
	r->requester = me;
	r->seq = req->seq;
	r->grace_ms = req->grace_ms ? req->grace_ms : DEFAULT_GRACE_MS;
	r->reason = "revoke";
	r->step = STEP_RECALLED;
	r->deadline_ms = now_ms() + r->grace_ms;
	for (size_t i = 0; i < sel->n; i++)
		r->ids[r->n++] = sel->found[i]->id;
	for (size_t i = 0; i < sel->n; i++)
		recall(b, r, sel->found[i]);
	r->next = b->revocations;
	b->revocations = r;
	free(sel);
	return;
fail:
	free(sel);
	client_reply(c, req->seq, rc);
}

void revoke_lease_gone(struct broker *b, uint64_t lease_id)
{
	struct revocation *r = b->revocations, *next;
	for (; r; r = next) {
		next = r->next;
		for (size_t i = 0; i < r->n; i++) {
			if (r->ids[i] == lease_id) {
				r->ids[i] = r->ids[--r->n];
				break;
			}
		}
		if (r->n == 0) {
			log_event(&b->log, "revoked", "leases=gone");
			answer(r, 0);
			unlink_revocation(b, r);
			free(r);
		}
	}
}

int64_t revoke_next_deadline(const struct broker *b)
{
	int64_t d = -1;
	for (const struct revocation *r = b->revocations; r; r = r->next)
		if (r->deadline_ms >= 0 && (d < 0 || r->deadline_ms < d))
			d = r->deadline_ms;
	return d;
}

void revoke_expire(struct broker *b, int64_t now)
{
	struct revocation *r = b->revocations, *next;
	for (; r; r = next) {
		int sig, rc;
		next = r->next;
		if (r->deadline_ms < 0 || r->deadline_ms > now)
			continue;
		sig = r->step == STEP_RECALLED ? SIGTERM : SIGKILL;
		r->step = sig == SIGTERM ? STEP_TERMINATED : STEP_KILLED;
		r->deadline_ms = sig == SIGTERM ? now + r->grace_ms : -1;
		rc = signal_holders(b, r, sig);
		if (rc < 0) {
			answer(r, rc);
			unlink_revocation(b, r);
			free(r);
		}
	}
}

void revoke_forget(struct broker *b, const struct owner *o)
{
	for (struct revocation *r = b->revocations; r; r = r->next)
		if (r->requester == o)
			r->requester = NULL;
}

void revoke_fini(struct broker *b)
{
	while (b->revocations) {
		struct revocation *r = b->revocations;
		b->revocations = r->next;
		free(r);
	}
}
