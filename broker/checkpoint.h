/* What runs inside a checkpoint child: kind detection, SQLite and DuckDB
 * checkpoints, `exec:` commands, and the policy names and parser shared
 * with coordctl.  See checkpoint.c for the choice of SQLite mode. */
#ifndef COORD_CHECKPOINT_H
#define COORD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define COORD_WANT_PROTOCOL
#include "coord.h"

/* The SQLite mode used when the policy does not name one: FULL.  See the
 * comment at the top of checkpoint.c. */
#define CKPT_SQLITE_DEFAULT_MODE COORD_SQLITE_FULL

struct ckpt_request {
	const char *path;        /* canonical absolute path of the database file */
	int kind;                /* COORD_KIND_* to checkpoint as */
	int policy;              /* COORD_POLICY_*; AUTO: by kind */
	int sqlite_mode;         /* COORD_SQLITE_* */
	const char *command;     /* COORD_POLICY_EXEC: run as `sh -c COMMAND coord-checkpoint PATH` */
	const char *duckdb_lib;  /* libduckdb.so to load; NULL: "libduckdb.so" */
};

struct ckpt_result {
	int status;              /* 0 or COORD_ECHECKPOINT, COORD_ENOTSUP, COORD_ENOENT */
	int64_t wal_before;      /* WAL bytes before and after, -1 if there is none */
	int64_t wal_after;
	char message[256];       /* what was done, or why it failed */
};

/* SQLite ("SQLite format 3\0" at 0), DuckDB ("DUCK" at 8), else plain.
 * A missing, unreadable or non-regular file is plain.  Never blocks (a
 * FIFO is opened non-blocking and refused). */
int checkpoint_detect_kind(const char *path);

/* 1 if libduckdb can be loaded with every function used here; else 0
 * with the reason in why. */
int checkpoint_duckdb_probe(const char *lib, char *why, size_t whysize);

/* Runs the checkpoint; blocking.  Never deletes or truncates a WAL by
 * hand: SQLite and DuckDB do their own bookkeeping. */
void checkpoint_run(const struct ckpt_request *req, struct ckpt_result *res);

/* The few DuckDB C API functions coord uses, loaded with dlopen() so
 * DuckDB is not a build dependency.  Handles are opaque pointers;
 * results are opaque buffers of CKPT_DUCKDB_RESULT_SIZE bytes. */
#define CKPT_DUCKDB_RESULT_SIZE 128
struct ckpt_duckdb {
	void *lib;
	int (*open_ext)(const char *path, void **db, void *config, char **error);
	void (*close)(void **db);
	int (*connect)(void *db, void **conn);
	void (*disconnect)(void **conn);
	int (*query)(void *conn, const char *sql, void *result);
	void (*destroy_result)(void *result);
	const char *(*result_error)(void *result);
	void (*free)(void *ptr);
};
/* Returns 0, or COORD_ENOTSUP with the dlerror() text in why. */
int ckpt_duckdb_load(struct ckpt_duckdb *api, const char *lib, char *why, size_t whysize);
void ckpt_duckdb_unload(struct ckpt_duckdb *api);

const char *checkpoint_policy_name(int policy);
const char *checkpoint_kind_name(int kind);
const char *checkpoint_sqlite_mode_name(int mode);
/* "auto", "none", "sqlite", "sqlite:passive|full|restart|truncate",
 * "duckdb", "exec:COMMAND" (command points into text).  0 or COORD_EINVAL. */
int checkpoint_policy_parse(const char *text, int *policy, int *sqlite_mode, const char **command);

#endif
