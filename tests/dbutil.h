/* Database helpers for the tests: the one set of SQLite helpers, the one
 * set of DuckDB helpers (through the broker's own loader, ckpt_duckdb_load
 * in broker/checkpoint.h) and small file helpers.
 *
 * Functions that assert must only run in the test process.  A forked
 * child cannot report an assertion: it uses sqlite_try_open(), the SQLite
 * API itself, and the DuckDB calls that return a status. */
#ifndef COORD_TEST_DBUTIL_H
#define COORD_TEST_DBUTIL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint_child.h"

/* ---- files ---- */

/* Size in bytes, or -1 if the file does not exist. */
long long file_size(const char *path);

/* Creates or truncates path, mode 0644 as SQLite makes a database under
 * the usual umask, and writes len bytes to it; asserts it could. */
void write_file(const char *path, const void *bytes, size_t len);

/* ---- SQLite ---- */

/* Opens (creating) a database with a busy timeout of 10 s.  NULL on
 * failure: for children, which must not assert. */
sqlite3 *sqlite_try_open(const char *path);

/* The same, asserting it opened. */
sqlite3 *sqlite_open(const char *path);

/* Runs statements; asserts they succeed. */
void sqlite_exec(sqlite3 *db, const char *statements);

/* Runs a query and returns the integer in its first column of its first
 * row; asserts there is one. */
long long sqlite_int(sqlite3 *db, const char *query);

/* ---- DuckDB ---- */

/* libduckdb.so loaded, plus the one function of the C API only the tests
 * need, and an open database with its connection.  Zero it before the
 * first duck_open(). */
struct duck {
	struct ckpt_duckdb api;
	int64_t (*value_int64)(void *result, uint64_t col, uint64_t row);
	void *db, *conn;
};

/* Opens path and connects, first loading libduckdb.so ($COORD_DUCKDB_LIB,
 * else the normal search) if d has not loaded it yet.  Returns 0, or the
 * step that failed, for children that can only report an exit code: 1 the
 * library does not load, 2 it lacks duckdb_value_int64, 3 open, 4
 * connect.  why gets the reason. */
int duck_open(struct duck *d, const char *path, char *why, size_t whysize);

/* Runs SQL; returns DuckDB's state, 0 for success.  On failure why (may
 * be NULL) gets DuckDB's error. */
int duck_exec(struct duck *d, const char *sql, char *why, size_t whysize);

/* Runs a query and returns the integer at its first row and column;
 * asserts the query succeeds. */
long long duck_int(struct duck *d, const char *query);

/* Disconnects and closes the database; the library stays loaded for the
 * next duck_open(). */
void duck_close(struct duck *d);

/* duck_close(), then unloads the library. */
void duck_unload(struct duck *d);

/* Creates the DuckDB database path by running statements in it; asserts
 * libduckdb.so is installed and the statements succeed. */
void duck_create(const char *path, const char *statements);

#endif
