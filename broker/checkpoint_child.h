/* checkpoint_child.h - what runs inside a checkpoint child
 *
 * The broker (checkpoint_jobs.c) forks a child for every checkpoint, puts it
 * in its own process group, calls checkpoint_run() there and reads the
 * struct ckpt_result back through a pipe; it enforces the time limit by
 * killing the group.  Everything here is blocking and meant for that child,
 * except kind detection and the DuckDB probe, which the broker calls
 * directly.
 *
 * Dependencies: libsqlite3 and libdl.  DuckDB is not a build dependency:
 * libduckdb.so is loaded with dlopen() when it is needed.
 *
 * Contents
 *   1. Requests and results: checkpoint_run()
 *   2. Kind detection
 *   3. DuckDB loader (shared with the tests) */
#ifndef COORD_CHECKPOINT_CHILD_H
#define COORD_CHECKPOINT_CHILD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "coord_proto.h"

/* ------------------------------------------------------------------------ */
/* 1. Requests and results                                                  */
/* ------------------------------------------------------------------------ */

/* How long SQLite waits for a lock held by a process outside coord (a
 * writer, or a reader on an old snapshot) before giving up. */
#define CKPT_SQLITE_BUSY_MS 5000

struct ckpt_request {
	const char *path;        /* canonical absolute path of the database file */
	int kind;                /* COORD_KIND_* of the file (detected, or forced by policy) */
	int policy;              /* COORD_POLICY_*; AUTO: by kind */
	int sqlite_mode;         /* COORD_SQLITE_*, read only with COORD_POLICY_SQLITE;
	                            AUTO always uses COORD_SQLITE_DEFAULT (FULL; why
	                            not the others: see checkpoint_child.c) */
	const char *command;     /* COORD_POLICY_EXEC: run as
	                            `/bin/sh -c COMMAND coord-checkpoint PATH` ($1 is PATH) */
	const char *duckdb_lib;  /* libduckdb.so to dlopen; NULL: "libduckdb.so" by the
	                            normal search */
};

struct ckpt_result {
	int status;              /* 0 or a negative COORD_E* code, see checkpoint_run() */
	int64_t wal_before;      /* size in bytes of the WAL (PATH-wal for SQLite,
	                            PATH.wal for DuckDB) before; -1: none */
	int64_t wal_after;       /* the same, after; -1: none (DuckDB removes its WAL
	                            after a checkpoint; SQLite when the last connection
	                            closes) */
	char message[256];       /* what was done, or why it failed; always terminated */
};

/* Runs one checkpoint of req->path and fills *res.  Blocking; meant to run
 * in a child process that may be killed at any moment.  It never deletes or
 * truncates a WAL by hand: only SQLite or DuckDB do, as part of their own
 * checkpoint or close.  The caller must not ignore SIGCHLD (exec policy).
 *
 *   COORD_POLICY_AUTO    SQLite files: COORD_SQLITE_DEFAULT; DuckDB files:
 *                        open (replays a WAL left by a crashed writer) and
 *                        CHECKPOINT; plain files: COORD_ENOTSUP.
 *   COORD_POLICY_SQLITE  SQLite checkpoint in req->sqlite_mode.  A database
 *                        not in WAL mode is fine: status 0 ("not in WAL mode;
 *                        nothing to do"), after SQLite has rolled back a hot
 *                        journal if there was one.
 *   COORD_POLICY_DUCKDB  as AUTO for a DuckDB file.
 *   COORD_POLICY_EXEC    runs req->command; a non-zero exit or a signal fails.
 *   COORD_POLICY_NONE    does nothing; status 0.
 *
 * res->status is 0 or one of:
 *   COORD_EINVAL       bad request (NULL path, unknown policy, kind or mode,
 *                      exec without a command)
 *   COORD_ENOENT       no such file (nothing is created)
 *   COORD_EPERM        the file cannot be opened for reading and writing
 *   COORD_ENOTSUP      plain file under AUTO, or libduckdb.so not loadable
 *   COORD_ECHECKPOINT  the database engine or the command failed, or left
 *                      frames behind because a process outside coord holds
 *                      them; res->message says which */
void checkpoint_run(const struct ckpt_request *req, struct ckpt_result *res);

/* ------------------------------------------------------------------------ */
/* 2. Kind detection                                                        */
/* ------------------------------------------------------------------------ */

/* COORD_KIND_SQLITE if the file starts with "SQLite format 3\0",
 * COORD_KIND_DUCKDB if bytes 8..11 are "DUCK", else COORD_KIND_PLAIN.  A
 * missing, unreadable, short or non-regular file is plain.  Never blocks
 * (a FIFO is opened non-blocking and refused). */
int checkpoint_detect_kind(const char *path);

/* ------------------------------------------------------------------------ */
/* 3. DuckDB loader                                                         */
/* ------------------------------------------------------------------------ */

/* The DuckDB C API result, laid out as duckdb.h declares duckdb_result
 * (stable since DuckDB 0.x).  Zero it before a query, always pass it to
 * destroy_result() afterwards, and read it only through the API. */
struct ckpt_duckdb_result {
	uint64_t deprecated_column_count;
	uint64_t deprecated_row_count;
	uint64_t deprecated_rows_changed;
	void *deprecated_columns;
	char *deprecated_error_message;
	void *internal_data;
};
/* Older callers pass a buffer of this many bytes instead of the struct. */
#define CKPT_DUCKDB_RESULT_SIZE 128

/* The few DuckDB C API functions coord uses.  Handles (duckdb_database,
 * duckdb_connection) are opaque pointers; state returns are 0 for success
 * (DuckDBSuccess), 1 for error.  Result pointers point to a
 * struct ckpt_duckdb_result. */
struct ckpt_duckdb {
	void *lib;                                        /* dlopen() handle */
	const char *(*library_version)(void);             /* "v1.5.6" */
	int (*open_ext)(const char *path, void **db, void *config, char **error);
	void (*close)(void **db);
	int (*connect)(void *db, void **conn);
	void (*disconnect)(void **conn);
	int (*query)(void *conn, const char *sql, void *result);
	void (*destroy_result)(void *result);
	const char *(*result_error)(void *result);
	void (*free)(void *ptr);                          /* for open_ext's *error */
};

/* Loads lib (NULL: "libduckdb.so" by the normal dlopen search) and every
 * function above.  Returns 0, or COORD_ENOTSUP with the reason in why
 * ("LIB not loadable: <dlerror>" or "LIB lacks duckdb_x: ...") and *api
 * zeroed. */
int ckpt_duckdb_load(struct ckpt_duckdb *api, const char *lib, char *why, size_t whysize);

/* Closes the library (harmless on a zeroed or unloaded api). */
void ckpt_duckdb_unload(struct ckpt_duckdb *api);

/* 1 if lib can be loaded with every function coord uses, with its version
 * in why (e.g. "libduckdb.so v1.5.6"); else 0 with the reason in why.
 * It maps the library: for the checkpoint child and the tests, never the
 * broker (see checkpoint_duckdb_locate()). */
int checkpoint_duckdb_probe(const char *lib, char *why, size_t whysize);

/* Where lib (NULL: "libduckdb.so") is, without loading it, for the broker,
 * which must not map DuckDB: a name with a '/' is that file; a bare name
 * is looked for in $LD_LIBRARY_PATH, then /usr/local/lib, /usr/lib64,
 * /usr/lib, /lib64, /lib and their multiarch directories.  Returns 1 with
 * the file in st and its path in why (a regular file the broker may
 * read), 0 if the file is missing or unreadable (the reason in why), or
 * -1 for a bare name found nowhere (only the dynamic loader, in the
 * checkpoint child, can tell: why says so). */
int checkpoint_duckdb_locate(const char *lib, struct stat *st, char *why, size_t whysize);

#endif
