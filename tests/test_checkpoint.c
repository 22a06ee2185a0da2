/* Tests of what runs inside a checkpoint child (broker/checkpoint_child.c), on real
 * files: SQLite WAL checkpoints in every mode, a WAL mapped by another
 * process, readers outside coord that hold frames, a hot rollback journal
 * left by a writer killed with SIGKILL, DuckDB WAL replay after a writer
 * killed with SIGKILL, a DuckDB file locked by another process, exec
 * commands, missing and unreadable files, kind detection and the policy
 * parser.
 *
 * libduckdb.so must be installed (scripts/install-duckdb.sh) or named by
 * COORD_DUCKDB_LIB: without it the DuckDB tests fail, they do not skip. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint_child.h"
#include "dbutil.h"
#include "harness.h"

static char dir[256];

static void setup(void)
{
	harness_tmpdir(dir, sizeof dir, "coord-ckpt");
}

static void teardown(void)
{
	harness_rmtree(dir);
}

TestSuite(checkpoint, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ---- */

static const char *path_in(const char *name)
{
	return harness_file(dir, name);
}

static const char *duckdb_lib(void)
{
	return getenv("COORD_DUCKDB_LIB");
}

/* Reads a whole small file into a malloc'ed buffer. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	cr_assert(f, "open %s: %s", path, strerror(errno));
	char *buf = malloc(1 << 20);
	cr_assert(buf, "malloc");
	*len = fread(buf, 1, 1 << 20, f);
	fclose(f);
	return buf;
}

static void copy_file(const char *from, const char *to)
{
	size_t len;
	char *buf = read_file(from, &len);
	cr_assert_lt(len, (size_t)1 << 20, "%s is too big for this test's copy", from);
	write_file(to, buf, len);
	free(buf);
}

/* The integers a..b as table s(value), for SQLite without generate_series. */
#define SERIES_FMT                                                                                 \
	"WITH RECURSIVE s(value) AS (SELECT %d UNION ALL SELECT value + 1 FROM s "                 \
	"WHERE value < %d) "
#define SERIES(a, b)                                                                               \
	"WITH RECURSIVE s(value) AS (SELECT " #a " UNION ALL SELECT value + 1 "                    \
	"FROM s WHERE value < " #b ") "

/* Creates a WAL-mode database holding rows rows written in 10 transactions,
 * with automatic checkpoints off so every frame stays in the WAL.  Returns
 * the writer's connection, still open: while any connection is open SQLite
 * keeps the WAL when another one closes. */
static sqlite3 *sqlite_wal_db(const char *path, int rows)
{
	sqlite3 *w = sqlite_open(path);
	char text[256];
	sqlite_exec(w, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(i, pad)");
	for (int k = 0; k < 10; k++) {
		snprintf(text, sizeof text,
		         SERIES_FMT "INSERT INTO t SELECT value, randomblob(100) FROM s",
		         k * rows / 10 + 1, (k + 1) * rows / 10);
		sqlite_exec(w, text);
	}
	return w;
}

/* A SQLite checkpoint of db in the given mode. */
static struct ckpt_request sqlite_request(const char *db, int mode)
{
	struct ckpt_request q = {
		.path = db, .kind = COORD_KIND_SQLITE, .policy = COORD_POLICY_SQLITE, .sqlite_mode = mode
	};
	return q;
}

/* Opens a copy of the main database file alone, without its WAL: whatever
 * it holds was checkpointed. */
static void assert_main_file_holds(const char *db, long long rows)
{
	const char *copy = path_in("main-only.db");
	copy_file(db, copy);
	sqlite3 *c = sqlite_open(copy);
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(c, "SELECT count(*) FROM t", -1, &st, NULL);
	cr_assert_eq(rc, SQLITE_OK,
	             "the main file alone has no table t (%s): frames were not copied back",
	             sqlite3_errmsg(c));
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "count rows of the main file");
	cr_assert_eq(sqlite3_column_int64(st, 0), rows,
	             "the main file alone holds %lld rows, expected %lld",
	             sqlite3_column_int64(st, 0), rows);
	sqlite3_finalize(st);
	sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &st, NULL);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "integrity_check");
	cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok",
	                 "integrity_check of the main file alone");
	sqlite3_finalize(st);
	sqlite3_close(c);
}

/* Every DuckDB file of these tests: an empty table t, checkpointed. */
#define DUCK_TABLE_T "CREATE TABLE t(i BIGINT, s VARCHAR); CHECKPOINT"

/* Runs in a child: commits 10 transactions of 100 rows, starts an 11th of
 * 500 rows and dies by SIGKILL in the middle of it, closing nothing.
 * Exits with a step number if something fails first. */
static void duck_killed_writer(const char *path)
{
	struct duck d = { 0 };
	char why[512];
	int rc = duck_open(&d, path, why, sizeof why);
	if (rc)
		_exit(10 + rc);
	/* no automatic checkpoint, whatever the WAL grows to */
	if (duck_exec(&d, "SET checkpoint_threshold = '1TB'", NULL, 0))
		_exit(19);
	for (int k = 0; k < 10; k++)
		if (duck_exec(&d,
		              "INSERT INTO t SELECT range, md5(random()::VARCHAR) FROM range(100)",
		              NULL, 0))
			_exit(20);
	if (duck_exec(&d, "BEGIN; INSERT INTO t SELECT range, 'uncommitted' FROM range(500)", NULL,
	              0))
		_exit(21);
	kill(getpid(), SIGKILL);
	_exit(22);
}

/* Runs req as user nobody when we are root (who may open anything), else in
 * this process with the file's permissions already taken away. */
static void run_without_access(const char *file, const struct ckpt_request *req,
                               struct ckpt_result *res)
{
	int fds[2];
	if (geteuid() != 0) {
		cr_assert_eq(chmod(file, 0), 0, "chmod %s: %s", file, strerror(errno));
		checkpoint_run(req, res);
		return;
	}
	cr_assert_eq(chmod(dir, 0711), 0, "chmod %s: %s", dir, strerror(errno));
	cr_assert_eq(chmod(file, 0600), 0, "chmod %s: %s", file, strerror(errno));
	cr_assert_eq(pipe(fds), 0, "pipe");
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct ckpt_result r;
		if (setgid(65534) || setuid(65534))
			_exit(2);
		checkpoint_run(req, &r);
		_exit(write(fds[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 3);
	}
	close(fds[1]);
	ssize_t n = read(fds[0], res, sizeof *res);
	int st;
	waitpid(pid, &st, 0);
	close(fds[0]);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0 && n == (ssize_t)sizeof *res,
	          "the child running as nobody failed (wait status %d, %zd bytes)", st, n);
}

/* ---- SQLite ---- */

struct mode_case {
	int mode;
	char says[32];
};

ParameterizedTestParameters(checkpoint, sqlite_wal_is_copied_back)
{
	static struct mode_case cases[] = {
		{ COORD_SQLITE_PASSIVE, "all checkpointed" },
		{ COORD_SQLITE_FULL, "all checkpointed" },
		{ COORD_SQLITE_RESTART, "WAL restarted" },
		{ COORD_SQLITE_TRUNCATE, "WAL truncated" },
	};
	return cr_make_param_array(struct mode_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct mode_case *c, checkpoint, sqlite_wal_is_copied_back)
{
	const char *db = path_in("a.db"), *wal = path_in("a.db-wal");
	const char *m = coord_sqlite_mode_name(c->mode);
	struct ckpt_result r;
	struct ckpt_request q = sqlite_request(db, c->mode);
	sqlite3 *w = sqlite_wal_db(db, 2000);
	long long before = file_size(wal);
	cr_assert_gt(before, 4096, "the test needs a WAL with frames in it (%lld bytes)", before);

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "%s checkpoint failed: %s", m, r.message);
	cr_assert(strstr(r.message, c->says), "%s: message '%s' lacks '%s'", m, r.message, c->says);
	cr_assert_eq(r.wal_before, before, "%s: wal_before %lld, the file has %lld", m,
	             (long long)r.wal_before, before);
	if (c->mode == COORD_SQLITE_TRUNCATE)
		cr_assert_eq(r.wal_after, 0, "TRUNCATE must leave an empty WAL: %lld",
		             (long long)r.wal_after);
	else
		cr_assert_eq(r.wal_after, before,
		             "%s must not change the size of the WAL (%lld -> %lld): a "
		             "shrinking file kills processes that map it",
		             m, before, (long long)r.wal_after);
	assert_main_file_holds(db, 2000);
	cr_assert_eq(sqlite_int(w, "SELECT count(*) FROM t"), 2000, "the writer sees all its rows");
	sqlite3_close(w);
}

/* A process that maps the WAL (a backup tool, say) must survive the
 * default checkpoint: a TRUNCATE would make this read die of SIGBUS. */
Test(checkpoint, sqlite_default_mode_keeps_a_mapped_wal_readable)
{
	const char *db = path_in("mapped.db"), *wal = path_in("mapped.db-wal");
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_SQLITE }; /* all else default */
	sqlite3 *w = sqlite_wal_db(db, 2000);
	long long len = file_size(wal);
	int fd = open(wal, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", wal, strerror(errno));
	const volatile unsigned char *map = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq((void *)map, MAP_FAILED, "mmap %s: %s", wal, strerror(errno));

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "default checkpoint (%s) failed: %s",
	             coord_sqlite_mode_name(COORD_SQLITE_DEFAULT), r.message);
	unsigned sum = 0;
	for (long long off = 0; off < len; off += 4096)
		sum += map[off];
	sum += map[len - 1];
	cr_assert_eq(file_size(wal), len, "the default mode changed the WAL's size (sum %u)", sum);
	munmap((void *)map, (size_t)len);
	close(fd);
	sqlite3_close(w);
}

ParameterizedTestParameters(checkpoint, sqlite_reader_on_old_snapshot_is_reported)
{
	static struct mode_case cases[] = {
		{ COORD_SQLITE_PASSIVE, "frames checkpointed" },
		{ COORD_SQLITE_FULL, "frames checkpointed" }, /* after CKPT_SQLITE_BUSY_MS */
	};
	return cr_make_param_array(struct mode_case, cases, sizeof cases / sizeof cases[0]);
}

/* A reader outside coord still in a read transaction on an older snapshot
 * pins frames: the checkpoint must say so, not claim success. */
ParameterizedTest(struct mode_case *c, checkpoint, sqlite_reader_on_old_snapshot_is_reported)
{
	const char *db = path_in("old.db");
	const char *m = coord_sqlite_mode_name(c->mode);
	struct ckpt_result r;
	struct ckpt_request q = sqlite_request(db, c->mode);
	sqlite3 *w = sqlite_wal_db(db, 1000), *reader = sqlite_open(db);
	sqlite_exec(reader, "BEGIN");
	cr_assert_eq(sqlite_int(reader, "SELECT count(*) FROM t"), 1000, "reader's snapshot");
	sqlite_exec(w, SERIES(1001, 2000) "INSERT INTO t SELECT value, randomblob(100) FROM s");

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ECHECKPOINT,
	             "%s with frames pinned by a reader: status %d (%s)", m, r.status, r.message);
	cr_assert(strstr(r.message, c->says) && strstr(r.message, "outside coord"),
	          "%s: the message must say frames were left and why: %s", m, r.message);

	sqlite_exec(reader, "COMMIT");
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "%s once the reader is done: %s", m, r.message);
	assert_main_file_holds(db, 2000);
	sqlite3_close(reader);
	sqlite3_close(w);
}

Test(checkpoint, sqlite_not_in_wal_mode_is_fine)
{
	const char *db = path_in("rollback.db");
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_SQLITE };
	sqlite3 *w = sqlite_open(db);
	sqlite_exec(w, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
	sqlite3_close(w);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "a rollback-journal database is not an error: %s", r.message);
	cr_assert(strstr(r.message, "not in WAL mode; nothing to do"),
	          "say why nothing was done: %s", r.message);
	cr_assert_eq(r.wal_before, -1, "there is no WAL before: %lld", (long long)r.wal_before);
	cr_assert_eq(r.wal_after, -1, "nor after: %lld", (long long)r.wal_after);
}

/* A rollback-mode writer killed with its changes half in the database file
 * leaves a hot journal; the checkpoint child's open must roll it back. */
Test(checkpoint, sqlite_hot_journal_is_rolled_back)
{
	const char *db = path_in("hot.db"), *journal = path_in("hot.db-journal");
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_SQLITE };
	sqlite3 *w = sqlite_open(db);
	sqlite_exec(w, "CREATE TABLE t(i, pad); "
	       SERIES(1, 2000) "INSERT INTO t SELECT value, randomblob(200) FROM s");
	long long sum = sqlite_int(w, "SELECT sum(i) FROM t");
	sqlite3_close(w);

	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		sqlite3 *k;
		/* a tiny cache makes SQLite spill changed pages into the file */
		if (sqlite3_open(db, &k) || sqlite3_exec(k,
		                                         "PRAGMA cache_size=5; BEGIN; UPDATE t SET "
		                                         "i = i + 1000000, pad = randomblob(200)",
		                                         NULL, NULL, NULL))
			_exit(2);
		kill(getpid(), SIGKILL);
		_exit(3);
	}
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	          "the writer must die by SIGKILL mid-transaction (wait status %d)", st);
	cr_assert_gt(file_size(journal), 0, "the killed writer must leave a hot journal");

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "checkpoint of a database with a hot journal: %s", r.message);
	cr_assert(strstr(r.message, "not in WAL mode"), "message: %s", r.message);
	cr_assert_leq(file_size(journal), 0,
	              "the hot journal is still there (%lld bytes): nobody rolled it back",
	              file_size(journal));
	w = sqlite_open(db);
	cr_assert_eq(sqlite_int(w, "SELECT sum(i) FROM t"), sum, "the rollback must restore the rows");
	sqlite3_close(w);
}

/* ---- DuckDB ---- */

Test(checkpoint, duckdb_library_is_installed)
{
	char why[512] = "";
	cr_assert_eq(checkpoint_duckdb_probe(duckdb_lib(), why, sizeof why), 1,
	             "libduckdb.so must be installed for the DuckDB checkpoints "
	             "(scripts/install-duckdb.sh, or COORD_DUCKDB_LIB): %s",
	             why);
	cr_assert(strstr(why, "v"), "the probe reports the version on success: '%s'", why);
}

Test(checkpoint, duckdb_wal_of_a_killed_writer_is_replayed)
{
	const char *db = path_in("d.duckdb"), *wal = path_in("d.duckdb.wal");
	struct ckpt_result r;
	struct ckpt_request q = { .path = db,
		                  .kind = COORD_KIND_DUCKDB,
		                  .duckdb_lib = duckdb_lib() };
	struct duck d = { 0 };
	char why[512] = "";
	int st;

	duck_create(db, DUCK_TABLE_T);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0)
		duck_killed_writer(db);
	waitpid(pid, &st, 0);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	          "the writer must die by SIGKILL (wait status %d: exit %d is the failed step)", st,
	          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	long long before = file_size(wal);
	cr_assert_gt(before, 0, "the killed writer must leave a WAL behind");
	cr_assert_eq(checkpoint_detect_kind(db), COORD_KIND_DUCKDB, "kind detection");

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "checkpoint failed: %s", r.message);
	cr_assert(strstr(r.message, "replayed and checkpointed"), "message: %s", r.message);
	cr_assert_eq(r.wal_before, before, "wal_before %lld, the file had %lld",
	             (long long)r.wal_before, before);
	cr_assert_leq(r.wal_after, 0,
	              "after a checkpoint the WAL must be gone or empty: %lld bytes",
	              (long long)r.wal_after);
	cr_assert_leq(file_size(wal), 0, "WAL left on disk: %lld bytes", file_size(wal));

	/* With no WAL left, what is read now comes from the main file. */
	cr_assert_eq(duck_open(&d, db, why, sizeof why), 0, "reopen: %s", why);
	cr_assert_eq(duck_int(&d, "SELECT count(*) FROM t"), 1000,
	             "the 10 committed transactions of 100 rows must all be there");
	cr_assert_eq(duck_int(&d, "SELECT count(*) FROM t WHERE s = 'uncommitted'"), 0,
	             "the transaction killed before COMMIT must not be");
	duck_unload(&d);
}

/* DuckDB admits one read-write process per file: a holder outside coord
 * makes the checkpoint fail with DuckDB's own words, and nothing else. */
Test(checkpoint, duckdb_file_held_by_another_process_is_reported)
{
	const char *db = path_in("held.duckdb");
	struct ckpt_result r;
	struct ckpt_request q = { .path = db,
		                  .kind = COORD_KIND_DUCKDB,
		                  .duckdb_lib = duckdb_lib() };
	int ready[2], release[2];
	char byte;

	duck_create(db, DUCK_TABLE_T);
	cr_assert(pipe(ready) == 0 && pipe(release) == 0, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct duck d = { 0 };
		char why[512];
		close(ready[0]);
		close(release[1]);
		if (duck_open(&d, db, why, sizeof why))
			_exit(2);
		if (write(ready[1], "x", 1) != 1 || read(release[0], &byte, 1) < 0)
			_exit(3);
		duck_unload(&d);
		_exit(0);
	}
	close(ready[1]);
	close(release[0]);
	cr_assert_eq(read(ready[0], &byte, 1), 1, "the holder could not open the database");

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ECHECKPOINT, "status %d (%s)", r.status, r.message);
	cr_assert(strstr(r.message, "duckdb") && strstr(r.message, "lock"),
	          "the message must carry DuckDB's lock error: %s", r.message);

	close(release[1]);
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "holder wait status %d", st);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "once the holder is gone: %s", r.message);
	close(ready[0]);
}

Test(checkpoint, duckdb_missing_library_is_reported)
{
	const char *db = path_in("nolib.duckdb");
	char why[512] = "";
	struct ckpt_result r;
	struct ckpt_request q = { .path = db,
		                  .kind = COORD_KIND_DUCKDB,
		                  .duckdb_lib = "/nonexistent/libduckdb.so" };
	cr_assert_eq(checkpoint_duckdb_probe(q.duckdb_lib, why, sizeof why), 0,
	             "a missing library must not probe as present");
	cr_assert(strstr(why, "not loadable"), "the reason must say what failed: %s", why);
	write_file(db, "0123456789", 10);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ENOTSUP, "status %d (%s)", r.status, r.message);
	cr_assert(strstr(r.message, "/nonexistent/libduckdb.so not loadable"), "message: %s",
	          r.message);
}

/* ---- files that are not what the policy says, missing or unreadable ---- */

struct foreign_case {
	int policy;
	char content[40];
	char says[40];
};

ParameterizedTestParameters(checkpoint, forced_policy_on_a_foreign_file_changes_nothing)
{
	static struct foreign_case cases[] = {
		{ COORD_POLICY_SQLITE, "not a database, just text\n", "sqlite" },
		{ COORD_POLICY_DUCKDB, "not a database, just text\n", "duckdb" },
		{ COORD_POLICY_SQLITE, "", "sqlite" }, /* a real DuckDB file, made below */
	};
	return cr_make_param_array(struct foreign_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct foreign_case *c, checkpoint,
                  forced_policy_on_a_foreign_file_changes_nothing)
{
	const char *f = path_in("foreign");
	struct ckpt_result r;
	struct ckpt_request q = { .path = f,
		                  .policy = c->policy,
		                  .duckdb_lib = duckdb_lib(),
		                  .sqlite_mode = COORD_SQLITE_DEFAULT };
	size_t len0, len1;
	if (c->content[0])
		write_file(f, c->content, strlen(c->content));
	else
		duck_create(f, DUCK_TABLE_T);
	q.kind = checkpoint_detect_kind(f);
	char *before = read_file(f, &len0);

	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ECHECKPOINT, "%s forced on a %s file: status %d (%s)",
	             coord_policy_name(c->policy), coord_kind_name(q.kind), r.status,
	             r.message);
	cr_assert(strstr(r.message, c->says), "the engine's error must be reported: %s", r.message);
	char *after = read_file(f, &len1);
	cr_assert(len0 == len1 && !memcmp(before, after, len0),
	          "a failed %s checkpoint modified the file (%zu -> %zu bytes)",
	          coord_policy_name(c->policy), len0, len1);
	free(before);
	free(after);
}

ParameterizedTestParameters(checkpoint, missing_file_is_reported_not_created)
{
	static int policies[] = { COORD_POLICY_AUTO, COORD_POLICY_SQLITE, COORD_POLICY_DUCKDB,
		                  COORD_POLICY_EXEC };
	return cr_make_param_array(int, policies, sizeof policies / sizeof policies[0]);
}

ParameterizedTest(int *policy, checkpoint, missing_file_is_reported_not_created)
{
	const char *f = path_in("missing.db");
	struct ckpt_result r;
	struct ckpt_request q = { .path = f,
		                  .kind = COORD_KIND_SQLITE,
		                  .policy = *policy,
		                  .command = "true",
		                  .duckdb_lib = duckdb_lib() };
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ENOENT, "%s on a missing file: status %d (%s)",
	             coord_policy_name(*policy), r.status, r.message);
	cr_assert_eq(file_size(f), -1, "%s created the missing file",
	             coord_policy_name(*policy));
	cr_assert_eq(checkpoint_detect_kind(f), COORD_KIND_PLAIN,
	             "a missing file detects as plain");
}

ParameterizedTestParameters(checkpoint, unreadable_file_is_reported)
{
	static int kinds[] = { COORD_KIND_SQLITE, COORD_KIND_DUCKDB };
	return cr_make_param_array(int, kinds, sizeof kinds / sizeof kinds[0]);
}

ParameterizedTest(int *kind, checkpoint, unreadable_file_is_reported)
{
	const char *f = path_in("locked.db");
	struct ckpt_result r;
	struct ckpt_request q = { .path = f, .kind = *kind, .duckdb_lib = duckdb_lib() };
	if (*kind == COORD_KIND_SQLITE) {
		sqlite3 *w = sqlite_wal_db(f, 100);
		sqlite3_close(w);
	} else {
		duck_create(f, DUCK_TABLE_T);
	}
	run_without_access(f, &q, &r);
	cr_assert_eq(r.status, COORD_EPERM, "%s file without access: status %d (%s)",
	             coord_kind_name(*kind), r.status, r.message);
	cr_assert(strstr(r.message, "Permission denied"), "message: %s", r.message);
}

Test(checkpoint, plain_file_and_policy_none)
{
	const char *f = path_in("notes.txt");
	struct ckpt_result r;
	struct ckpt_request q = { .path = f, .kind = COORD_KIND_PLAIN };
	write_file(f, "hello\n", 6);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ENOTSUP, "plain file under AUTO: %d (%s)", r.status,
	             r.message);
	cr_assert_str_eq(r.message, "plain file: no checkpoint", "message");
	cr_assert(r.wal_before == -1 && r.wal_after == -1, "a plain file has no WAL");
	q.policy = COORD_POLICY_NONE;
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "policy none does nothing, successfully: %d (%s)", r.status,
	             r.message);
}

struct bad_case {
	int null_path, policy, kind, mode;
	char command[8];
};

ParameterizedTestParameters(checkpoint, bad_requests_are_refused)
{
	static struct bad_case cases[] = {
		{ 1, COORD_POLICY_AUTO, COORD_KIND_SQLITE, 0, "" },
		{ 0, 99, COORD_KIND_SQLITE, 0, "" },
		{ 0, COORD_POLICY_AUTO, 7, 0, "" },
		{ 0, COORD_POLICY_SQLITE, COORD_KIND_SQLITE, 9, "" },
		{ 0, COORD_POLICY_EXEC, COORD_KIND_PLAIN, 0, "" },
	};
	return cr_make_param_array(struct bad_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_case *c, checkpoint, bad_requests_are_refused)
{
	const char *f = path_in("x.db");
	struct ckpt_result r;
	struct ckpt_request q = { .path = c->null_path ? NULL : f,
		                  .kind = c->kind,
		                  .policy = c->policy,
		                  .sqlite_mode = c->mode,
		                  .command = c->command };
	write_file(f, "x", 1);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_EINVAL,
	             "policy %d kind %d mode %d null_path %d: status %d (%s)", c->policy, c->kind,
	             c->mode, c->null_path, r.status, r.message);
	cr_assert(r.message[0], "a refused request must say why");
}

/* ---- exec ---- */

struct exec_case {
	char command[80];
	int status;
	char says[40];
};

ParameterizedTestParameters(checkpoint, exec_commands)
{
	static struct exec_case cases[] = {
		{ "test \"$0\" = coord-checkpoint && test \"$1\" = \"$CKPT_TEST_PATH\"", 0,
		  "exit status 0" },
		{ "true", 0, "exit status 0" },
		{ "exit 3", COORD_ECHECKPOINT, "exit status 3" },
		{ "/nonexistent/checkpointer", COORD_ECHECKPOINT, "exit status 127" },
		{ "kill -9 $$", COORD_ECHECKPOINT, "killed by signal 9" },
	};
	return cr_make_param_array(struct exec_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct exec_case *c, checkpoint, exec_commands)
{
	const char *f = path_in("file with spaces.bin");
	struct ckpt_result r;
	struct ckpt_request q = { .path = f, .policy = COORD_POLICY_EXEC, .command = c->command };
	write_file(f, "x", 1);
	setenv("CKPT_TEST_PATH", f, 1);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, c->status, "`%s`: status %d, expected %d (%s)", c->command, r.status,
	             c->status, r.message);
	cr_assert(strstr(r.message, c->says), "`%s`: message '%s' lacks '%s'", c->command,
	          r.message, c->says);
}

Test(checkpoint, exec_command_inherits_no_descriptors)
{
	const char *f = path_in("plain.bin");
	char command[64];
	struct ckpt_result r;
	struct ckpt_request q = { .path = f, .policy = COORD_POLICY_EXEC, .command = command };
	int fd = open("/dev/null", O_RDONLY); /* no O_CLOEXEC: a leak on purpose */
	cr_assert_gt(fd, 2, "open /dev/null");
	snprintf(command, sizeof command, "test ! -e /proc/self/fd/%d", fd);
	write_file(f, "x", 1);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "the command saw descriptor %d of its parent: %s", fd, r.message);
	close(fd);
}

/* ---- kind detection ---- */

struct kind_case {
	char name[24];
	unsigned char bytes[32];
	size_t len;
	int kind;
};

ParameterizedTestParameters(checkpoint, detect_kind_from_bytes)
{
	static struct kind_case cases[] = {
		{ "sqlite header", "SQLite format 3\0\x10\0\x02\x02", 20, COORD_KIND_SQLITE },
		{ "duckdb header", "\0\0\0\0\0\0\0\0DUCK\x40\0\0\0", 16, COORD_KIND_DUCKDB },
		{ "duckdb, 12 bytes", "\0\0\0\0\0\0\0\0DUCK", 12, COORD_KIND_DUCKDB },
		{ "text", "hello, world\n", 13, COORD_KIND_PLAIN },
		{ "empty", "", 0, COORD_KIND_PLAIN },
		{ "sqlite, cut short", "SQLite format 3", 15, COORD_KIND_PLAIN },
		{ "sqlite, no NUL", "SQLite format 3x", 16, COORD_KIND_PLAIN },
		{ "DUCK at offset 0", "DUCK\0\0\0\0\0\0\0\0\0\0\0\0", 16, COORD_KIND_PLAIN },
	};
	return cr_make_param_array(struct kind_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct kind_case *c, checkpoint, detect_kind_from_bytes)
{
	const char *f = path_in("kind.bin");
	write_file(f, c->bytes, c->len);
	int kind = checkpoint_detect_kind(f);
	cr_assert_eq(kind, c->kind, "%s: detected %s, expected %s", c->name,
	             coord_kind_name(kind), coord_kind_name(c->kind));
	kind = coord_proto_kind(c->bytes, c->len);
	cr_assert_eq(kind, c->kind, "%s: coord_proto_kind(), which the doctor uses, says %s, expected %s",
	             c->name, coord_kind_name(kind), coord_kind_name(c->kind));
}

Test(checkpoint, detect_kind_of_real_and_odd_files)
{
	sqlite3 *w = sqlite_open(path_in("real.db"));
	sqlite_exec(w, "CREATE TABLE t(x)");
	sqlite3_close(w);
	duck_create(path_in("real.duckdb"), DUCK_TABLE_T);
	cr_assert_eq(checkpoint_detect_kind(path_in("real.db")), COORD_KIND_SQLITE,
	             "a SQLite file");
	cr_assert_eq(checkpoint_detect_kind(path_in("real.duckdb")), COORD_KIND_DUCKDB,
	             "a DuckDB file");
	cr_assert_eq(checkpoint_detect_kind(path_in("nothing")), COORD_KIND_PLAIN,
	             "a missing file");
	cr_assert_eq(checkpoint_detect_kind(dir), COORD_KIND_PLAIN, "a directory");
	cr_assert_eq(mkfifo(path_in("fifo"), 0600), 0, "mkfifo: %s", strerror(errno));
	cr_assert_eq(checkpoint_detect_kind(path_in("fifo")), COORD_KIND_PLAIN,
	             "a FIFO is plain, and detecting it must not block");
}

/* ---- names and the policy parser ---- */

struct policy_case {
	char text[32];
	int rc, policy, mode;
	char command[16];
};

ParameterizedTestParameters(checkpoint, policy_parse)
{
	static struct policy_case cases[] = {
		{ "auto", 0, COORD_POLICY_AUTO, COORD_SQLITE_DEFAULT, "" },
		{ "none", 0, COORD_POLICY_NONE, COORD_SQLITE_DEFAULT, "" },
		{ "sqlite", 0, COORD_POLICY_SQLITE, COORD_SQLITE_DEFAULT, "" },
		{ "sqlite:passive", 0, COORD_POLICY_SQLITE, COORD_SQLITE_PASSIVE, "" },
		{ "sqlite:full", 0, COORD_POLICY_SQLITE, COORD_SQLITE_FULL, "" },
		{ "sqlite:restart", 0, COORD_POLICY_SQLITE, COORD_SQLITE_RESTART, "" },
		{ "sqlite:truncate", 0, COORD_POLICY_SQLITE, COORD_SQLITE_TRUNCATE, "" },
		{ "duckdb", 0, COORD_POLICY_DUCKDB, COORD_SQLITE_DEFAULT, "" },
		{ "exec:true", 0, COORD_POLICY_EXEC, COORD_SQLITE_DEFAULT, "true" },
		{ "exec:a:b c", 0, COORD_POLICY_EXEC, COORD_SQLITE_DEFAULT, "a:b c" },
		{ "exec:", COORD_EINVAL, 0, 0, "" },
		{ "exec", COORD_EINVAL, 0, 0, "" },
		{ "sqlite:", COORD_EINVAL, 0, 0, "" },
		{ "sqlite:fast", COORD_EINVAL, 0, 0, "" },
		{ "duckdb:full", COORD_EINVAL, 0, 0, "" },
		{ "SQLITE", COORD_EINVAL, 0, 0, "" },
		{ "auto ", COORD_EINVAL, 0, 0, "" },
		{ "", COORD_EINVAL, 0, 0, "" },
	};
	return cr_make_param_array(struct policy_case, cases, sizeof cases / sizeof cases[0]);
}

/* What a refused text must leave in the output: all of it. */
static const coord_policy_t untouched = { .policy = -1, .sqlite_mode = -1, .command = "untouched" };

ParameterizedTest(struct policy_case *c, checkpoint, policy_parse)
{
	coord_policy_t p = untouched;
	int rc = coord_policy_parse(c->text, &p);
	cr_assert_eq(rc, c->rc, "'%s': rc %d, expected %d", c->text, rc, c->rc);
	if (rc < 0) {
		cr_assert(!memcmp(&p, &untouched, sizeof p),
		          "'%s' was refused but the output was changed", c->text);
		return;
	}
	cr_assert_eq(p.policy, c->policy, "'%s': policy %s", c->text, coord_policy_name(p.policy));
	cr_assert_eq(p.sqlite_mode, c->mode, "'%s': mode %s", c->text,
	             coord_sqlite_mode_name(p.sqlite_mode));
	cr_assert_str_eq(p.command, c->command, "'%s': command '%s', expected '%s'", c->text,
	                 p.command, c->command);
	cr_assert(!strncmp(c->text, coord_policy_name(p.policy), strlen(coord_policy_name(p.policy))),
	          "'%s' parses to a policy named '%s'", c->text, coord_policy_name(p.policy));
}

Test(checkpoint, names_of_unknown_values)
{
	coord_policy_t p;
	char text[COORD_COMMAND_MAX + 8] = "exec:";
	cr_assert_eq(coord_policy_parse(NULL, &p), COORD_EINVAL, "NULL text must be refused");
	memset(text + 5, 'x', COORD_COMMAND_MAX + 1);
	cr_assert_eq(coord_policy_parse(text, &p), COORD_EINVAL,
	             "an exec command of %d bytes does not fit coord_policy_t.command; it must be "
	             "refused, not cut",
	             COORD_COMMAND_MAX + 1);
	cr_assert_str_eq(coord_policy_name(-1), "?", "policy -1");
	cr_assert_str_eq(coord_policy_name(COORD_POLICY_EXEC + 1), "?", "policy past the end");
	cr_assert_str_eq(coord_kind_name(COORD_KIND_DUCKDB + 1), "?", "kind past the end");
	cr_assert_str_eq(coord_sqlite_mode_name(COORD_SQLITE_TRUNCATE + 1), "?",
	                 "mode past the end");
	cr_assert_str_eq(coord_sqlite_mode_name(COORD_SQLITE_DEFAULT), "full",
	                 "the documented default mode is FULL");
}
