/* The broker's state, all of it: struct broker and its parts.  Each part
 * has its own file (see docs/design.md, "Parts"); this header only puts
 * them together and names the owner of leases. */
#ifndef COORD_STATE_H
#define COORD_STATE_H

#include <stdint.h>
#include <sys/types.h>

#include "checkpoint_jobs.h"
#include "client.h"
#include "lease_table.h"
#include "log.h"
#include "loop.h"
#include "region.h"
#include "store.h"

struct broker_config {
	const char *dir;
	uint64_t max_leases;       /* also the shared region's slot count */
	uint64_t max_waiters;
	uint64_t max_clients;
	const char *duckdb_lib;    /* NULL: "libduckdb.so" */
	uint32_t checkpoint_timeout_ms;
	gid_t group;               /* shared instance: who may connect (client.c);
	                              (gid_t)-1: a private instance */
	const char *group_name;
	gid_t admin_group;         /* may revoke anyone's leases; or -1 */
};

/* Who holds leases and waits in queues: a process, as its connection
 * identified it.  It is the lease table's `owner`.  An owner is made for
 * each connection and goes with it, except the owners adoption makes
 * (adopt.c): one per connection of an earlier broker whose process still
 * lives, holding that connection's leases, detached (no client) until the
 * process reconnects and attaches them, or dies. */
struct owner {
	pid_t pid;
	uid_t uid;
	uint64_t pid_start;        /* with pid, names one process per boot */
	char comm[COORD_COMM_MAX + 1];
	uint64_t client_id;        /* the connection's id (detached: the
	                              earlier broker's), recorded with leases */
	int pidfd;                 /* the process; the client's, or (detached)
	                              the owner's own */
	struct client *client;     /* the connection answers go to; NULL while
	                              detached */
	struct lt_lease *leases;   /* linked by own_next/own_prev */
	struct lt_waiter *waiter;  /* at most one queued request */
	struct watch pid_watch;    /* detached only: the process's exit */
	struct broker *broker;     /* detached only: for pid_watch */
	struct owner *det_next, *det_prev; /* broker.detached */
};

struct grant_answer;

struct broker {
	struct broker_config cfg;
	struct log log;
	struct loop loop;
	struct clients clients;
	struct ckpt_jobs jobs;
	struct store *store;
	struct region *region;
	struct lease_table *table;
	struct revocation *revocations; /* revoke.c */
	struct deferred_try *tries, *tries_tail; /* requests.c */
	struct lt_lease *cache_drops; /* idle cached grants recalled (cache.c) */
	int deciding_tries;
	struct owner *detached;    /* adopted owners not attached yet (adopt.c) */
	size_t ndetached;
	uint64_t first_lease_id;   /* from the store */
	struct grant_answer *answers; /* GRANTs queued this iteration, for
	                                 grants_commit() (grants.c) */
	size_t nanswers, answers_cap;
	int undoing;               /* grants_commit() undoes refused grants */
	size_t kept_resources;     /* idle resources kept in memory */
	int64_t started_ms;
	int signal_fd;
	struct watch signal_watch;
};

#endif
