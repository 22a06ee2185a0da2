/* Checkpoint jobs: when a database file is checkpointed, and running each
 * checkpoint in a child process off the event loop (see checkpoint_jobs.c).
 * Results go to the resource's durable record, the log, and, for a
 * checkpoint someone asked for, to the `done` callback. */
#ifndef COORD_CHECKPOINT_JOBS_H
#define COORD_CHECKPOINT_JOBS_H

#include <stdint.h>

#include "lease_table.h"
#include "log.h"
#include "loop.h"
#include "store.h"

struct ckpt_job;

struct ckpt_jobs {
	/* set by the broker before ckpt_jobs_init() */
	struct loop *loop;
	struct log *log;
	struct store *store;
	struct lease_table *table;
	const char *duckdb_lib;      /* NULL: "libduckdb.so" */
	uint32_t default_timeout_ms;
	/* A checkpoint asked for by `requester` (request `seq`) finished with
	 * `status`; res->ext holds its result. */
	void (*done)(void *ud, struct lt_resource *res, void *requester, uint32_t seq, int status);
	void *ud;
	/* own state */
	int duckdb_ok;               /* as last seen (ckpt_jobs_duckdb_check()) */
	char duckdb_why[256];        /* why DuckDB checkpoints are off, or where the
	                                library is */
	int duckdb_load_failed;      /* a child could not load it: off until the
	                                file changes (duckdb_file) */
	struct { long long dev, ino, size, mtime_ns; } duckdb_file;
	struct ckpt_job *running;
	int shutting_down;
};

/* Looks for libduckdb.so (ckpt_jobs_duckdb_check()) and logs if DuckDB
 * checkpoints are off.  The broker never loads DuckDB: only the
 * checkpoint child does. */
void ckpt_jobs_init(struct ckpt_jobs *j);
/* Whether DuckDB checkpoints can run, as far as the broker can tell
 * without mapping the library: the file is there and readable, and no
 * checkpoint child failed to load that same file (dev, inode, size,
 * mtime).  Sets duckdb_ok and duckdb_why; done at start, before each
 * DuckDB checkpoint and for `coordctl show`. */
int ckpt_jobs_duckdb_check(struct ckpt_jobs *j);

/* Detects the kind of res's file now (plain for keys) into its ext and
 * returns it. */
int ckpt_jobs_detect_kind(struct lt_resource *res);

/* A write lease of res was released or reclaimed: starts its checkpoint if
 * one applies.  Returns the LT_BLOCK_* bits the job needs (0 if none
 * started), for the lease table's `released` callback to return. */
int ckpt_jobs_on_write_release(struct ckpt_jobs *j, struct lt_resource *res);

/* The turn of a checkpoint someone asked for: nobody conflicting holds
 * res.  Starts the job and returns its LT_BLOCK_* bits, or returns 0 with
 * *status set (COORD_ENOTSUP: no checkpoint applies; COORD_ESYS: could not
 * start) when nothing runs. */
int ckpt_jobs_start_requested(struct ckpt_jobs *j, struct lt_resource *res, void *requester,
                              uint32_t seq, int *status);

/* Earliest time limit of a running job, or -1. */
int64_t ckpt_jobs_next_deadline(const struct ckpt_jobs *j);
/* Kills the jobs whose time limit has passed (they finish through their
 * pidfd as usual). */
void ckpt_jobs_expire(struct ckpt_jobs *j, int64_t now);
/* The requester is gone: its jobs run on but answer nobody. */
void ckpt_jobs_forget(struct ckpt_jobs *j, void *requester);
/* Kills and reaps every job (broker shutdown). */
void ckpt_jobs_shutdown(struct ckpt_jobs *j);

#endif
