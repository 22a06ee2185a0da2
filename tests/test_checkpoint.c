/* Tests of what runs inside a checkpoint child, on real files: SQLite WAL
 * checkpoints, DuckDB WAL replay after a writer killed with SIGKILL, exec
 * commands that succeed, fail or are missing, kind detection and the
 * policy parser.  libduckdb.so must be installed (scripts/install-duckdb.sh);
 * without it the DuckDB tests fail rather than skip. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
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

TestSuite(checkpoint, .init = setup, .fini = teardown, .timeout = 120);

static const char *path_in(const char *name)
{
	static char buf[4][512];
	static int n;
	char *b = buf[n++ % 4];
	snprintf(b, sizeof buf[0], "%s/%s", dir, name);
	return b;
}

static long long size_of(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

static const char *duckdb_lib(void)
{
	return getenv("COORD_DUCKDB_LIB");
}

Test(checkpoint, sqlite_wal_is_checkpointed)
{
	const char *db = path_in("a.db");
	sqlite3 *w, *keep;
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_SQLITE, .policy = COORD_POLICY_AUTO,
		                  .sqlite_mode = CKPT_SQLITE_DEFAULT_MODE };
	cr_assert_eq(sqlite3_open(db, &w), SQLITE_OK, "open");
	cr_assert_eq(sqlite3_exec(w, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
	                             "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
	                             "SELECT i+1 FROM n WHERE i<2000) INSERT INTO t SELECT randomblob(100) FROM n;",
	                          NULL, NULL, NULL), SQLITE_OK, "write: %s", sqlite3_errmsg(w));
	/* a second connection keeps the WAL from being removed on close */
	cr_assert_eq(sqlite3_open(db, &keep), SQLITE_OK, "open keeper");
	sqlite3_exec(keep, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
	sqlite3_close(w);
	cr_assert_gt(size_of(path_in("a.db-wal")), 0, "the test needs a non-empty WAL");
	cr_assert_eq(checkpoint_detect_kind(db), COORD_KIND_SQLITE, "kind detection");
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "checkpoint failed: %s", r.message);
	cr_assert_gt(r.wal_before, 0, "wal_before not measured");
	cr_assert(strstr(r.message, "all checkpointed"), "every frame must be copied back: %s", r.message);
	/* the data is in the main file now: read it with the WAL ignored */
	sqlite3_close(keep);
	cr_assert_eq(sqlite3_open(db, &w), SQLITE_OK, "reopen");
	sqlite3_stmt *st;
	sqlite3_prepare_v2(w, "SELECT count(*) FROM t", -1, &st, NULL);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "count");
	cr_assert_eq(sqlite3_column_int(st, 0), 2000, "rows lost");
	sqlite3_finalize(st);
	sqlite3_close(w);
}

Test(checkpoint, sqlite_not_in_wal_mode_is_fine)
{
	const char *db = path_in("rollback.db");
	sqlite3 *w;
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_SQLITE, .sqlite_mode = CKPT_SQLITE_DEFAULT_MODE };
	sqlite3_open(db, &w);
	sqlite3_exec(w, "CREATE TABLE t(x)", NULL, NULL, NULL);
	sqlite3_close(w);
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "a rollback-journal database is not an error: %s", r.message);
	cr_assert(strstr(r.message, "not WAL"), "say why nothing was done: %s", r.message);
}

/* Writes rows into a DuckDB file and dies by SIGKILL without closing, so
 * its WAL is left for the checkpoint to replay. */
static void duckdb_crashing_writer(const char *db, int rows)
{
	struct ckpt_duckdb api;
	char why[256], sql[256];
	void *d = NULL, *c = NULL;
	char res[CKPT_DUCKDB_RESULT_SIZE];
	if (ckpt_duckdb_load(&api, duckdb_lib(), why, sizeof why) < 0)
		_exit(2);
	if (api.open_ext(db, &d, NULL, NULL) || api.connect(d, &c))
		_exit(3);
	memset(res, 0, sizeof res);
	api.query(c, "CREATE TABLE IF NOT EXISTS t(i INTEGER)", res);
	api.destroy_result(res);
	api.query(c, "CHECKPOINT", res);
	api.destroy_result(res);
	snprintf(sql, sizeof sql, "INSERT INTO t SELECT range FROM range(%d)", rows);
	memset(res, 0, sizeof res);
	if (api.query(c, sql, res))
		_exit(4);
	api.destroy_result(res);
	kill(getpid(), SIGKILL);
}

static long duckdb_count(const char *db, char *err, size_t errsize)
{
	struct ckpt_duckdb api;
	void *d = NULL, *c = NULL;
	char *e = NULL;
	char res[CKPT_DUCKDB_RESULT_SIZE];
	long n = -1;
	FILE *f;
	if (ckpt_duckdb_load(&api, duckdb_lib(), err, errsize) < 0)
		return -1;
	if (api.open_ext(db, &d, NULL, &e)) {
		snprintf(err, errsize, "%s", e ? e : "open failed");
		goto out;
	}
	api.connect(d, &c);
	memset(res, 0, sizeof res);
	/* COPY the count to a file: reading result values would need more of
	 * the C API than coord uses. */
	char sql[700], out[600];
	snprintf(out, sizeof out, "%s.count", db);
	snprintf(sql, sizeof sql, "COPY (SELECT count(*) FROM t) TO '%s' (HEADER false)", out);
	if (api.query(c, sql, res)) {
		snprintf(err, errsize, "%s", api.result_error(res));
		api.destroy_result(res);
		goto out;
	}
	api.destroy_result(res);
	f = fopen(out, "r");
	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
out:
	if (e)
		api.free(e);
	if (c)
		api.disconnect(&c);
	if (d)
		api.close(&d);
	ckpt_duckdb_unload(&api);
	return n;
}

Test(checkpoint, duckdb_wal_of_a_killed_writer_is_replayed)
{
	const char *db = path_in("d.duckdb");
	char why[256] = "";
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_DUCKDB, .duckdb_lib = duckdb_lib() };
	int st;
	cr_assert(checkpoint_duckdb_probe(duckdb_lib(), why, sizeof why),
	          "libduckdb.so must be installed for the db tests (scripts/install-duckdb.sh): %s", why);
	pid_t pid = fork();
	if (pid == 0)
		duckdb_crashing_writer(db, 1000);
	waitpid(pid, &st, 0);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer must die by SIGKILL (%d)", st);
	cr_assert_gt(size_of(path_in("d.duckdb.wal")), 0, "the killed writer must leave a WAL behind");
	cr_assert_eq(checkpoint_detect_kind(db), COORD_KIND_DUCKDB, "kind detection");
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, 0, "checkpoint failed: %s", r.message);
	cr_assert_gt(r.wal_before, 0, "wal_before must be measured");
	cr_assert(r.wal_after <= 0, "after a checkpoint the WAL must be gone or empty, is %lld",
	          (long long)r.wal_after);
	long n = duckdb_count(db, why, sizeof why);
	cr_assert_eq(n, 1000, "rows of the killed writer's committed insert: %ld (%s)", n, why);
}

Test(checkpoint, duckdb_missing_library_is_reported)
{
	char why[256];
	cr_assert_eq(checkpoint_duckdb_probe("/nonexistent/libduckdb.so", why, sizeof why), 0,
	             "a missing library must not probe as present");
	cr_assert(strstr(why, "cannot load"), "the reason must say what failed: %s", why);
}

struct exec_case {
	char command[64];
	int status;
	char message[32];
};

ParameterizedTestParameters(checkpoint, exec_commands)
{
	static struct exec_case cases[] = {
		{ "test -f \"$1\"", 0, ": ok" },
		{ "exit 3", COORD_ECHECKPOINT, "exit status 3" },
		{ "/nonexistent/checkpointer", COORD_ECHECKPOINT, "exit status 127" },
		{ "kill -9 $$", COORD_ECHECKPOINT, "signal 9" },
	};
	return cr_make_param_array(struct exec_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct exec_case *c, checkpoint, exec_commands)
{
	const char *f = path_in("plain.bin");
	struct ckpt_result r;
	struct ckpt_request q = { .path = f, .policy = COORD_POLICY_EXEC, .command = c->command };
	close(open(f, O_CREAT | O_WRONLY, 0600));
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, c->status, "'%s': status %d, expected %d (%s)", c->command, r.status,
	             c->status, r.message);
	cr_assert(strstr(r.message, c->message), "'%s': message '%s' lacks '%s'", c->command,
	          r.message, c->message);
}

Test(checkpoint, missing_and_plain_files)
{
	struct ckpt_result r;
	struct ckpt_request q = { .path = path_in("missing.db"), .kind = COORD_KIND_SQLITE };
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ENOENT, "missing file: %d (%s)", r.status, r.message);
	cr_assert_eq(checkpoint_detect_kind(path_in("missing.db")), COORD_KIND_PLAIN, "missing is plain");
	cr_assert_eq(mkfifo(path_in("fifo"), 0600), 0, "mkfifo");
	cr_assert_eq(checkpoint_detect_kind(path_in("fifo")), COORD_KIND_PLAIN,
	             "a FIFO must be plain, and detecting it must not block");
	q.path = path_in("fifo");
	q.kind = COORD_KIND_PLAIN;
	checkpoint_run(&q, &r);
	cr_assert_eq(r.status, COORD_ENOTSUP, "plain: %d (%s)", r.status, r.message);
}

Test(checkpoint, unreadable_sqlite_file_fails_cleanly)
{
	const char *db = path_in("locked.db");
	sqlite3 *w;
	struct ckpt_result r;
	struct ckpt_request q = { .path = db, .kind = COORD_KIND_SQLITE, .sqlite_mode = COORD_SQLITE_FULL };
	sqlite3_open(db, &w);
	sqlite3_exec(w, "PRAGMA journal_mode=WAL; CREATE TABLE t(x)", NULL, NULL, NULL);
	sqlite3_close(w);
	cr_assert_eq(chmod(dir, 0755), 0, "chmod dir");
	cr_assert_eq(chmod(db, 0600), 0, "chmod db");
	pid_t pid = fork();
	if (pid == 0) {
		/* as a user who may see the file but not open it */
		if (setgid(65534) || setuid(65534))
			_exit(90);
		checkpoint_run(&q, &r);
		_exit(r.status == COORD_ECHECKPOINT && strstr(r.message, "sqlite") ? 0 : 1);
	}
	int st;
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 90)
		cr_skip_test("needs root to switch users");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "an unreadable database must give COORD_ECHECKPOINT with sqlite's message");
}

struct policy_case {
	char text[32];
	int rc, policy, mode;
};

ParameterizedTestParameters(checkpoint, policy_parse)
{
	static struct policy_case cases[] = {
		{ "auto", 0, COORD_POLICY_AUTO, CKPT_SQLITE_DEFAULT_MODE },
		{ "none", 0, COORD_POLICY_NONE, CKPT_SQLITE_DEFAULT_MODE },
		{ "sqlite", 0, COORD_POLICY_SQLITE, CKPT_SQLITE_DEFAULT_MODE },
		{ "sqlite:truncate", 0, COORD_POLICY_SQLITE, COORD_SQLITE_TRUNCATE },
		{ "sqlite:passive", 0, COORD_POLICY_SQLITE, COORD_SQLITE_PASSIVE },
		{ "duckdb", 0, COORD_POLICY_DUCKDB, CKPT_SQLITE_DEFAULT_MODE },
		{ "exec:true", 0, COORD_POLICY_EXEC, CKPT_SQLITE_DEFAULT_MODE },
		{ "exec:", COORD_EINVAL, 0, 0 },
		{ "sqlite:fast", COORD_EINVAL, 0, 0 },
		{ "exec", COORD_EINVAL, 0, 0 },
		{ "", COORD_EINVAL, 0, 0 },
	};
	return cr_make_param_array(struct policy_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct policy_case *c, checkpoint, policy_parse)
{
	int policy = -1, mode = -1;
	const char *command;
	int rc = checkpoint_policy_parse(c->text, &policy, &mode, &command);
	cr_assert_eq(rc, c->rc, "'%s': rc %d, expected %d", c->text, rc, c->rc);
	if (rc == 0) {
		cr_assert_eq(policy, c->policy, "'%s': policy %d", c->text, policy);
		cr_assert_eq(mode, c->mode, "'%s': mode %d", c->text, mode);
	}
}
