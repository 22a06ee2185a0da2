/* Checkpoints of database files: the code that runs inside the child process
 * the broker forks for each checkpoint (checkpoint_jobs.c does the fork, the
 * pipe, the time limit and the kill), plus kind detection and the DuckDB
 * loader, which the broker and the tests call directly.
 *
 * It never deletes or truncates a WAL by hand.  SQLite and DuckDB decide
 * what a WAL holds; coord only asks them to checkpoint it once no coord
 * writer is active.  It never creates a database file either: a missing
 * file is reported, not opened (DuckDB would create it).  It never prints.
 *
 * Choice of the default SQLite mode (COORD_SQLITE_DEFAULT): FULL.
 *  - TRUNCATE shrinks the -wal file to zero bytes.  A process that has the
 *    file mapped (a backup or replication tool reading frames) and touches
 *    a page past the new end dies with SIGBUS: checked with a mapping of
 *    the -wal, `PRAGMA wal_checkpoint(TRUNCATE)` from another connection,
 *    then a read of the mapping's last byte.  Truncating on every release
 *    also makes the next writer pay to grow the file again.  TRUNCATE is
 *    there on request ("sqlite:truncate"), never by default.
 *  - RESTART and TRUNCATE, after copying every frame, also wait until every
 *    reader has left the WAL.  Readers keep reading during a checkpoint, so
 *    SQLite would sit in its busy handler until the timeout and return
 *    SQLITE_BUSY although every frame was copied (measured: one reader in a
 *    read transaction, 1 s busy timeout: 1004 ms, then BUSY), unless the
 *    broker held readers back for the whole checkpoint (it does, for these
 *    two modes).  It gains little: once every frame is copied back, the
 *    next writer rewinds the WAL to its start by itself whenever no reader
 *    is still using WAL frames.
 *  - PASSIVE never waits: a writer or a reader on an old snapshot outside
 *    coord makes it copy only part of the WAL, and the WAL keeps growing,
 *    which is the starvation coord exists to end.
 *  - FULL waits (CKPT_SQLITE_BUSY_MS) only for a writer and for readers on
 *    older snapshots.  Under coord there are none: the checkpoint starts
 *    when the last writer has released, and readers that start during it
 *    read the newest snapshot, the very one being copied.  It then copies
 *    every frame while readers keep reading, and never shrinks a file: the
 *    WAL stays as large as the largest write between two checkpoints
 *    (measured: five write-and-checkpoint cycles, the -wal size never
 *    moved).  If something outside coord still holds frames, FULL returns
 *    SQLITE_BUSY with frames left, and that is reported as
 *    COORD_ECHECKPOINT rather than passed off as done.
 *  Two things SQLite does in every mode, coord or not: a checkpoint that
 *  copies every frame cuts the database file to its logical size (smaller
 *  only after a VACUUM), and the last connection to close checkpoints once
 *  more and unlinks the -wal; an unlink leaves existing mappings valid. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint_child.h"

_Static_assert(sizeof(struct ckpt_duckdb_result) <= CKPT_DUCKDB_RESULT_SIZE,
               "CKPT_DUCKDB_RESULT_SIZE must hold a duckdb_result");

static const char *const mode_labels[] = { "PASSIVE", "FULL", "RESTART", "TRUNCATE" };
static const int sqlite_modes[] = { SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_FULL,
	                            SQLITE_CHECKPOINT_RESTART, SQLITE_CHECKPOINT_TRUNCATE };

static void say(struct ckpt_result *res, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Sets the status and the message of res. */
static void say(struct ckpt_result *res, int status, const char *fmt, ...)
{
	va_list ap;
	res->status = status;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof res->message, fmt, ap);
	va_end(ap);
}

/* ---- kind detection ---- */

int checkpoint_detect_kind(const char *path)
{
	unsigned char head[16];
	struct stat st;
	ssize_t n = 0;
	int kind = COORD_KIND_PLAIN;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return COORD_KIND_PLAIN;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto out;
	n = pread(fd, head, sizeof head, 0);
	if (n > 0)
		kind = coord_proto_kind(head, (size_t)n);
out:
	close(fd);
	return kind;
}

/* ---- SQLite ---- */

/* Turns the result of the last sqlite3_wal_checkpoint_v2() into res: rc,
 * the frames in the WAL (nlog) and those copied back (nckpt); frames is the
 * count before, which TRUNCATE no longer reports once done. */
static void sqlite_outcome(struct ckpt_result *res, int mode, int rc, int frames, int nlog,
                           int nckpt)
{
	const char *m = mode_labels[mode];
	int resets = mode == COORD_SQLITE_RESTART || mode == COORD_SQLITE_TRUNCATE;

	if (nlog < 0)
		say(res, COORD_ECHECKPOINT, "sqlite %s: busy: another checkpoint is running", m);
	else if (nckpt < nlog)
		say(res, COORD_ECHECKPOINT,
		    "sqlite %s: %d of %d frames checkpointed; a process outside coord holds the "
		    "rest (a write, or a read of an older snapshot)",
		    m, nckpt, nlog);
	else if (!resets)
		say(res, 0, "sqlite %s: %d frames, all checkpointed", m, nlog);
	else if (rc == SQLITE_OK)
		say(res, 0, "sqlite %s: %d frames, all checkpointed; WAL %s", m, frames,
		    mode == COORD_SQLITE_TRUNCATE ? "truncated" : "restarted");
	else
		say(res, COORD_ECHECKPOINT,
		    "sqlite %s: %d frames, all checkpointed, but a reader outside coord kept the "
		    "WAL from being %s",
		    m, frames, mode == COORD_SQLITE_TRUNCATE ? "truncated" : "restarted");
}

static void run_sqlite(const struct ckpt_request *req, int mode, struct ckpt_result *res)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const char *step = "open", *text;
	char journal[16];
	int rc, frames, nlog = -1, nckpt = -1;

	rc = sqlite3_open_v2(req->path, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(db, CKPT_SQLITE_BUSY_MS);
	/* Reading the schema takes a read lock: SQLite rolls back a hot
	 * journal left by a crashed writer, or opens the WAL and rebuilds its
	 * index.  Only after that does journal_mode tell the truth. */
	step = "read";
	rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	step = "journal_mode";
	rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		goto fail;
	text = (const char *)sqlite3_column_text(st, 0);
	snprintf(journal, sizeof journal, "%s", text ? text : "?");
	sqlite3_finalize(st);
	st = NULL;
	if (strcmp(journal, "wal")) {
		say(res, 0, "not in WAL mode; nothing to do (journal_mode=%s)", journal);
		goto out;
	}
	/* A PASSIVE pass first: it copies what it can without waiting and
	 * counts the frames, which TRUNCATE no longer reports once done. */
	step = "checkpoint";
	rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		goto fail;
	frames = nlog;
	if (mode != COORD_SQLITE_PASSIVE) {
		rc = sqlite3_wal_checkpoint_v2(db, NULL, sqlite_modes[mode], &nlog, &nckpt);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			goto fail;
		if (nlog > frames)
			frames = nlog;
	}
	sqlite_outcome(res, mode, rc, frames, nlog, nckpt);
	goto out;
fail:
	say(res, COORD_ECHECKPOINT, "sqlite %s: %s", step,
	    db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
out:
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* ---- DuckDB ---- */

int ckpt_duckdb_load(struct ckpt_duckdb *api, const char *lib, char *why, size_t whysize)
{
	static const char *const names[] = {
		"duckdb_library_version", "duckdb_open_ext",     "duckdb_close",
		"duckdb_connect",         "duckdb_disconnect",   "duckdb_query",
		"duckdb_destroy_result",  "duckdb_result_error", "duckdb_free"
	};
	void **slots[] = {
		(void **)&api->library_version, (void **)&api->open_ext,     (void **)&api->close,
		(void **)&api->connect,         (void **)&api->disconnect,   (void **)&api->query,
		(void **)&api->destroy_result,  (void **)&api->result_error, (void **)&api->free
	};
	const char *name = lib ? lib : "libduckdb.so", *e;

	memset(api, 0, sizeof *api);
	api->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!api->lib) {
		e = dlerror();
		snprintf(why, whysize,
		         "%s not loadable: %s (install it with scripts/install-duckdb.sh, "
		         "or point --duckdb-lib or COORD_DUCKDB_LIB at it)",
		         name, e ? e : "unknown error");
		return COORD_ENOTSUP;
	}
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		/* POSIX guarantees that dlsym()'s object pointer converts to a
		 * function pointer. */
		*slots[i] = dlsym(api->lib, names[i]);
		if (!*slots[i]) {
			snprintf(why, whysize, "%s lacks %s: not libduckdb, or too old a DuckDB",
			         name, names[i]);
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
	snprintf(why, whysize, "%s %s", lib ? lib : "libduckdb.so", api.library_version());
	ckpt_duckdb_unload(&api);
	return 1;
}

/* 1 if path is a regular file we may read, with it in st. */
static int readable_file(const char *path, struct stat *st)
{
	return stat(path, st) == 0 && S_ISREG(st->st_mode) && access(path, R_OK) == 0;
}

int checkpoint_duckdb_locate(const char *lib, struct stat *st, char *why, size_t whysize)
{
	static const char *const usual[] = { "/usr/local/lib", "/usr/lib/x86_64-linux-gnu",
		                             "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
		                             "/lib/x86_64-linux-gnu", "/lib64", "/lib" };
	const char *name = lib ? lib : "libduckdb.so", *env = getenv("LD_LIBRARY_PATH");
	char path[4096];
	if (strchr(name, '/')) {
		errno = 0;
		if (readable_file(name, st)) {
			snprintf(why, whysize, "%s", name);
			return 1;
		}
		snprintf(why, whysize,
		         "%s not loadable: %s (install it with scripts/install-duckdb.sh, "
		         "or point --duckdb-lib or COORD_DUCKDB_LIB at it)",
		         name, errno ? strerror(errno) : "not a regular file");
		return 0;
	}
	for (const char *p = env; p && *p;) {
		size_t n = strcspn(p, ":");
		if (n && snprintf(path, sizeof path, "%.*s/%s", (int)n, p, name) < (int)sizeof path &&
		    readable_file(path, st)) {
			snprintf(why, whysize, "%s", path);
			return 1;
		}
		p += n + (p[n] == ':');
	}
	for (size_t i = 0; i < sizeof usual / sizeof usual[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", usual[i], name);
		if (readable_file(path, st)) {
			snprintf(why, whysize, "%s", path);
			return 1;
		}
	}
	snprintf(why, whysize, "%s not in $LD_LIBRARY_PATH or the usual directories; "
	         "the checkpoint child asks the dynamic loader", name);
	return -1;
}

static void run_duckdb(const struct ckpt_request *req, struct ckpt_result *res)
{
	struct ckpt_duckdb api;
	struct ckpt_duckdb_result result;
	void *db = NULL, *conn = NULL;
	char *err = NULL;
	const char *version, *e;
	int queried = 0;

	if (ckpt_duckdb_load(&api, req->duckdb_lib, res->message, sizeof res->message) < 0) {
		res->status = COORD_ENOTSUP;
		return;
	}
	version = api.library_version();
	/* Opening replays, in memory, whatever WAL a crashed writer left. */
	if (api.open_ext(req->path, &db, NULL, &err) != 0) {
		say(res, COORD_ECHECKPOINT, "duckdb %s open: %s", version, err ? err : "failed");
		goto out;
	}
	if (api.connect(db, &conn) != 0) {
		say(res, COORD_ECHECKPOINT, "duckdb %s: connect failed", version);
		goto out;
	}
	memset(&result, 0, sizeof result);
	queried = 1;
	if (api.query(conn, "CHECKPOINT", &result) != 0) {
		e = api.result_error(&result);
		say(res, COORD_ECHECKPOINT, "duckdb %s CHECKPOINT: %s", version, e ? e : "failed");
		goto out;
	}
	if (res->wal_before > 0)
		say(res, 0, "duckdb %s: WAL of %lld bytes replayed and checkpointed", version,
		    (long long)res->wal_before);
	else
		say(res, 0, "duckdb %s: no WAL; checkpointed", version);
out:
	if (queried)
		api.destroy_result(&result);
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
	pid_t pid, got;

	pid = fork();
	if (pid < 0) {
		say(res, COORD_ECHECKPOINT, "exec: fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		/* The command gets stdin, stdout and stderr; none of our other
		 * descriptors (the broker's result pipe among them). */
		close_range(3, ~0U, 0);
		execl("/bin/sh", "sh", "-c", req->command, "coord-checkpoint", req->path,
		      (char *)NULL);
		_exit(127);
	}
	do
		got = waitpid(pid, &status, 0);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		say(res, COORD_ECHECKPOINT, "exec: waitpid: %s", strerror(errno));
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		say(res, 0, "exec `%.200s`: exit status 0", req->command);
	else if (WIFEXITED(status))
		say(res, COORD_ECHECKPOINT, "exec `%.200s`: exit status %d", req->command,
		    WEXITSTATUS(status));
	else
		say(res, COORD_ECHECKPOINT, "exec `%.200s`: killed by signal %d", req->command,
		    WTERMSIG(status));
}

/* ---- one checkpoint ---- */

/* Size of the file at path, or -1 if there is none. */
static int64_t size_of(const char *path)
{
	struct stat st;
	return path[0] && stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

void checkpoint_run(const struct ckpt_request *req, struct ckpt_result *res)
{
	char wal[PATH_MAX + 8] = "";
	struct stat st;
	int kind = req->kind, mode = COORD_SQLITE_DEFAULT, n;

	memset(res, 0, sizeof *res);
	res->wal_before = res->wal_after = -1;
	if (!req->path || !req->path[0]) {
		say(res, COORD_EINVAL, "no path");
		return;
	}
	switch (req->policy) {
	case COORD_POLICY_SQLITE:
		kind = COORD_KIND_SQLITE;
		mode = req->sqlite_mode;
		break;
	case COORD_POLICY_DUCKDB:
		kind = COORD_KIND_DUCKDB;
		break;
	case COORD_POLICY_EXEC:
		if (!req->command || !req->command[0]) {
			say(res, COORD_EINVAL, "exec policy without a command");
			return;
		}
		break;
	case COORD_POLICY_AUTO:
	case COORD_POLICY_NONE:
		break;
	default:
		say(res, COORD_EINVAL, "unknown policy %d", req->policy);
		return;
	}
	if (kind < COORD_KIND_PLAIN || kind > COORD_KIND_DUCKDB || mode < COORD_SQLITE_PASSIVE ||
	    mode > COORD_SQLITE_TRUNCATE) {
		say(res, COORD_EINVAL, "unknown kind %d or sqlite mode %d", kind, mode);
		return;
	}
	if (kind != COORD_KIND_PLAIN) {
		n = snprintf(wal, sizeof wal, "%s%s", req->path,
		             kind == COORD_KIND_DUCKDB ? ".wal" : "-wal");
		if (n < 0 || (size_t)n >= sizeof wal) {
			say(res, COORD_EINVAL, "path too long");
			return;
		}
	}
	res->wal_before = size_of(wal);

	if (req->policy == COORD_POLICY_NONE) {
		say(res, 0, "policy none; nothing to do");
		goto out;
	}
	if (stat(req->path, &st) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			say(res, COORD_ENOENT, "no such file");
		else if (errno == EACCES)
			say(res, COORD_EPERM, "stat: %s", strerror(errno));
		else
			say(res, COORD_ECHECKPOINT, "stat: %s", strerror(errno));
		goto out;
	}
	if (req->policy == COORD_POLICY_EXEC) {
		run_exec(req, res);
		goto out;
	}
	if (kind == COORD_KIND_PLAIN) {
		say(res, COORD_ENOTSUP, "plain file: no checkpoint");
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		say(res, COORD_ECHECKPOINT, "%s checkpoint of something that is not a regular file",
		    coord_proto_kind_name(kind));
		goto out;
	}
	if (faccessat(AT_FDCWD, req->path, R_OK | W_OK, AT_EACCESS) < 0) {
		say(res,
		    errno == EACCES || errno == EROFS || errno == EPERM ? COORD_EPERM
		                                                        : COORD_ECHECKPOINT,
		    "cannot open for reading and writing: %s", strerror(errno));
		goto out;
	}
	if (kind == COORD_KIND_SQLITE)
		run_sqlite(req, mode, res);
	else
		run_duckdb(req, res);
out:
	res->wal_after = size_of(wal);
}
