/* coord-bench's parts: the measurements (bench_locks.c), the load mode
 * (bench_load.c) and the rows they print (bench_out.c). */
#ifndef COORD_BENCH_H
#define COORD_BENCH_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "coord.h"

/* What every measurement reads: the run's settings and the files it locks. */
struct bench_env {
	int iterations;      /* samples per uncontended row */
	int handoffs;        /* samples per handoff row */
	int reclaims;        /* samples per reclaim row */
	int json;            /* 1: rows as JSON lines on stdout, no table */
	char dir[PATH_MAX];  /* the instance */
	char lockfile[PATH_MAX + 32]; /* the kernel locks' file */
	char resource[PATH_MAX + 32]; /* coord's resource: an existing file */
	char sqlite_db[PATH_MAX + 32]; /* the SQLite peer's WAL database */
	void *rwlock;        /* a process-shared pthread_rwlock_t, in a shared mapping */
};

extern struct bench_env bench;

int64_t bench_now_ns(void);
/* Reports what failed (rc < 0: a COORD_E* code; 0: errno; > 0: what alone,
 * the details having been printed) and exits; a
 * forked child _exit()s, since the private broker is the parent's. */
_Noreturn void bench_die(const char *what, int rc);
void bench_set_main_pid(void);

/* ---- rows (bench_out.c) ---- */

struct stats {
	int n;
	double p50, p99, p999, mean; /* microseconds */
	int valid;                   /* 0: not measured (the row says why) */
};

/* Sorts ns[0..n) and returns its percentiles; divide: each sample covers
 * that many operations (batched rows). */
struct stats stats_of(int64_t *ns, int n, int divide);

/* One row: an operation ("acquire+release"), its mode ("read", "write" or
 * ""), who ("coord", "flock", ...) and how ("handle, cached", "path", ...). */
void out_row(const char *op, const char *mode, const char *who, const char *via, struct stats s);
/* A row that cannot be measured, with the reason. */
void out_none(const char *op, const char *mode, const char *who, const char *via,
              const char *why);
/* A target and whether this run met it. */
void out_target(const char *name, double value, const char *unit, double limit);
void out_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void out_header(void);

/* One load run (bench_load.c): CLIENTS processes on RESOURCES resources. */
struct load_result {
	const char *who, *via;
	int clients, resources, seconds;
	double read_share;
	uint64_t ops, errors;
	double ops_per_s, p50, p99, p999; /* latency in microseconds */
	double broker_cpu_us;   /* broker CPU per operation; < 0: no broker */
	long broker_rss_kib;    /* broker VmRSS at the end, clients connected; < 0: none */
};
void out_load(const struct load_result *r);

/* Log-linear histogram of nanoseconds: 64 sub-buckets per power of two
 * (1.6 % resolution) up to 2^40 ns. */
#define HIST_SUB 64
#define HIST_BUCKETS (41 * HIST_SUB)
struct hist {
	uint64_t count[HIST_BUCKETS];
};
void hist_add(struct hist *h, int64_t ns);
void hist_merge(struct hist *into, const struct hist *from);
uint64_t hist_total(const struct hist *h);
double hist_quantile_us(const struct hist *h, double q);

/* ---- measurements (bench_locks.c) ---- */

enum lock_kind {
	K_COORD_PATH,     /* coord_acquire(): resolves the name every time */
	K_COORD_HANDLE,   /* coord_resource_acquire(): reads are cached */
	K_COORD_NOCACHE,  /* the same on a connection with no_cache */
	K_FLOCK,
	K_FCNTL,          /* OFD locks */
	K_RWLOCK,         /* process-shared pthread rwlock: the shared-memory floor */
	K_SQLITE,         /* BEGIN IMMEDIATE / COMMIT on a WAL database (write only) */
};

const char *lock_who(enum lock_kind k);
/* How a row's lock is taken ("path", "handle, cached", ...) in mode. */
const char *lock_via(enum lock_kind k, int mode);
void bench_setup_peers(void);
void bench_teardown_peers(void);

struct stats bench_unix_rtt(int cross_cpu);
struct stats bench_uncontended(enum lock_kind kind, int mode);
struct stats bench_batched(enum lock_kind kind, int mode, int batch);
struct stats bench_handoff(enum lock_kind kind);
struct stats bench_reclaim(enum lock_kind kind);
void bench_recall(struct stats *to_release, struct stats *to_writer);

/* ---- load (bench_load.c) ---- */

/* --load CLIENTS[,CLIENTS...]:RESOURCES:READ_SHARE:SECONDS.  Returns the
 * exit status. */
int bench_load(const char *spec, int no_cache, int peers);

#endif
