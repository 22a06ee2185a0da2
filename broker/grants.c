/* Grant persistence: what makes a lease real before its holder hears of
 * it, and what undoes it when it ends.  The lease table decides who gets a
 * lease; these callbacks run inside its decisions.
 *
 * A grant, in this order:
 *   1. a slot of the shared region;
 *   2. a write lease's fencing token, from the directory's one counter
 *      (store_token_take()): above the resource's last token and above
 *      every token handed out before; a synced commit of state.mdb only
 *      once per STORE_TOKEN_BLOCK tokens, when the counter passes the
 *      durable ceiling, never per resource or per grant;
 *   3. the lease record, with a random secret (for tools, and for
 *      adoption by a restarted broker, adopt.c), added to the store's
 *      batch for this loop iteration;
 *   4. the slot word set to the lease id: from here coord_lease_valid()
 *      is true;
 *   5. a `grant` log line.
 * The caller then queues the GRANT message through grants_send(), and
 * grants_commit(), once per loop iteration, commits the batch before any
 * queued answer goes out (docs/design.md, "Group commit").  A failure in
 * 1-3 refuses the grant and undoes what was done; a failed commit refuses
 * every grant of its batch the same way, after the fact: the lease is
 * taken back (event=reclaim reason=record-failed) and its GRANT becomes a
 * REPLY with the error.  An ATTACH answer waits for the commit of the
 * rewritten record just like a GRANT.
 *
 * A recall (someone conflicting now waits) sets COORD_SLOT_RECALL in the
 * lease's slot, which its holder reads with one load, and logs it.
 *
 * A release or reclaim undoes it in the opposite order, clearing the slot
 * word first so the old holder's coord_lease_valid() is false before
 * anyone else can be granted, and starts a checkpoint after the last
 * write lease, returning its block bits to the table. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state.h"
#include "cache.h"
#include "grants.h"
#include "secret.h"
#include "events.h"

/* A GRANT (or ATTACH answer) queued this iteration, not sent before the
 * iteration's commit. */
struct grant_answer {
	struct owner *owner;       /* NULL: its connection went meanwhile */
	uint64_t lease_id;
	uint32_t seq;
	int attach;                /* the record existed before (adopted) */
	struct outbuf *msg;        /* queued for owner->client, or NULL */
};
#include "resource.h"

#define KEEP_RESOURCES_MAX 100000

const char *grants_mode_name(int mode)
{
	return mode == COORD_WRITE ? "write" : "read";
}

int grants_resource_open(void *ud, struct lt_resource *res)
{
	struct broker *b = ud;
	struct resource_ext *x = calloc(1, sizeof *x);
	struct store_resource rec;
	int rc;
	if (!x)
		return COORD_ENOMEM;
	rc = store_resource_load(b->store, res->name, &rec);
	if (rc == COORD_ENOENT && !strncmp(res->name, "key:", 4)) {
		/* Libraries before the key: syntax named this key without the
		 * prefix: carry its policy and token ceiling over, so its tokens
		 * never go back across the upgrade. */
		rc = store_resource_load(b->store, res->name + 4, &rec);
		if (rc == 0)
			rc = store_resource_save(b->store, res->name, &rec);
	}
	if (rc == 0) {
		x->kept = 1;
	} else if (rc == COORD_ENOENT) {
		rec.version = STORE_RESOURCE_VERSION;
	}
	if (rc == 0 || rc == COORD_ENOENT)
		rc = store_resource_mem_set(&x->rec, &rec);
	if (rc < 0) {
		free(x);
		return rc;
	}
	/* The record's token is a lower bound: an older broker (records of
	 * version 1-2) may have granted tokens up to it on this resource, above
	 * the directory's counter; the next write token is above both. */
	res->token = x->rec.token_ceiling;
	res->max_hold_ms = x->rec.max_hold_ms;
	res->recall_grace_ms = x->rec.recall_grace_ms;
	res->ext = x;
	if (x->kept)
		b->kept_resources++;
	ckpt_jobs_detect_kind(res);
	return 0;
}

int grants_resource_keep(void *ud, struct lt_resource *res)
{
	struct broker *b = ud;
	struct resource_ext *x = res->ext;
	/* Keep resources that have a durable record or were granted a write
	 * token in memory, so `coordctl show` says their last token and
	 * their next open needs no read of state.mdb. */
	return x->job != NULL || (x->kept && b->kept_resources <= KEEP_RESOURCES_MAX);
}

void grants_resource_close(void *ud, struct lt_resource *res)
{
	struct broker *b = ud;
	struct resource_ext *x = res->ext;
	if (x && x->kept)
		b->kept_resources--;
	if (x)
		store_resource_mem_free(&x->rec);
	free(x);
	res->ext = NULL;
}

/* Step 2: a write lease's token, above the resource's (l->token - 1:
 * the lease table proposes the resource's token + 1).  A read lease
 * carries the resource's last write token and takes none. */
static int take_token(struct broker *b, struct lt_lease *l)
{
	struct resource_ext *x = l->res->ext;
	uint64_t token;
	int rc;
	if (l->mode != COORD_WRITE)
		return 0;
	rc = store_token_take(b->store, l->token - 1, &token);
	if (rc < 0) {
		if (!store_condition(rc))
			log_event(&b->log, "error", "op=token-reserve resource=%s code=%s",
			          log_quote(&b->log, l->res->name), coord_proto_errname(rc));
		return rc;
	}
	l->token = token;
	/* Its record learns the token at its next save (policy, limits,
	 * checkpoint); until then the resource stays in memory. */
	if (!x->kept)
		b->kept_resources++;
	x->kept = 1;
	return 0;
}

/* Step 3: the lease record. */
int grants_record(struct broker *b, const struct lt_lease *l)
{
	const struct owner *o = l->owner;
	struct store_lease rec = { 0 };
	int rc;
	rec.id = l->id;
	rec.token = l->token;
	rec.mode = (uint32_t)l->mode;
	rec.uid = (uint32_t)o->uid;
	rec.pid = (uint64_t)o->pid;
	rec.pid_start = o->pid_start;
	rec.slot = l->slot;
	rec.granted_wall_ms = l->granted_wall_ms;
	rec.granted_ms = l->granted_ms;
	rec.client_id = o->client_id;
	rec.secret = l->secret;
	snprintf(rec.name, sizeof rec.name, "%s", l->res->name);
	snprintf(rec.label, sizeof rec.label, "%s", l->label);
	rc = store_lease_put(b->store, &rec);
	if (rc < 0 && !store_condition(rc))
		log_event(&b->log, "error", "op=lease-record resource=%s code=%s",
		          log_quote(&b->log, l->res->name), coord_proto_errname(rc));
	return rc;
}

void grants_link(struct owner *o, struct lt_lease *l)
{
	l->own_prev = NULL;
	l->own_next = o->leases;
	if (o->leases)
		o->leases->own_prev = l;
	o->leases = l;
}

void grants_unlink(struct owner *o, struct lt_lease *l)
{
	if (l->own_prev)
		l->own_prev->own_next = l->own_next;
	else
		o->leases = l->own_next;
	if (l->own_next)
		l->own_next->own_prev = l->own_prev;
	l->own_next = l->own_prev = NULL;
}

int grants_grant(void *ud, struct lt_lease *l, struct lt_waiter *w)
{
	struct broker *b = ud;
	struct owner *o = l->owner;
	int rc;

	rc = region_slot_alloc(b->region, &l->slot);
	if (rc < 0)
		return rc;
	rc = take_token(b, l);
	if (rc < 0)
		goto fail;
	l->granted_wall_ms = wall_ms();
	secret_draw(&l->secret, sizeof l->secret);
	rc = grants_record(b, l);
	if (rc < 0)
		goto fail;
	region_slot_set(b->region, l->slot, l->id);
	grants_link(o, l);
	log_event(&b->log, "grant", "lease=%llu resource=%s mode=%s token=%llu pid=%d comm=%s label=%s",
	          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
	          grants_mode_name(l->mode), (unsigned long long)l->token, (int)o->pid,
	          log_quote(&b->log, o->comm), log_quote(&b->log, l->label));
	events_grant(l, w);
	return 0;
fail:
	region_slot_free(b->region, l->slot);
	return rc;
}

void grants_notify(struct client *c)
{
	if (c && c->notify_fd >= 0 && write(c->notify_fd, "r", 1) < 0) {
		/* EAGAIN: the pipe is full, so its reader is awake already */
	}
}

void grants_recall(void *ud, struct lt_lease *l)
{
	struct broker *b = ud;
	struct owner *o = l->owner;
	region_slot_flag(b->region, l->slot, COORD_SLOT_RECALL);
	grants_notify(o->client);
	cache_recalled(b, l); /* a cached grant nobody is inside goes at once */
	log_event(&b->log, "recall", "lease=%llu resource=%s mode=%s pid=%d comm=%s held_ms=%lld",
	          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
	          grants_mode_name(l->mode), (int)o->pid, log_quote(&b->log, o->comm),
	          (long long)(now_ms() - l->granted_ms));
	events_recall(l);
}

int grants_released(void *ud, struct lt_lease *l, const char *why)
{
	struct broker *b = ud;
	struct owner *o = l->owner;
	int rc;

	/* A cached grant's kernel lock goes first: its holder reuses the
	 * descriptor once it sees the slot cleared. */
	cache_unbind(b, l);
	/* Clear the slot first: from here on the old holder's
	 * coord_lease_valid() is false, before anyone else is granted. */
	region_slot_free(b->region, l->slot);
	/* A refused grant's record never reached the file: nothing to
	 * delete, and no write was done under it to checkpoint. */
	rc = b->undoing ? 0 : store_lease_del(b->store, l->id);
	if (rc < 0 && !store_condition(rc))
		log_event(&b->log, "error", "op=lease-record-delete lease=%llu code=%s",
		          (unsigned long long)l->id, coord_proto_errname(rc));
	grants_unlink(o, l);
	log_event(&b->log, strcmp(why, "release") && strcmp(why, "cached-idle") ? "reclaim" : "release",
	          "lease=%llu resource=%s mode=%s token=%llu pid=%d comm=%s held_ms=%lld reason=%s",
	          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
	          grants_mode_name(l->mode), (unsigned long long)l->token, (int)o->pid,
	          log_quote(&b->log, o->comm), (long long)(now_ms() - l->granted_ms), why);
	events_released(l, why);
	if (l->mode == COORD_WRITE && !b->undoing)
		return ckpt_jobs_on_write_release(&b->jobs, l->res);
	return 0;
}

/* ---- answers after the commit ---- */

void grants_send(struct broker *b, struct owner *o, uint32_t seq, const struct lt_lease *l)
{
	coord_msg_grant g = { { COORD_MSG_GRANT, seq }, 0, (uint32_t)l->mode, l->id, l->token, l->slot,
		              l->secret };
	struct grant_answer *a;
	if (b->nanswers == b->answers_cap) {
		size_t cap = b->answers_cap ? 2 * b->answers_cap : 64;
		struct grant_answer *v = realloc(b->answers, cap * sizeof *v);
		if (!v) {
			/* A grant that could not be undone must not be sent: its
			 * connection goes, and with it (at the reap) the lease. */
			if (o->client)
				client_kill(o->client, "out-of-memory");
			return;
		}
		b->answers = v;
		b->answers_cap = cap;
	}
	a = &b->answers[b->nanswers++];
	*a = (struct grant_answer){ o, l->id, seq, l->adopted, NULL };
	if (o->client)
		a->msg = client_send_held(o->client, &g, sizeof g);
}

void grants_forget(struct broker *b, struct owner *o)
{
	for (size_t i = 0; i < b->nanswers; i++)
		if (b->answers[i].owner == o)
			b->answers[i].owner = NULL;
}

/* The batch with these answers' records failed with rc: each lease is
 * taken back and its answer becomes REPLY{rc}. */
static void refuse_answers(struct broker *b, struct grant_answer *v, size_t n, int rc)
{
	if (!store_condition(rc))
		log_event(&b->log, "error", "op=lease-record-commit grants=%zu code=%s", n,
		          coord_proto_errname(rc));
	for (size_t i = 0; i < n; i++) {
		struct owner *o = v[i].owner;
		struct lt_lease *l;
		if (!o)
			continue;
		for (l = o->leases; l; l = l->own_next)
			if (l->id == v[i].lease_id)
				break;
		if (l) {
			/* A re-attached lease's old record is still there: it
			 * goes like any other. */
			b->undoing = !v[i].attach;
			lease_table_release(b->table, l, "record-failed");
			b->undoing = 0;
		}
		if (o->client && v[i].msg) {
			coord_msg_reply r = { { COORD_MSG_REPLY, v[i].seq }, rc, 0 };
			client_rewrite(o->client, v[i].msg, &r, sizeof r);
		}
	}
}

void grants_commit(struct broker *b)
{
	/* Taking leases back grants their waiters, whose records make a new
	 * batch; each round refuses at least one answer, so this ends. */
	while (store_pending(b->store) || b->nanswers) {
		int rc = store_commit(b->store);
		struct grant_answer *v = b->answers;
		size_t n = b->nanswers;
		if (rc == 0) {
			b->nanswers = 0;
			if (!store_pending(b->store))
				return;
			continue;
		}
		/* Refusing may queue new answers: they go into a fresh list. */
		b->answers = NULL;
		b->nanswers = b->answers_cap = 0;
		refuse_answers(b, v, n, rc);
		free(v);
		if (!n && !store_pending(b->store))
			return;
	}
}
