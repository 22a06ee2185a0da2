/* Database helpers shared by the db tests (test_db.c, test_checkpoint.c,
 * test_doctor.c): opening SQLite databases and running SQL on them with an
 * assertion, the DuckDB C API through the loader the broker's checkpoints
 * use, and the file helpers they all need.  Nothing here starts a broker
 * or knows about leases; see harness.c for that. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dbutil.h"

/* ---- files ---- */

long long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

void write_file(const char *path, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "cannot create %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, bytes, len), (ssize_t)len, "cannot write %s: %s", path,
	             strerror(errno));
	close(fd);
}

/* ---- SQLite ---- */

/* sqlite3_open_v2() with a busy timeout; NULL with *rc set on failure. */
static sqlite3 *open_with_timeout(const char *path, int *rc)
{
	sqlite3 *db = NULL;
	*rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (*rc != SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 10000);
	return db;
}

sqlite3 *sqlite_try_open(const char *path)
{
	int rc;
	return open_with_timeout(path, &rc);
}

sqlite3 *sqlite_open(const char *path)
{
	int rc;
	sqlite3 *db = open_with_timeout(path, &rc);
	cr_assert(db, "cannot open %s with SQLite: %s", path, sqlite3_errstr(rc));
	return db;
}

void sqlite_exec(sqlite3 *db, const char *statements)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, statements, NULL, NULL, &err);
	cr_assert_eq(rc, SQLITE_OK, "SQLite refused `%s`: %s", statements,
	             err ? err : sqlite3_errstr(rc));
}

long long sqlite_int(sqlite3 *db, const char *query)
{
	sqlite3_stmt *st;
	long long v;
	cr_assert_eq(sqlite3_prepare_v2(db, query, -1, &st, NULL), SQLITE_OK,
	             "SQLite cannot prepare `%s`: %s", query, sqlite3_errmsg(db));
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "`%s` returned no row: %s", query,
	             sqlite3_errmsg(db));
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* ---- DuckDB ---- */

int duck_open(struct duck *d, const char *path, char *why, size_t whysize)
{
	char *err = NULL;
	d->db = d->conn = NULL;
	if (!d->api.lib && ckpt_duckdb_load(&d->api, getenv("COORD_DUCKDB_LIB"), why, whysize) < 0)
		return 1;
	*(void **)&d->value_int64 = dlsym(d->api.lib, "duckdb_value_int64");
	if (!d->value_int64) {
		snprintf(why, whysize, "no duckdb_value_int64");
		return 2;
	}
	if (d->api.open_ext(path, &d->db, NULL, &err)) {
		snprintf(why, whysize, "open %s: %s", path, err ? err : "failed");
		d->api.free(err);
		d->db = NULL;
		return 3;
	}
	if (d->api.connect(d->db, &d->conn)) {
		snprintf(why, whysize, "connect to %s failed", path);
		d->conn = NULL;
		return 4;
	}
	return 0;
}

int duck_exec(struct duck *d, const char *sql, char *why, size_t whysize)
{
	struct ckpt_duckdb_result r;
	int rc;
	memset(&r, 0, sizeof r);
	rc = d->api.query(d->conn, sql, &r);
	if (rc && why)
		snprintf(why, whysize, "`%s`: %s", sql, d->api.result_error(&r));
	d->api.destroy_result(&r);
	return rc;
}

long long duck_int(struct duck *d, const char *query)
{
	struct ckpt_duckdb_result r;
	long long v;
	memset(&r, 0, sizeof r);
	cr_assert_eq(d->api.query(d->conn, query, &r), 0, "DuckDB refused `%s`: %s", query,
	             d->api.result_error(&r));
	v = d->value_int64(&r, 0, 0);
	d->api.destroy_result(&r);
	return v;
}

void duck_close(struct duck *d)
{
	if (d->conn)
		d->api.disconnect(&d->conn);
	if (d->db)
		d->api.close(&d->db);
	d->conn = d->db = NULL;
}

void duck_unload(struct duck *d)
{
	duck_close(d);
	ckpt_duckdb_unload(&d->api);
	memset(d, 0, sizeof *d);
}

void duck_create(const char *path, const char *statements)
{
	struct duck d = { 0 };
	char why[512] = "";
	cr_assert_eq(duck_open(&d, path, why, sizeof why), 0,
	             "libduckdb.so must be installed for these tests (scripts/install-duckdb.sh, or "
	             "COORD_DUCKDB_LIB): %s",
	             why);
	cr_assert_eq(duck_exec(&d, statements, why, sizeof why), 0, "cannot create %s: %s", path,
	             why);
	duck_unload(&d);
}
