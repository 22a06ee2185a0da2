/* Checkpoints of database files: the code that runs inside the child
 * process the broker forks for each checkpoint (checkpointer.c), plus the
 * small pieces coordctl shares (names, policy parser, kind detection).
 *
 * It never deletes or truncates a WAL by hand.  SQLite and DuckDB decide
 * what a WAL holds; coord only asks them to checkpoint it when no coord
 * writer can be active.
 *
 * Choice of SQLite mode.  The default is FULL:
 *  - TRUNCATE shrinks the -wal file to zero bytes.  A process that has the
 *    file mapped and touches a page past the new end dies with SIGBUS, and
 *    truncating on every release also makes the next writer pay to grow
 *    the file again.  It is available on request, never the default.
 *  - PASSIVE never waits, so a reader that is not using coord can leave
 *    frames behind and the WAL keeps growing: the starvation we exist to
 *    end.
 *  - RESTART and TRUNCATE also wait until every reader has left the WAL;
 *    coord would have to keep readers out for that (it does, for those
 *    modes), and it gains nothing: once every frame is copied back (FULL),
 *    new readers read the database file alone, and the next writer -
 *    which under coord starts only when all readers are gone - rewinds
 *    the WAL to its start instead of appending.
 *  So FULL copies every frame back while readers keep reading, and the WAL
 *  file stays as large as the largest write transaction, no larger. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"

static const char *const policy_names[] = { "auto", "none", "sqlite", "duckdb", "exec" };
static const char *const kind_names[] = { "plain", "sqlite", "duckdb" };
static const char *const mode_names[] = { "passive", "full", "restart", "truncate" };

const char *checkpoint_policy_name(int policy)
{
	return policy >= 0 && policy <= COORD_POLICY_EXEC ? policy_names[policy] : "?";
}

const char *checkpoint_kind_name(int kind)
{
	return kind >= 0 && kind <= COORD_KIND_DUCKDB ? kind_names[kind] : "?";
}

const char *checkpoint_sqlite_mode_name(int mode)
{
	return mode >= 0 && mode <= COORD_SQLITE_TRUNCATE ? mode_names[mode] : "?";
}

int checkpoint_policy_parse(const char *text, int *policy, int *sqlite_mode, const char **command)
{
	*sqlite_mode = CKPT_SQLITE_DEFAULT_MODE;
	*command = NULL;
	if (!strncmp(text, "exec:", 5)) {
		if (!text[5])
			return COORD_EINVAL;
		*policy = COORD_POLICY_EXEC;
		*command = text + 5;
		return 0;
	}
	if (!strncmp(text, "sqlite:", 7)) {
		for (int m = 0; m <= COORD_SQLITE_TRUNCATE; m++) {
			if (!strcmp(text + 7, mode_names[m])) {
				*policy = COORD_POLICY_SQLITE;
				*sqlite_mode = m;
				return 0;
			}
		}
		return COORD_EINVAL;
	}
	for (int p = 0; p <= COORD_POLICY_DUCKDB; p++) {
		if (!strcmp(text, policy_names[p])) {
			*policy = p;
			return 0;
		}
	}
	return COORD_EINVAL;
}

int checkpoint_detect_kind(const char *path)
{
	unsigned char head[16];
	struct stat st;
	int kind = COORD_KIND_PLAIN;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return COORD_KIND_PLAIN;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && pread(fd, head, sizeof head, 0) == 16) {
		if (!memcmp(head, "SQLite format 3", 16))
			kind = COORD_KIND_SQLITE;
		else if (!memcmp(head + 8, "DUCK", 4))
			kind = COORD_KIND_DUCKDB;
	}
	close(fd);
	return kind;
}

static int64_t size_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void wal_path(char *buf, size_t size, const char *db, int kind)
{
	snprintf(buf, size, "%s%s", db, kind == COORD_KIND_DUCKDB ? ".wal" : "-wal");
}

/* ---- SQLite ---- */

static const int sqlite_modes[] = { SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_FULL,
	                            SQLITE_CHECKPOINT_RESTART, SQLITE_CHECKPOINT_TRUNCATE };

static void run_sqlite(const struct ckpt_request *req, struct ckpt_result *res)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc, nlog = -1, nckpt = -1, mode = req->sqlite_mode;
	const char *journal = NULL;

	if (mode < 0 || mode > COORD_SQLITE_TRUNCATE)
		mode = CKPT_SQLITE_DEFAULT_MODE;
	rc = sqlite3_open_v2(req->path, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(db, 5000);
	/* Reading the journal mode also recovers a hot rollback journal or
	 * rebuilds the WAL index left by a crashed writer. */
	rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		goto fail;
	journal = (const char *)sqlite3_column_text(st, 0);
	if (!journal || strcmp(journal, "wal")) {
		snprintf(res->message, sizeof res->message, "sqlite: journal_mode=%s, not WAL; nothing to do",
		         journal ? journal : "?");
		goto out;
	}
	rc = sqlite3_wal_checkpoint_v2(db, NULL, sqlite_modes[mode], &nlog, &nckpt);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		goto fail;
	if (rc == SQLITE_BUSY || nckpt < nlog) {
		/* Someone outside coord kept frames in use: partial, reported. */
		res->status = COORD_ECHECKPOINT;
		snprintf(res->message, sizeof res->message,
		         "sqlite %s: busy, %d of %d frames checkpointed (a process not using coord "
		         "holds the database)",
		         mode_names[mode], nckpt, nlog);
		goto out;
	}
	snprintf(res->message, sizeof res->message, "sqlite %s: %d frames, all checkpointed",
	         mode_names[mode], nlog);
	goto out;
fail:
	res->status = COORD_ECHECKPOINT;
	snprintf(res->message, sizeof res->message, "sqlite: %s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* ---- DuckDB ---- */

int ckpt_duckdb_load(struct ckpt_duckdb *api, const char *lib, char *why, size_t whysize)
{
	static const char *const names[] = { "duckdb_open_ext", "duckdb_close", "duckdb_connect",
		                             "duckdb_disconnect", "duckdb_query",
		                             "duckdb_destroy_result", "duckdb_result_error",
		                             "duckdb_free" };
	void **slots[] = { (void **)&api->open_ext, (void **)&api->close, (void **)&api->connect,
		           (void **)&api->disconnect, (void **)&api->query,
		           (void **)&api->destroy_result, (void **)&api->result_error,
		           (void **)&api->free };
	const char *e;
	memset(api, 0, sizeof *api);
	api->lib = dlopen(lib ? lib : "libduckdb.so", RTLD_NOW | RTLD_LOCAL);
	if (!api->lib) {
		e = dlerror();
		snprintf(why, whysize, "cannot load %s: %s (install it with scripts/install-duckdb.sh, "
		                       "or point --duckdb-lib / COORD_DUCKDB_LIB at it)",
		         lib ? lib : "libduckdb.so", e ? e : "unknown error");
		return COORD_ENOTSUP;
	}
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		/* POSIX guarantees object and function pointers convert. */
		*slots[i] = dlsym(api->lib, names[i]);
		if (!*slots[i]) {
			snprintf(why, whysize, "%s lacks %s: too old a DuckDB", lib ? lib : "libduckdb.so",
			         names[i]);
			dlclose(api->lib);
			memset(api, 0, sizeof *api);
			return COORD_ENOTSUP;
		}
	}
	return 0;
}

void ckpt_duckdb_unload(struct ckpt_duckdb *api)
{
	if (api->lib)
		dlclose(api->lib);
	memset(api, 0, sizeof *api);
}

int checkpoint_duckdb_probe(const char *lib, char *why, size_t whysize)
{
	struct ckpt_duckdb api;
	if (ckpt_duckdb_load(&api, lib, why, whysize) < 0)
		return 0;
	ckpt_duckdb_unload(&api);
	return 1;
}

static void run_duckdb(const struct ckpt_request *req, struct ckpt_result *res)
{
	struct ckpt_duckdb api;
	void *db = NULL, *conn = NULL;
	char *err = NULL;
	union {
		char bytes[CKPT_DUCKDB_RESULT_SIZE];
		void *align;
	} result;

	if (ckpt_duckdb_load(&api, req->duckdb_lib, res->message, sizeof res->message) < 0) {
		res->status = COORD_ENOTSUP;
		return;
	}
	/* Opening replays whatever WAL a crashed writer left behind. */
	if (api.open_ext(req->path, &db, NULL, &err) != 0) {
		res->status = COORD_ECHECKPOINT;
		snprintf(res->message, sizeof res->message, "duckdb open: %s", err ? err : "failed");
		goto out;
	}
	if (api.connect(db, &conn) != 0) {
		res->status = COORD_ECHECKPOINT;
		snprintf(res->message, sizeof res->message, "duckdb connect failed");
		goto out;
	}
	memset(&result, 0, sizeof result);
	if (api.query(conn, "CHECKPOINT", &result) != 0) {
		const char *e = api.result_error(&result);
		res->status = COORD_ECHECKPOINT;
		snprintf(res->message, sizeof res->message, "duckdb CHECKPOINT: %s", e ? e : "failed");
	} else {
		snprintf(res->message, sizeof res->message, "duckdb: WAL replayed and checkpointed");
	}
	api.destroy_result(&result);
out:
	if (err)
		api.free(err);
	if (conn)
		api.disconnect(&conn);
	if (db)
		api.close(&db);
	ckpt_duckdb_unload(&api);
}

/* ---- exec ---- */

static void run_exec(const struct ckpt_request *req, struct ckpt_result *res)
{
	int status;
	pid_t pid = fork();
	if (pid < 0) {
		res->status = COORD_ECHECKPOINT;
		snprintf(res->message, sizeof res->message, "exec: fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", req->command, "coord-checkpoint", req->path, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			res->status = COORD_ECHECKPOINT;
			snprintf(res->message, sizeof res->message, "exec: waitpid: %s", strerror(errno));
			return;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		snprintf(res->message, sizeof res->message, "exec: %.200s: ok", req->command);
	} else {
		res->status = COORD_ECHECKPOINT;
		if (WIFEXITED(status))
			snprintf(res->message, sizeof res->message, "exec: %.200s: exit status %d",
			         req->command, WEXITSTATUS(status));
		else
			snprintf(res->message, sizeof res->message, "exec: %.200s: killed by signal %d",
			         req->command, WTERMSIG(status));
	}
}

void checkpoint_run(const struct ckpt_request *req, struct ckpt_result *res)
{
	char wal[4200];
	struct stat st;
	int kind = req->kind;

	memset(res, 0, sizeof *res);
	if (req->policy == COORD_POLICY_SQLITE)
		kind = COORD_KIND_SQLITE;
	else if (req->policy == COORD_POLICY_DUCKDB)
		kind = COORD_KIND_DUCKDB;
	wal_path(wal, sizeof wal, req->path, kind);
	res->wal_before = size_of(wal);
	if (stat(req->path, &st) < 0) {
		res->status = errno == ENOENT ? COORD_ENOENT : COORD_ECHECKPOINT;
		res->wal_after = res->wal_before;
		snprintf(res->message, sizeof res->message, "%s", strerror(errno));
		return;
	}
	if (req->policy == COORD_POLICY_EXEC)
		run_exec(req, res);
	else if (req->policy == COORD_POLICY_NONE)
		snprintf(res->message, sizeof res->message, "policy none");
	else if (kind == COORD_KIND_SQLITE)
		run_sqlite(req, res);
	else if (kind == COORD_KIND_DUCKDB)
		run_duckdb(req, res);
	else {
		res->status = COORD_ENOTSUP;
		snprintf(res->message, sizeof res->message, "plain file: no checkpoint");
	}
	res->wal_after = size_of(wal);
}
