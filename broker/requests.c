/* Request handlers: HELLO, ACQUIRE, CANCEL, RELEASE, STATUS, LIST, SHOW, POLICY,
 * LIMITS, NOTIFY, CHECKPOINT, REVOKE and ATTACH, and the answers that come later.
 * METRICS is metrics.c's, except METRICS{COORD_METRICS_WATCH}, which makes
 * the connection a watcher of the event feed (events_watch()).
 *
 * Nothing read from a client is trusted: every packet goes through
 * proto_decode() before anything here looks at it, a lease id in RELEASE
 * is looked up among the sender's own leases only, and a client that
 * breaks the protocol is disconnected.  Answers go to the owner's current
 * connection; an owner without one (detached) gets none.  A request the
 * lease table refuses because waiting would close a wait-for cycle is
 * logged as event=deadlock with the cycle spelled out. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adopt.h"
#include "cache.h"
#include "checkpoint_child.h"
#include "events.h"
#include "grants.h"
#include "metrics.h"
#include "protocol.h"
#include "requests.h"
#include "resource.h"
#include "revoke.h"

static void answer(struct owner *o, uint32_t seq, int status)
{
	if (o->client)
		client_reply(o->client, seq, status);
}

/* ---- answers that come later ---- */

static void send_resource_info(struct broker *b, struct client *c, uint32_t seq,
                               struct lt_resource *res, const char *name,
                               const struct store_resource *rec, int kind, int status);
static void send_resource_info_of(struct broker *b, struct client *c, uint32_t seq,
                                  struct lt_resource *res, int status);

int requests_granted(void *ud, struct lt_waiter *w, struct lt_lease *l)
{
	struct broker *b = ud;
	struct owner *o = w->owner;
	int bits, status;
	o->waiter = NULL;
	if (w->purpose != LT_FOR_CHECKPOINT) {
		grants_send(b, o, w->seq, l); /* sent after the commit */
		return 0;
	}
	bits = ckpt_jobs_start_requested(&b->jobs, w->res, o, w->seq, &status);
	if (!bits && o->client)
		send_resource_info_of(b, o->client, w->seq, w->res, status);
	return bits;
}

void requests_waiter_failed(void *ud, struct lt_waiter *w, int err)
{
	struct broker *b = ud;
	struct owner *o = w->owner;
	o->waiter = NULL;
	log_event(&b->log, err == COORD_ETIMEDOUT ? "timeout" : "refuse",
	          "resource=%s mode=%s pid=%d waited_ms=%lld code=%s", log_quote(&b->log, w->res->name),
	          grants_mode_name(w->mode), (int)o->pid, (long long)(now_ms() - w->since_ms),
	          coord_proto_errname(err));
	events_waiter_failed(w, err);
	answer(o, w->seq, err);
}

void requests_checkpoint_done(void *ud, struct lt_resource *res, void *requester, uint32_t seq,
                              int status)
{
	struct broker *b = ud;
	struct owner *o = requester;
	if (o->client)
		send_resource_info_of(b, o->client, seq, res, status);
}

/* ---- leases ---- */

/* Appends printf-formatted text to buf (size bytes, *used so far),
 * truncating at the end. */
static void __attribute__((format(printf, 4, 5)))
append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int n;
	if (*used >= size - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *used, size - *used, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used += (size_t)n < size - *used ? (size_t)n : size - 1 - *used;
}

/* "pid 100 (a) holds /x (write), waits /y (write); pid 200 (b) holds /y
 * (write), waits /x (write)": the cycle in wait-for order, from the
 * requester on.  An owner in the way because it is queued ahead "is queued
 * ahead on" the resource instead. */
static void describe_cycle(char *buf, size_t size, const struct lt_cycle *cy)
{
	size_t shown = cy->len < LT_CYCLE_MAX ? cy->len : LT_CYCLE_MAX, used = 0;
	buf[0] = 0;
	for (size_t i = 0; i < shown; i++) {
		const struct lt_cycle_step *s = &cy->step[i];
		const struct owner *o = s->owner;
		if (cy->len > LT_CYCLE_MAX && i == LT_CYCLE_MAX - 1)
			append(buf, size, &used, "; ... %zu more", cy->len - LT_CYCLE_MAX + 1);
		append(buf, size, &used, "%spid %d (%s) %s %s (%s), waits %s (%s)", i ? "; " : "",
		       (int)o->pid, o->comm, s->queued ? "is queued ahead on" : "holds", s->holds->name,
		       grants_mode_name(s->holds_mode), s->waits->name, grants_mode_name(s->waits_mode));
	}
}

/* After lease_table_request() failed with rc: logs why (one line, a
 * wait-for cycle as event=deadlock) unless rc is COORD_EBUSY, which is
 * no event. */
static void log_refusal(struct broker *b, const struct owner *o, const char *name, int mode,
                        int rc)
{
	const struct lt_cycle *cy = rc == COORD_EDEADLK ? lease_table_cycle(b->table) : NULL;
	char text[LOG_QUOTE_MAX];
	if (cy) {
		describe_cycle(text, sizeof text, cy);
		log_event(&b->log, "deadlock",
		          "resource=%s mode=%s pid=%d comm=%s owners=%zu cycle=%s code=%s",
		          log_quote(&b->log, name), grants_mode_name(mode), (int)o->pid,
		          log_quote(&b->log, o->comm), cy->len, log_quote(&b->log, text),
		          coord_proto_errname(rc));
	} else if (rc != COORD_EBUSY && rc != COORD_EFULL && rc != COORD_ENOSPC) {
		/* A full store is logged by store.c, once a second with a
		 * count, not once per refused request. */
		log_event(&b->log, "refuse", "resource=%s mode=%s pid=%d code=%s",
		          log_quote(&b->log, name), grants_mode_name(mode), (int)o->pid,
		          coord_proto_errname(rc));
	}
}

/* o's lease of that id, or NULL: a client names only its own leases. */
static struct lt_lease *own_lease(struct owner *o, uint64_t id)
{
	struct lt_lease *l = o->leases;
	while (l && l->id != id)
		l = l->own_next;
	return l;
}

/* A try-once request refused for now, decided again at the end of the
 * batch of events it came in (requests_decide_tries()). */
struct deferred_try {
	struct deferred_try *next;
	struct client *client;
	struct request req;
};

static void handle_acquire(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	int64_t now = now_ms(), deadline;
	int rc;

	if (o->waiter) {
		client_reply(c, req->seq, COORD_EBUSYCONN);
		return;
	}
	deadline = req->timeout_ms < 0 ? -1 : now + req->timeout_ms;
	rc = lease_table_request(b->table, req->name, o, req->mode, now, deadline, LT_FOR_CLIENT,
	                         req->seq, req->label, &l, &w);
	if (rc == COORD_EBUSY && !b->deciding_tries) {
		/* A release needs no answer, so one its process sent before
		 * this request, on another connection, may come later in this
		 * same batch of events: decide once the batch is read. */
		struct deferred_try *t = malloc(sizeof *t);
		if (t) {
			t->next = NULL;
			t->client = c;
			t->req = *req;
			*(b->tries_tail ? &b->tries_tail->next : &b->tries) = t;
			b->tries_tail = t;
			return;
		}
	}
	if (rc > 0) {
		grants_send(b, o, req->seq, l); /* sent after the commit */
	} else if (rc == 0) {
		o->waiter = w;
		log_event(&b->log, "wait", "resource=%s mode=%s pid=%d comm=%s timeout_ms=%d",
		          log_quote(&b->log, req->name), grants_mode_name(req->mode), (int)o->pid,
		          log_quote(&b->log, o->comm), (int)req->timeout_ms);
		events_wait(w);
	} else {
		log_refusal(b, o, req->name, req->mode, rc);
		client_reply(c, req->seq, rc);
	}
}

void requests_decide_tries(struct broker *b)
{
	struct deferred_try *t = b->tries, *next;
	b->tries = b->tries_tail = NULL;
	b->deciding_tries = 1;
	for (; t; t = next) {
		next = t->next;
		if (!t->client->dead) /* freed only by clients_free_reaped(), after this */
			handle_acquire(b, t->client, &t->req);
		free(t);
	}
	b->deciding_tries = 0;
}

static void handle_release(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_lease *l = own_lease(c->user, req->lease_id);
	if (req->flags & COORD_RELEASE_CACHE) {
		/* Kept as a cached grant, or (not qualifying) released. */
		int rc = cache_bind(b, c, l, req->entry, &c->rx_fd);
		if (rc == COORD_EPROTO) {
			client_kill(c, "protocol-error");
			return;
		}
		if (rc == 0)
			l = NULL;
		else if (l)
			lease_table_release(b->table, l, "release");
		if (!(req->flags & COORD_RELEASE_NO_REPLY))
			client_reply(c, req->seq, rc == 0 || l ? 0 : COORD_ENOLEASE);
		return;
	}
	if (l)
		lease_table_release(b->table, l, "release");
	if (!(req->flags & COORD_RELEASE_NO_REPLY))
		client_reply(c, req->seq, l ? 0 : COORD_ENOLEASE);
}

/* KERNEL_WAIT: what the holder's library says of its kernel lock, kept
 * for listings.  A lease that is not the client's (released or revoked
 * while the message came) is passed over. */
static void handle_kernel_wait(struct client *c, const struct request *req)
{
	struct lt_lease *l = own_lease(c->user, req->lease_id);
	if (l)
		l->kernel_wait = req->flags != 0;
}

/* CANCEL: the owner gives up its waiting client request numbered
 * acquire_seq, which is answered REPLY{COORD_ECANCELED}.  A request that
 * is not waiting any more (granted, timed out) has its answer on the way
 * already, so nothing is sent. */
static void handle_cancel(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	struct lt_waiter *w = o->waiter;
	if (!w || w->purpose != LT_FOR_CLIENT || w->seq != req->acquire_seq)
		return;
	o->waiter = NULL;
	log_event(&b->log, "cancel", "resource=%s mode=%s pid=%d comm=%s waited_ms=%lld",
	          log_quote(&b->log, w->res->name), grants_mode_name(w->mode), (int)o->pid,
	          log_quote(&b->log, o->comm), (long long)(now_ms() - w->since_ms));
	events_cancel(w, "canceled");
	lease_table_cancel(b->table, w);
	client_reply(c, req->acquire_seq, COORD_ECANCELED);
}

/* After a broker restart: a lease of this process's earlier connection
 * taken back (see adopt.c). */
static void handle_attach(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	struct lt_lease *l = NULL;
	int rc = adopt_attach(b, o, req->client_id, req->lease_id, req->secret, &l);
	if (rc == 0 && l)
		grants_send(b, o, req->seq, l); /* after the rewritten record's commit */
	else
		client_reply(c, req->seq, rc);
}

/* ---- status, list ---- */

static void handle_status(struct broker *b, struct client *c, const struct request *req)
{
	union {
		coord_msg_status_reply s;
		char raw[COORD_MSG_MAX];
	} m;
	size_t dl = strlen(b->cfg.dir);
	if (dl > COORD_MSG_MAX - sizeof m.s)
		dl = COORD_MSG_MAX - sizeof m.s;
	memset(&m.s, 0, sizeof m.s);
	m.s.h = (coord_msg_hdr){ COORD_MSG_STATUS_REPLY, req->seq };
	m.s.version = COORD_PROTO_VERSION;
	m.s.broker_pid = (uint64_t)getpid();
	m.s.uptime_ms = (uint64_t)(now_ms() - b->started_ms);
	m.s.clients = b->clients.n;
	m.s.leases = lease_table_leases(b->table);
	m.s.waiters = lease_table_waiters(b->table);
	m.s.resources = lease_table_resources(b->table);
	m.s.dir_len = (uint16_t)dl;
	memcpy(m.raw + sizeof m.s, b->cfg.dir, dl);
	client_send(c, &m, sizeof m.s + dl);
}

/* One holder or waiter, as LIST and SHOW report it. */
struct info_entry {
	int kind, mode;            /* COORD_INFO_*, COORD_READ/WRITE */
	uint64_t id, token;        /* 0 for waiters */
	const struct owner *who;
	int64_t since_ms;          /* granted or queued, monotonic */
	int64_t recalled_ms;       /* monotonic, or -1 */
	const char *name, *label;
	int flags;                 /* COORD_INFO_ADOPTED, ... */
};

/* A listing's answer, built whole when the request comes and sent as the
 * client's socket drains (client_stream()): each message as a 16-bit
 * length and its bytes.  Building it at once makes the listing a snapshot
 * of the table at the request, whatever happens while it is sent.  Every
 * snapshot being sent counts against LISTINGS_MAX_BYTES, so clients that
 * ask and do not read cannot make the broker hold more than that. */
struct listing {
	char *buf;
	size_t len, cap, sent;
};

#define LISTINGS_MAX_BYTES ((size_t)256 << 20)
static size_t listings_bytes; /* capacity of every listing alive */

/* Appends message msg (len bytes).  Returns 0, or COORD_ELIMIT /
 * COORD_ENOMEM. */
static int listing_add(struct listing *ls, const void *msg, size_t len)
{
	uint16_t l16 = (uint16_t)len;
	if (ls->len + sizeof l16 + len > ls->cap) {
		size_t cap = ls->cap ? ls->cap * 2 : 16384;
		char *buf;
		while (cap < ls->len + sizeof l16 + len)
			cap *= 2;
		if (listings_bytes - ls->cap + cap > LISTINGS_MAX_BYTES)
			return COORD_ELIMIT;
		buf = realloc(ls->buf, cap);
		if (!buf)
			return COORD_ENOMEM;
		listings_bytes += cap - ls->cap;
		ls->buf = buf;
		ls->cap = cap;
	}
	memcpy(ls->buf + ls->len, &l16, sizeof l16);
	memcpy(ls->buf + ls->len + sizeof l16, msg, len);
	ls->len += sizeof l16 + len;
	return 0;
}

static void listing_free(void *arg)
{
	struct listing *ls = arg;
	listings_bytes -= ls->cap;
	free(ls->buf);
	free(ls);
}

/* The record at ls->buf + at: its message's length into *len and header
 * into *h. */
static void listing_record(const struct listing *ls, size_t at, uint16_t *len, coord_msg_hdr *h)
{
	memcpy(len, ls->buf + at, sizeof *len);
	memcpy(h, ls->buf + at + sizeof *len, sizeof *h);
}

/* client_stream()'s fill: the next packet.  For protocol 7 that is as
 * many LEASE_INFO as fit in one LEASE_INFOS: the records are copied as
 * the listing keeps them, length and message. */
static int listing_fill(struct client *c, void *arg)
{
	struct listing *ls = arg;
	union {
		coord_msg_lease_infos m;
		char raw[COORD_MSG_MAX];
	} p;
	size_t at = sizeof p.m, end;
	coord_msg_hdr h;
	uint16_t first, l16;
	if (ls->sent >= ls->len)
		return 0;
	listing_record(ls, ls->sent, &first, &h);
	p.m = (coord_msg_lease_infos){ { COORD_MSG_LEASE_INFOS, h.seq }, 0, 0 };
	for (end = ls->sent, l16 = first; c->proto >= 7 && h.type == COORD_MSG_LEASE_INFO &&
	                                  at + sizeof l16 + l16 <= sizeof p;) {
		memcpy(p.raw + at, ls->buf + end, sizeof l16 + l16);
		at += sizeof l16 + l16;
		end += sizeof l16 + l16;
		p.m.count++;
		if (end >= ls->len)
			break;
		listing_record(ls, end, &l16, &h);
	}
	if (p.m.count > 1) {
		client_send(c, &p, at);
		ls->sent = end;
		return 1;
	}
	client_send(c, ls->buf + ls->sent + sizeof first, first);
	ls->sent += sizeof first + first;
	return 1;
}

/* Sends ls (which ends with END) to c as the socket drains, or, if it
 * could not be completed (rc < 0), REPLY{rc}. */
static void listing_send(struct client *c, uint32_t seq, struct listing *ls, int rc)
{
	if (rc == 0)
		rc = client_stream(c, listing_fill, listing_free, ls);
	if (rc < 0) {
		listing_free(ls);
		client_reply(c, seq, rc);
	}
}

/* A new listing, or NULL if c has one being sent (REPLY{COORD_EBUSYCONN}
 * sent) or memory is short (REPLY{COORD_ENOMEM}). */
static struct listing *listing_new(struct client *c, uint32_t seq)
{
	struct listing *ls;
	if (c->stream_fill) {
		client_reply(c, seq, COORD_EBUSYCONN);
		return NULL;
	}
	ls = calloc(1, sizeof *ls);
	if (!ls)
		client_reply(c, seq, COORD_ENOMEM);
	return ls;
}

/* COORD_INFO_* of a holder. */
static int info_flags(const struct lt_lease *l)
{
	const struct owner *o = l->owner;
	int told = !l->adopted && o->client && o->client->proto >= 7;
	return (l->adopted ? COORD_INFO_ADOPTED : 0) | (l->cached ? COORD_INFO_CACHED : 0) |
	       (cache_in_use(l) ? COORD_INFO_IN_USE : 0) |
	       (l->kernel_wait ? COORD_INFO_KERNEL_WAIT : 0) | (told ? COORD_INFO_KERNEL_TOLD : 0);
}

static int add_info(struct listing *ls, uint32_t seq, const struct info_entry *e, int64_t now)
{
	union {
		coord_msg_lease_info i;
		char raw[COORD_MSG_MAX];
	} m;
	size_t nl = strlen(e->name), cl = strlen(e->who->comm), ll = strlen(e->label);
	char *p = m.raw + sizeof m.i;
	memset(&m.i, 0, sizeof m.i);
	m.i.h = (coord_msg_hdr){ COORD_MSG_LEASE_INFO, seq };
	m.i.kind = (uint32_t)e->kind;
	m.i.mode = (uint32_t)e->mode;
	m.i.lease_id = e->id;
	m.i.token = e->token;
	m.i.pid = (uint64_t)e->who->pid;
	m.i.uid = (uint64_t)e->who->uid;
	m.i.age_ms = (uint64_t)(now - e->since_ms);
	m.i.recalled_ms = e->recalled_ms < 0 ? -1 : now - e->recalled_ms;
	m.i.name_len = (uint16_t)nl;
	m.i.comm_len = (uint16_t)cl;
	m.i.label_len = (uint16_t)ll;
	m.i.flags = (uint16_t)e->flags;
	memcpy(p, e->name, nl);
	memcpy(p + nl, e->who->comm, cl);
	memcpy(p + nl + cl, e->label, ll);
	return listing_add(ls, &m, sizeof m.i + nl + cl + ll);
}

struct list_walk {
	struct listing *ls;
	uint32_t seq;
	int64_t now;
	int rc;                    /* the first failure; the rest is skipped */
};

/* A LEASE_INFO for every holder, then every waiter, of res. */
static void list_resource(struct lt_resource *res, void *arg)
{
	struct list_walk *lw = arg;
	for (struct lt_lease *l = res->holders; l && !lw->rc; l = l->res_next) {
		struct info_entry e = { COORD_INFO_HOLDER, l->mode, l->id, l->token, l->owner,
			                l->granted_ms, l->recalled_ms, res->name, l->label,
			                info_flags(l) };
		lw->rc = add_info(lw->ls, lw->seq, &e, lw->now);
	}
	for (struct lt_waiter *w = res->head; w && !lw->rc; w = w->next) {
		struct info_entry e = { COORD_INFO_WAITER, w->mode, 0, 0, w->owner, w->since_ms, -1,
			                res->name,
			                w->purpose == LT_FOR_CHECKPOINT ? "checkpoint" : w->label, 0 };
		lw->rc = add_info(lw->ls, lw->seq, &e, lw->now);
	}
}

static int add_end(struct listing *ls, uint32_t seq)
{
	coord_msg_reply end = { { COORD_MSG_END, seq }, 0, 0 };
	return listing_add(ls, &end, sizeof end);
}

/* LIST: the snapshot is whole before its first message goes, so a
 * listing shows every lease and waiter exactly as they were when the
 * request was read, each once, however long the client takes to read it
 * (see docs/design.md, "Protocol"). */
static void handle_list(struct broker *b, struct client *c, const struct request *req)
{
	struct listing *ls = listing_new(c, req->seq);
	struct list_walk lw = { ls, req->seq, now_ms(), 0 };
	if (!ls)
		return;
	lease_table_foreach(b->table, list_resource, &lw);
	if (!lw.rc)
		lw.rc = add_end(ls, req->seq);
	listing_send(c, req->seq, ls, lw.rc);
}

/* ---- show, policy, checkpoint ---- */

union resource_info_msg {
	coord_msg_resource_info i;
	char raw[COORD_MSG_MAX];
};

/* RESOURCE_INFO of res (NULL: not in memory) in m; returns its length. */
static size_t build_resource_info(struct broker *b, union resource_info_msg *mu, uint32_t seq,
                                  struct lt_resource *res, const char *name,
                                  const struct store_resource *rec, int kind, int status)
{
	union resource_info_msg m;
	struct ckpt_jobs *j = &b->jobs;
	size_t nl = strlen(name), cl = strlen(rec->command), ml = strlen(rec->message);
	char *p = m.raw + sizeof m.i;
	memset(&m.i, 0, sizeof m.i);
	m.i.h = (coord_msg_hdr){ COORD_MSG_RESOURCE_INFO, seq };
	m.i.status = status;
	m.i.kind = (uint32_t)kind;
	m.i.policy = rec->policy;
	m.i.sqlite_mode = rec->policy == COORD_POLICY_SQLITE ? rec->sqlite_mode : COORD_SQLITE_DEFAULT;
	m.i.timeout_ms = rec->timeout_ms ? rec->timeout_ms : j->default_timeout_ms;
	if (res) {
		struct resource_ext *x = res->ext;
		m.i.checkpoint_state = x->job != NULL;
		m.i.token = res->token;
		m.i.holders = (uint64_t)(res->readers + res->writers);
		m.i.waiters = res->nwaiters;
	} else {
		m.i.token = rec->token_ceiling;
	}
	m.i.checkpoints = rec->checkpoints;
	m.i.last_at_ms = rec->last_at_ms;
	m.i.last_duration_us = rec->last_duration_us;
	m.i.last_result = rec->last_result;
	if (kind == COORD_KIND_DUCKDB || rec->policy == COORD_POLICY_DUCKDB)
		ckpt_jobs_duckdb_check(j); /* the library may have come or gone */
	m.i.duckdb_available = (uint32_t)j->duckdb_ok;
	m.i.wal_before = rec->checkpoints ? rec->wal_before : -1;
	m.i.wal_after = rec->checkpoints ? rec->wal_after : -1;
	m.i.max_hold_ms = rec->max_hold_ms;
	m.i.recall_grace_ms = rec->recall_grace_ms;
	m.i.name_len = (uint16_t)nl;
	m.i.command_len = (uint16_t)cl;
	memcpy(p, name, nl);
	memcpy(p + nl, rec->command, cl);
	if (!j->duckdb_ok && (kind == COORD_KIND_DUCKDB || rec->policy == COORD_POLICY_DUCKDB)) {
		/* Say plainly why DuckDB checkpoints are off. */
		int n = snprintf(p + nl + cl, COORD_MSG_MAX - sizeof m.i - nl - cl,
		                 "DuckDB checkpoints are off: %s", j->duckdb_why);
		ml = n < 0 ? 0 : (size_t)n;
	} else {
		memcpy(p + nl + cl, rec->message, ml);
	}
	m.i.message_len = (uint16_t)ml;
	memcpy(mu, &m, sizeof m.i + nl + cl + ml);
	return sizeof m.i + nl + cl + ml;
}

static void send_resource_info(struct broker *b, struct client *c, uint32_t seq,
                               struct lt_resource *res, const char *name,
                               const struct store_resource *rec, int kind, int status)
{
	union resource_info_msg m;
	client_send(c, &m, build_resource_info(b, &m, seq, res, name, rec, kind, status));
}

/* The same for res, in memory, as its record says there. */
static void send_resource_info_of(struct broker *b, struct client *c, uint32_t seq,
                                  struct lt_resource *res, int status)
{
	struct resource_ext *x = res->ext;
	struct store_resource rec;
	store_resource_mem_get(&x->rec, &rec);
	send_resource_info(b, c, seq, res, res->name, &rec, x->kind, status);
}

/* SHOW: like LIST, a snapshot sent as the socket drains, however many
 * hold or wait for the resource. */
static void handle_show(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_resource *res = lease_table_find(b->table, req->name);
	union resource_info_msg m;
	struct listing *ls;
	struct list_walk lw;
	size_t len;
	struct store_resource rec;
	if (res) {
		struct resource_ext *x = res->ext;
		store_resource_mem_get(&x->rec, &rec);
		len = build_resource_info(b, &m, req->seq, res, req->name, &rec,
		                          ckpt_jobs_detect_kind(res), 0);
	} else {
		int rc = store_resource_load(b->store, req->name, &rec);
		int kind = req->name[0] == '/' ? checkpoint_detect_kind(req->name) : COORD_KIND_PLAIN;
		if (rc < 0 && rc != COORD_ENOENT) {
			client_reply(c, req->seq, rc);
			return;
		}
		len = build_resource_info(b, &m, req->seq, NULL, req->name, &rec, kind, 0);
	}
	ls = listing_new(c, req->seq);
	if (!ls)
		return;
	lw = (struct list_walk){ ls, req->seq, now_ms(), 0 };
	if (res)
		list_resource(res, &lw);
	if (!lw.rc)
		lw.rc = listing_add(ls, &m, len);
	if (!lw.rc)
		lw.rc = add_end(ls, req->seq);
	listing_send(c, req->seq, ls, lw.rc);
}

/* The durable record of a resource, for a change, in *scratch: the
 * table's copy if the resource is in memory (*res set), else loaded from
 * the store (or fresh).  record_save() saves it and puts it back in the
 * table.  Returns scratch, or NULL with *rc set. */
static struct store_resource *record_for_change(struct broker *b, const char *name,
                                                struct lt_resource **res,
                                                struct store_resource *scratch, int *rc)
{
	*res = lease_table_find(b->table, name);
	if (*res) {
		store_resource_mem_get(&((struct resource_ext *)(*res)->ext)->rec, scratch);
		return scratch;
	}
	*rc = store_resource_load(b->store, name, scratch);
	if (*rc < 0 && *rc != COORD_ENOENT)
		return NULL;
	*rc = 0;
	scratch->version = STORE_RESOURCE_VERSION;
	return scratch;
}

/* Saves a changed record and, once it is saved, puts it in the table if
 * the resource is in memory, which then has a record in the store.  A
 * change that fails changes nothing, in the store or in memory. */
static int record_save(struct broker *b, const char *name, struct lt_resource *res,
                       struct store_resource *r)
{
	struct store_resource_mem fresh = { 0 };
	struct resource_ext *x = res ? res->ext : NULL;
	int rc;
	r->version = STORE_RESOURCE_VERSION;
	if (res && res->token > r->token_ceiling)
		r->token_ceiling = res->token; /* its last write token, lazily */
	/* Room for the copy in memory first, so a saved record is one the
	 * table can hold. */
	rc = x ? store_resource_mem_set(&fresh, r) : 0;
	if (rc == 0)
		rc = store_resource_save(b->store, name, r);
	if (rc == 0 && x) {
		store_resource_mem_free(&x->rec);
		x->rec = fresh;
		fresh.strings = NULL;
		if (!x->kept)
			b->kept_resources++;
		x->kept = 1;
	}
	store_resource_mem_free(&fresh);
	return rc;
}

static void handle_policy(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	struct lt_resource *res;
	struct store_resource rec, *r;
	int rc = 0;
	r = record_for_change(b, req->name, &res, &rec, &rc);
	if (!r) {
		client_reply(c, req->seq, rc);
		return;
	}
	r->policy = req->policy;
	r->sqlite_mode = req->sqlite_mode;
	r->timeout_ms = req->policy_timeout_ms;
	snprintf(r->command, sizeof r->command, "%s", req->command);
	rc = record_save(b, req->name, res, r);
	log_event(&b->log, "policy", "resource=%s policy=%s mode=%s timeout_ms=%u command=%s pid=%d",
	          log_quote(&b->log, req->name), coord_proto_policy_name((int)r->policy),
	          coord_proto_sqlite_mode_name((int)r->sqlite_mode), r->timeout_ms,
	          log_quote(&b->log, r->command), (int)o->pid);
	client_reply(c, req->seq, rc);
}

/* Hold limits make the broker revoke, that is signal the holders, so only
 * those who could revoke anyone's lease may set them: root, the broker's
 * own user, and its --admin-group. */
static void handle_limits(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	struct lt_resource *res;
	struct store_resource rec, *r;
	uint32_t old_hold, old_grace;
	int rc = 0;
	if (c->uid != 0 && c->uid != geteuid() && !c->admin) {
		log_event(&b->log, "limits-refused", "resource=%s pid=%d uid=%d reason=not-admin",
		          log_quote(&b->log, req->name), (int)o->pid, (int)c->uid);
		client_reply(c, req->seq, COORD_EPERM);
		return;
	}
	r = record_for_change(b, req->name, &res, &rec, &rc);
	if (!r) {
		client_reply(c, req->seq, rc);
		return;
	}
	old_hold = r->max_hold_ms;
	old_grace = r->recall_grace_ms;
	r->max_hold_ms = req->max_hold_ms;
	r->recall_grace_ms = req->recall_grace_ms;
	if (res)
		rc = lease_table_set_limits(b->table, res, req->max_hold_ms, req->recall_grace_ms);
	if (rc == 0)
		rc = record_save(b, req->name, res, r);
	if (rc < 0) {
		/* Nothing changed: not in memory, not in the store. */
		r->max_hold_ms = old_hold;
		r->recall_grace_ms = old_grace;
		if (res)
			lease_table_set_limits(b->table, res, old_hold, old_grace);
	}
	log_event(&b->log, "limits", "resource=%s max_hold_ms=%u recall_grace_ms=%u pid=%d code=%s",
	          log_quote(&b->log, req->name), req->max_hold_ms, req->recall_grace_ms,
	          (int)o->pid, rc < 0 ? coord_proto_errname(rc) : "0");
	client_reply(c, req->seq, rc);
}

/* NOTIFY: a pipe whose read end goes to the client, for its event loop;
 * grants_recall() writes a byte to it at every recall.  The client holds
 * only the read end, so it cannot make the broker's writes block (the
 * write end's O_NONBLOCK is the broker's own).  A second NOTIFY replaces
 * the first pipe. */
static void handle_notify(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	coord_msg_reply r = { { COORD_MSG_REPLY, req->seq }, 0, 0 };
	int p[2], rc;
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_event(&b->log, "error", "op=notify-pipe pid=%d errno=%d", (int)o->pid, errno);
		client_reply(c, req->seq, errno == EMFILE || errno == ENFILE ? COORD_ELIMIT : COORD_ESYS);
		return;
	}
	rc = client_send_fd(c, &r, sizeof r, p[0]);
	close(p[0]);
	if (rc < 0) {
		/* Answers are queued before it (or c is gone): say so in order. */
		close(p[1]);
		client_reply(c, req->seq, COORD_ESYS);
		return;
	}
	if (c->notify_fd >= 0)
		close(c->notify_fd);
	c->notify_fd = p[1];
	/* Leases recalled before the pipe existed (adopted ones, say) wake it
	 * at once. */
	for (struct lt_lease *l = o->leases; l; l = l->own_next) {
		if (l->recalled_ms >= 0) {
			grants_notify(c);
			break;
		}
	}
}

/* CACHE: the connection's cache page (cache.c), a sealed memfd whose
 * descriptor goes to the client with the reply. */
static void handle_cache(struct broker *b, struct client *c, const struct request *req)
{
	coord_msg_reply r = { { COORD_MSG_REPLY, req->seq }, 0, 0 };
	int fd = -1, rc = cache_page_make(c, &fd);
	if (rc < 0) {
		if (rc != COORD_EINVAL)
			log_event(&b->log, "error", "op=cache-page pid=%d code=%s", (int)c->pid,
			          coord_proto_errname(rc));
		client_reply(c, req->seq, rc);
		return;
	}
	rc = client_send_fd(c, &r, sizeof r, fd);
	close(fd);
	if (rc < 0) {
		/* Answers are queued before it: the page stays unused. */
		client_reply(c, req->seq, COORD_ESYS);
	}
}

static void handle_checkpoint(struct broker *b, struct client *c, const struct request *req)
{
	struct owner *o = c->user;
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	struct lt_resource *res;
	int rc, bits, status;
	if (req->name[0] != '/') {
		client_reply(c, req->seq, COORD_ENOTSUP);
		return;
	}
	if (o->waiter) {
		client_reply(c, req->seq, COORD_EBUSYCONN);
		return;
	}
	/* Queue like a writer, so it runs with the same exclusivity as a
	 * checkpoint on release, in FIFO order with the other requests. */
	rc = lease_table_request(b->table, req->name, o, COORD_WRITE, now_ms(), -1,
	                         LT_FOR_CHECKPOINT, req->seq, "checkpoint", &l, &w);
	if (rc < 0) {
		if (lease_table_cycle(b->table))
			log_refusal(b, o, req->name, COORD_WRITE, rc);
		client_reply(c, req->seq, rc);
		return;
	}
	if (rc == 0) {
		o->waiter = w;
		return;
	}
	/* Its turn already: nothing conflicting holds the resource. */
	res = lease_table_find(b->table, req->name);
	bits = ckpt_jobs_start_requested(&b->jobs, res, o, req->seq, &status);
	if (bits)
		lease_table_block(b->table, res, bits);
	else
		send_resource_info_of(b, c, req->seq, res, status);
	lease_table_maybe_close(b->table, res);
}

/* ---- dispatch ---- */

static void handle_hello(struct client *c, const struct request *req)
{
	/* The WELCOME names the version this connection speaks: the
	 * client's own, which may be older than the broker's. */
	coord_msg_welcome w = { { COORD_MSG_WELCOME, req->seq }, COORD_EPROTO, req->version, c->id,
		                (uint64_t)getpid() };
	if (c->helloed) {
		log_event(c->set->log, "protocol-error", "pid=%d reason=second-hello", (int)c->pid);
		client_kill(c, "protocol-error");
		return;
	}
	c->helloed = 1;
	c->proto = req->version;
	if (req->version >= COORD_PROTO_VERSION_MIN && req->version <= COORD_PROTO_VERSION) {
		w.status = 0;
		client_send(c, &w, sizeof w);
		return;
	}
	/* Sent at once, since a dead client's queue is dropped unsent: a
	 * program built for another version learns why it is cut off.
	 * Nothing is queued before the first WELCOME. */
	if (send(c->fd, &w, sizeof w, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* gone, or its buffer full: the close tells it */
	}
	log_event(c->set->log, "protocol-error", "pid=%d reason=version version=%u supported=%d-%d",
	          (int)c->pid, (unsigned)req->version, COORD_PROTO_VERSION_MIN, COORD_PROTO_VERSION);
	client_kill(c, "protocol-error");
}

void requests_handle(struct broker *b, struct client *c, const void *buf, size_t len)
{
	struct request req;
	int rc = proto_decode(buf, len, &req);

	if (rc == COORD_EPROTO || (!c->helloed && req.type != COORD_MSG_HELLO)) {
		log_event(&b->log, "protocol-error", "pid=%d comm=%s bytes=%zu type=%u", (int)c->pid,
		          log_quote(&b->log, c->comm), len, (unsigned)req.type);
		client_kill(c, "protocol-error");
		return;
	}
	if (rc < 0) {
		client_reply(c, req.seq, rc);
		return;
	}
	switch (req.type) {
	case COORD_MSG_HELLO:
		handle_hello(c, &req);
		break;
	case COORD_MSG_ACQUIRE:
		handle_acquire(b, c, &req);
		break;
	case COORD_MSG_RELEASE:
		handle_release(b, c, &req);
		break;
	case COORD_MSG_STATUS:
		handle_status(b, c, &req);
		break;
	case COORD_MSG_LIST:
		handle_list(b, c, &req);
		break;
	case COORD_MSG_SHOW:
		handle_show(b, c, &req);
		break;
	case COORD_MSG_POLICY:
		handle_policy(b, c, &req);
		break;
	case COORD_MSG_CHECKPOINT:
		handle_checkpoint(b, c, &req);
		break;
	case COORD_MSG_REVOKE:
		revoke_start(b, c, &req);
		break;
	case COORD_MSG_ATTACH:
		handle_attach(b, c, &req);
		break;
	case COORD_MSG_LIMITS:
		handle_limits(b, c, &req);
		break;
	case COORD_MSG_NOTIFY:
		handle_notify(b, c, &req);
		break;
	case COORD_MSG_CACHE:
		handle_cache(b, c, &req);
		break;
	case COORD_MSG_KERNEL_WAIT:
		handle_kernel_wait(c, &req);
		break;
	case COORD_MSG_CANCEL:
		handle_cancel(b, c, &req);
		break;
	case COORD_MSG_METRICS:
		/* WATCH: c sleeps on the event feed; else the metrics text. */
		if (req.flags & COORD_METRICS_WATCH)
			client_reply(c, req.seq, events_watch(c));
		else
			metrics_request(b, c, &req);
		break;
	}
}
