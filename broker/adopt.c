/* Adoption: what a starting broker does with the leases an earlier broker
 * of this boot granted, and how their holders take them back.
 *
 * leases.mdb names each lease's holder by pid and /proc start time, which
 * together name one process for the life of a boot, and by the id of the
 * connection it was granted on.  At start, every record whose holder
 * still lives goes back into the lease table as held (same id, token and
 * slot), under a detached owner per earlier connection that watches the
 * holder's pidfd, so a holder that dies later is reclaimed as usual.  The
 * slots of adopted leases keep their ids and every other slot is cleared,
 * so coord_lease_valid() stays true exactly for adopted leases.  Records
 * of dead holders are reclaimed through the table like any death, which
 * checkpoints after a writer.
 *
 * A holder's library reconnects and sends ATTACH for each lease it holds,
 * with the lease's secret (from its GRANT); the lease then moves to the
 * new connection's owner.  ATTACH "done" gives back what that earlier
 * connection still holds but the process did not claim: a release the
 * old broker never read, or a grant the process never received.  Only
 * the same process (pid and start time from SO_PEERCRED and /proc) with
 * the right secret can attach a lease. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "adopt.h"
#include "grants.h"
#include "revoke.h"
#include "state.h"

void adopt_collect(void *ud, const struct store_lease *l)
{
	struct adopt_records *r = ud;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct store_lease *v = realloc(r->v, cap * sizeof *v);
		if (!v) {
			r->failed = 1;
			return;
		}
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = *l;
}

static int record_cmp(const void *pa, const void *pb)
{
	const struct store_lease *a = pa, *b = pb;
	if (a->client_id != b->client_id)
		return a->client_id < b->client_id ? -1 : 1;
	if (a->pid != b->pid)
		return a->pid < b->pid ? -1 : 1;
	if (a->pid_start != b->pid_start)
		return a->pid_start < b->pid_start ? -1 : 1;
	return a->id < b->id ? -1 : a->id > b->id;
}

static void detached_unlink(struct broker *b, struct owner *o)
{
	if (o->det_prev)
		o->det_prev->det_next = o->det_next;
	else
		b->detached = o->det_next;
	if (o->det_next)
		o->det_next->det_prev = o->det_prev;
	b->ndetached--;
}

/* Frees a detached owner; its leases must be gone or handed on. */
static void detached_free(struct broker *b, struct owner *o)
{
	detached_unlink(b, o);
	if (o->pidfd >= 0) {
		loop_del(&b->loop, o->pidfd);
		close(o->pidfd);
	}
	ckpt_jobs_forget(&b->jobs, o);
	revoke_forget(b, o);
	free(o);
}

/* The holder of a detached owner exited: reclaim, as for a connection. */
static void owner_exited(struct watch *w, uint32_t events)
{
	struct owner *o = w->obj;
	struct broker *b = o->broker;
	(void)events;
	while (o->leases)
		lease_table_release(b->table, o->leases, "exit");
	detached_free(b, o);
}

/* A detached owner for the holder of *rec: alive (pidfd watched) if the
 * process with that pid has that start time, else dead (pidfd -1). */
static struct owner *detached_new(struct broker *b, const struct store_lease *rec)
{
	struct owner *o = calloc(1, sizeof *o);
	uint64_t start = 0;
	if (!o)
		return NULL;
	o->pid = (pid_t)rec->pid;
	o->uid = (uid_t)rec->uid;
	o->pid_start = rec->pid_start;
	o->client_id = rec->client_id;
	o->pidfd = -1;
	o->broker = b;
	strcpy(o->comm, "?");
	/* The pidfd first, the start time after: if they match, the pidfd is
	 * the very process that held the lease (a pid reused since would show
	 * another start time). */
	if (rec->pid > 0 && rec->pid <= INT32_MAX) {
		int fd = (int)syscall(SYS_pidfd_open, (pid_t)rec->pid, 0);
		if (fd >= 0) {
			client_proc_stat(o->pid, o->comm, sizeof o->comm, &start);
			if (start == rec->pid_start && start != 0)
				o->pidfd = fd;
			else
				close(fd);
		}
	}
	if (o->pidfd >= 0) {
		o->pid_watch = (struct watch){ owner_exited, o };
		if (loop_add(&b->loop, o->pidfd, &o->pid_watch, EPOLLIN) < 0) {
			close(o->pidfd);
			o->pidfd = -1;
		}
	}
	o->det_next = b->detached;
	if (b->detached)
		b->detached->det_prev = o;
	b->detached = o;
	b->ndetached++;
	return o;
}

static void drop_record(struct broker *b, const struct store_lease *rec, const char *why)
{
	log_event(&b->log, "reclaim", "lease=%llu resource=%s mode=%s token=%llu pid=%llu reason=%s",
	          (unsigned long long)rec->id, log_quote(&b->log, rec->name),
	          grants_mode_name((int)rec->mode), (unsigned long long)rec->token,
	          (unsigned long long)rec->pid, why);
	store_lease_del(b->store, rec->id);
}

size_t adopt_leases(struct broker *b, struct adopt_records *recs)
{
	struct owner *o = NULL, *next;
	size_t adopted = 0;
	if (recs->n)
		qsort(recs->v, recs->n, sizeof *recs->v, record_cmp);
	for (size_t i = 0; i < recs->n; i++) {
		const struct store_lease *rec = &recs->v[i];
		struct lt_lease *l;
		struct lt_adoption a = {
			.name = rec->name, .mode = (int)rec->mode, .id = rec->id, .token = rec->token,
			.secret = rec->secret, .slot = rec->slot, .granted_ms = rec->granted_ms,
			.granted_wall_ms = rec->granted_wall_ms, .label = rec->label,
		};
		int rc;
		if (!o || o->client_id != rec->client_id || o->pid != (pid_t)rec->pid ||
		    o->pid_start != rec->pid_start)
			o = detached_new(b, rec);
		if (!o) {
			drop_record(b, rec, "broker-restart-no-memory");
			continue;
		}
		a.owner = o;
		rc = region_claim(b->region, rec->slot, rec->id);
		if (rc < 0) {
			drop_record(b, rec, "broker-restart-bad-slot");
			continue;
		}
		rc = lease_table_adopt(b->table, &a, &l);
		if (rc < 0) {
			region_unclaim(b->region, rec->slot);
			drop_record(b, rec, rc == COORD_EBUSY ? "broker-restart-conflict"
			                                      : "broker-restart-refused");
			continue;
		}
		grants_link(o, l);
		if (o->pidfd >= 0) {
			adopted++;
			log_event(&b->log, "adopt",
			          "lease=%llu resource=%s mode=%s token=%llu pid=%d comm=%s label=%s",
			          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
			          grants_mode_name(l->mode), (unsigned long long)l->token, (int)o->pid,
			          log_quote(&b->log, o->comm), log_quote(&b->log, l->label));
		}
	}
	free(recs->v);
	*recs = (struct adopt_records){ 0 };
	region_ready(b->region);
	/* Holders that died while no broker ran: reclaim, as for any death. */
	for (o = b->detached; o; o = next) {
		next = o->det_next;
		if (o->pidfd >= 0 && o->leases)
			continue;
		while (o->leases)
			lease_table_release(b->table, o->leases, "exit-while-no-broker");
		detached_free(b, o);
	}
	return adopted;
}

int adopt_attach(struct broker *b, struct owner *o, uint64_t client_id, uint64_t lease_id,
                 uint64_t secret, struct lt_lease **out)
{
	struct owner *d;
	struct lt_lease *l = NULL;
	for (d = b->detached; d; d = d->det_next)
		if (d->client_id == client_id && d->pid == o->pid && d->pid_start == o->pid_start)
			break;
	if (d && lease_id == 0) {
		while (d->leases) {
			log_event(&b->log, "attach-unclaimed", "lease=%llu pid=%d",
			          (unsigned long long)d->leases->id, (int)d->pid);
			lease_table_release(b->table, d->leases, "release-unclaimed");
		}
		detached_free(b, d);
		return 0;
	}
	if (lease_id == 0)
		return 0;
	if (d)
		for (l = d->leases; l; l = l->own_next)
			if (l->id == lease_id)
				break;
	if (!l || l->secret != secret) {
		log_event(&b->log, "attach-refused", "lease=%llu pid=%d comm=%s reason=%s",
		          (unsigned long long)lease_id, (int)o->pid, log_quote(&b->log, o->comm),
		          !d ? "no-such-connection" : !l ? "no-such-lease" : "wrong-secret");
		return COORD_ENOLEASE;
	}
	grants_unlink(d, l);
	l->owner = o;
	grants_link(o, l);
	grants_record(b, l);
	log_event(&b->log, "attach", "lease=%llu resource=%s mode=%s pid=%d comm=%s",
	          (unsigned long long)l->id, log_quote(&b->log, l->res->name),
	          grants_mode_name(l->mode), (int)o->pid, log_quote(&b->log, o->comm));
	if (!d->leases)
		detached_free(b, d);
	*out = l;
	return 0;
}

void adopt_fini(struct broker *b)
{
	while (b->detached) {
		struct owner *o = b->detached;
		while (o->leases)
			grants_unlink(o, o->leases);
		detached_free(b, o);
	}
}
