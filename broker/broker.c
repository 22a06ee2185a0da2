/* The broker's parts wired together: the lease table's events go to grant
 * persistence (grants.c) and to the request handlers (requests.c), client
 * connections (client.c) hand their packets to the handlers and their
 * deaths to the owners here, checkpoint jobs report back to the handlers,
 * and one timer serves the table's deadlines, the jobs' time limits, the
 * clients' (a paused listening socket, counts of refusals to log), the
 * store's (counts of failed writes to log, failed deletes to redo) and
 * the look at the instance directory once a second (instance.c).
 *
 * An owner is made for each connection when it is accepted and goes with
 * it: its waiter is cancelled and its leases are reclaimed at once, except
 * when the broker stops: then the leases stay recorded, for the next
 * broker to adopt (adopt.c).
 * Clients are destroyed only after each batch of events, never inside a
 * lease table callback.
 *
 * After each batch of events (after_events()), in this order: the lease
 * records the batch changed are committed in one LMDB transaction
 * (grants_commit(); grants refused if it fails), the buffered log lines
 * are written, and only then the queued answers are sent, so no GRANT
 * leaves before its record (docs/design.md, "Group commit"); then dead
 * clients are reaped, and what their leases' ends changed is committed
 * and sent the same way. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "adopt.h"
#include "broker.h"
#include "cache.h"
#include "events.h"
#include "grants.h"
#include "instance.h"
#include "metrics_http.h"
#include "requests.h"
#include "revoke.h"
#include "secret.h"

static int64_t table_now(void *ud)
{
	(void)ud;
	return now_ms();
}

/* A lease left the table: undo its grant, and tell the revocations that
 * may be waiting for it. */
static int lease_released(void *ud, struct lt_lease *l, const char *why)
{
	struct broker *b = ud;
	uint64_t id = l->id;
	int bits = grants_released(ud, l, why);
	if (b->revocations)
		revoke_lease_gone(b, id);
	return bits;
}

/* A lease held past its resource's hold limit: revoke it. */
static void limit_due(void *ud, struct lt_lease *l, int why)
{
	revoke_limit(ud, l, why);
}

static const struct lt_events table_events = {
	.now = table_now,
	.resource_open = grants_resource_open,
	.resource_keep = grants_resource_keep,
	.resource_close = grants_resource_close,
	.grant = grants_grant,
	.granted = requests_granted,
	.waiter_failed = requests_waiter_failed,
	.released = lease_released,
	.recall = grants_recall,
	.lets_go = cache_lets_go,
	.limit = limit_due,
};

/* ---- owners, one per connection ---- */

static int client_accepted(void *ud, struct client *c)
{
	struct owner *o = calloc(1, sizeof *o);
	(void)ud;
	if (!o)
		return COORD_ENOMEM;
	o->pid = c->pid;
	o->uid = c->uid;
	o->pid_start = c->pid_start;
	memcpy(o->comm, c->comm, sizeof o->comm);
	o->client_id = c->id;
	o->pidfd = c->pidfd;
	o->client = c;
	c->user = o;
	return 0;
}

static void client_packet(void *ud, struct client *c, const void *buf, size_t len)
{
	requests_handle(ud, c, buf, len);
}

static void client_gone(void *ud, struct client *c, const char *why)
{
	struct broker *b = ud;
	struct owner *o = c->user;
	if (!o)
		return;
	o->client = NULL;
	o->pidfd = -1;
	grants_forget(b, o);
	if (o->waiter) {
		struct lt_waiter *w = o->waiter;
		o->waiter = NULL;
		log_event(&b->log, "cancel", "resource=%s mode=%s pid=%d reason=%s",
		          log_quote(&b->log, w->res->name), grants_mode_name(w->mode), (int)o->pid, why);
		events_cancel(w, why);
		lease_table_cancel(b->table, w);
	}
	/* A broker that stops leaves its leases recorded and their slots
	 * set, for the next one to adopt. */
	while (o->leases && !b->loop.stopping)
		lease_table_release(b->table, o->leases, why);
	ckpt_jobs_forget(&b->jobs, o);
	revoke_forget(b, o);
	cache_client_gone(c);
	events_unwatch(c);
	c->user = NULL;
	free(o);
}

/* ---- timers and signals ---- */

static void timer_due(void *ud)
{
	struct broker *b = ud;
	int64_t now = now_ms();
	lease_table_expire(b->table, now);
	ckpt_jobs_expire(&b->jobs, now);
	clients_expire(&b->clients, now);
	revoke_expire(b, now);
	store_expire(b->store, now);
	instance_expire(b, now);
}

/* The earlier of two deadlines, -1 meaning none. */
static int64_t earliest(int64_t a, int64_t b)
{
	return a < 0 ? b : (b < 0 || a < b ? a : b);
}

/* Commits the iteration's lease records, then writes its log lines, then
 * sends its answers: each step only after the one before. */
static void commit_and_send(struct broker *b)
{
	grants_commit(b);
	log_flush(&b->log);
	clients_flush(&b->clients);
}

/* Sets the timer for the earliest deadline of every part. */
static void arm_timer(struct broker *b)
{
	int64_t next;
	next = earliest(lease_table_next_deadline(b->table), ckpt_jobs_next_deadline(&b->jobs));
	next = earliest(next, revoke_next_deadline(b));
	next = earliest(next, earliest(store_next_deadline(b->store), instance_next_deadline()));
	loop_arm(&b->loop, earliest(next, clients_next_deadline(&b->clients)));
}

static void after_events(void *ud)
{
	struct broker *b = ud;
	requests_decide_tries(b);
	cache_drops_run(b);
	commit_and_send(b);
	clients_reap(&b->clients);
	cache_drops_run(b);
	commit_and_send(b);
	clients_free_reaped(&b->clients);
	events_publish(); /* the batch's events, for coordctl watch */
	arm_timer(b);
}

static void signal_event(struct watch *w, uint32_t events)
{
	struct broker *b = w->obj;
	struct signalfd_siginfo si;
	(void)events;
	while (read(b->signal_fd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			log_event(&b->log, "shutdown", "signal=%s", si.ssi_signo == SIGTERM ? "TERM" : "INT");
			b->loop.stopping = 1;
		} else if (si.ssi_signo == SIGHUP) {
			log_reopen(&b->log); /* logrotate, systemctl reload */
		}
	}
}

static int watch_signals(struct broker *b)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	b->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (b->signal_fd < 0)
		return -1;
	b->signal_watch = (struct watch){ signal_event, b };
	return loop_add(&b->loop, b->signal_fd, &b->signal_watch, EPOLLIN);
}

/* ---- life ---- */

int broker_init(struct broker *b, char *err, size_t errsize)
{
	b->signal_fd = -1;
	b->clients.listen_fd = b->clients.spare_fd = -1;
	b->table = lease_table_new(&table_events, b, b->cfg.max_leases, b->cfg.max_waiters,
	                           b->first_lease_id);
	if (!b->table)
		return COORD_ENOMEM;
	{
		uint64_t seed;
		secret_draw(&seed, sizeof seed);
		lease_table_seed_hash(b->table, seed);
	}
	if (loop_init(&b->loop, timer_due, b) < 0 || watch_signals(b) < 0) {
		snprintf(err, errsize, "%s", strerror(errno));
		return COORD_ESYS;
	}
	b->jobs = (struct ckpt_jobs){
		.loop = &b->loop,
		.log = &b->log,
		.store = b->store,
		.table = b->table,
		.duckdb_lib = b->cfg.duckdb_lib,
		.default_timeout_ms = b->cfg.checkpoint_timeout_ms,
		.done = requests_checkpoint_done,
		.ud = b,
	};
	b->clients = (struct clients){
		.loop = &b->loop,
		.log = &b->log,
		.ev = { client_accepted, client_packet, client_gone },
		.ud = b,
		.max = b->cfg.max_clients,
		.group = b->cfg.group,
		.group_name = b->cfg.group_name,
		.admin_group = b->cfg.admin_group,
		.listen_fd = -1,
		.spare_fd = -1,
		/* Connection ids never repeat across restarts: leases are
		 * recorded with theirs, and adoption groups them by it. */
		.next_id = region_epoch(b->region) << 32,
	};
	b->started_ms = now_ms();
	ckpt_jobs_init(&b->jobs);
	events_open(b);
	return 0;
}

int broker_listen(struct broker *b, char *err, size_t errsize)
{
	/* What adoption changed (records of dead holders dropped) first. */
	grants_commit(b);
	if (metrics_http_listen(b, err, errsize) < 0)
		return COORD_ESYS;
	return clients_listen(&b->clients, b->cfg.dir, err, errsize);
}

int broker_run(struct broker *b)
{
	int rc;
	b->log.buffered = 1;
	log_flush_on_crash(&b->log);
	/* Deadlines known before the first event (the hold limits of leases
	 * adopted at the start) are timed from now, not from that event. */
	arm_timer(b);
	rc = loop_run(&b->loop, after_events, b);
	log_flush_on_crash(NULL);
	log_flush(&b->log);
	b->log.buffered = 0;
	free(b->log.buf);
	b->log.buf = NULL;
	return rc < 0 ? COORD_ESYS : 0;
}

void broker_fini(struct broker *b)
{
	ckpt_jobs_shutdown(&b->jobs);
	metrics_http_close();
	events_close();
	clients_close(&b->clients);
	adopt_fini(b);
	revoke_fini(b);
	lease_table_free(b->table);
	b->table = NULL;
	free(b->answers);
	b->answers = NULL;
	b->nanswers = b->answers_cap = 0;
	if (b->signal_fd >= 0)
		close(b->signal_fd);
	loop_fini(&b->loop);
}
