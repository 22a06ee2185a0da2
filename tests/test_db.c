/* Database tests through a real broker with real SQLite files:
 *  - writers SIGKILLed mid-transaction at random: afterwards integrity
 *    holds, every committed transaction is whole, none is partial, and
 *    the WAL is small once the last writer has released;
 *  - checkpoint starvation: readers always active and a writer committing
 *    steadily.  Without coord the WAL grows; with coord it stays bounded.
 *    Both figures are printed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "harness.h"

HARNESS_SUITE(db, 300);

#define ROWS_PER_TXN 50
#define MAX_LOG 100000

struct txlog {
	_Atomic long n;
	long id[MAX_LOG];
};

static long long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_busy_timeout(db, 10000);
	return db;
}

static int exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* A writer: under a write lease, one transaction of ROWS_PER_TXN rows
 * tagged with a unique id; logged only after COMMIT returned. */
static void sqlite_writer(const char *path, struct txlog *log, int seq0)
{
	coord_t *c;
	sqlite3 *db;
	long txn = (long)getpid() * 1000000 + seq0;
	if (coord_connect(&c, NULL) < 0 || !(db = open_db(path)))
		_exit(2);
	for (;;) {
		coord_lease_t *l;
		char sql[128];
		if (coord_acquire(c, path, COORD_WRITE, -1, "writer", &l) < 0)
			_exit(3);
		if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK)
			_exit(4);
		for (int i = 0; i < ROWS_PER_TXN; i++) {
			snprintf(sql, sizeof sql, "INSERT INTO t(txn, i, pad) VALUES(%ld, %d, randomblob(200))",
			         txn, i);
			if (exec(db, sql) != SQLITE_OK)
				_exit(5);
		}
		if (exec(db, "COMMIT") != SQLITE_OK)
			_exit(6);
		long slot = log->n++;
		if (slot < MAX_LOG)
			log->id[slot] = txn;
		coord_release(l);
		txn++;
	}
}

static long query_long(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	long v = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -2;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

typedef void writer_fn(const char *path, struct txlog *log, int seq0);

/* Keeps `n` writers running and, `rounds` times, SIGKILLs one of them at a
 * random moment: after 0 to 3 more commits and a random spin inside the
 * next transaction; a fresh writer replaces it.  Returns the kills. */
static long kill_writers_at_random(writer_fn *fn, const char *path, struct txlog *log, int n,
                                   int rounds, int spin_max)
{
	pid_t kids[8];
	unsigned seed = 99;
	long kills = 0;
	for (int i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			fn(path, log, 0);
		}
	}
	for (int round = 0; round < rounds; round++) {
		long before = log->n;
		int wait_commits = rand_r(&seed) % 4;
		for (int i = 0; i < 5000 && log->n < before + wait_commits; i++)
			poll(NULL, 0, 1);
		for (volatile int spin = rand_r(&seed) % spin_max; spin > 0; spin--)
			;
		int k = rand_r(&seed) % n;
		kill(kids[k], SIGKILL);
		waitpid(kids[k], NULL, 0);
		kills++;
		kids[k] = fork();
		if (kids[k] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			fn(path, log, round + 1);
		}
	}
	for (int i = 0; i < n; i++) {
		kill(kids[i], SIGKILL);
		waitpid(kids[i], NULL, 0);
	}
	return kills;
}

struct idle_arg {
	const char *res;
};

/* No holders, no waiters, and no checkpoint running. */
static int resource_idle(void *p)
{
	struct idle_arg *a = p;
	char cmd[1024], out[4096] = "";
	FILE *f;
	if (harness_count(&h, a->res, 0, 0) || harness_count(&h, a->res, 0, 1))
		return 0;
	snprintf(cmd, sizeof cmd, "'%s' show '%s'", getenv("COORD_TEST_COORDCTL"), a->res);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	size_t n = fread(out, 1, sizeof out - 1, f);
	out[n] = 0;
	pclose(f);
	return strstr(out, "checkpoint: idle") && !strstr(out, "last checkpoint: never");
}

Test(db, sqlite_writers_killed_mid_transaction)
{
	const char *path = harness_path(&h, "crash.db");
	char wal[600];
	struct txlog *log = mmap(NULL, sizeof *log, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                         -1, 0);
	sqlite3 *db = open_db(path);
	long kills = 0;
	cr_assert(db && log != MAP_FAILED, "setup failed");
	cr_assert_eq(exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(txn INTEGER, i INTEGER, pad BLOB)"),
	             SQLITE_OK, "cannot create the database: %s", sqlite3_errmsg(db));
	sqlite3_close(db);
	snprintf(wal, sizeof wal, "%s-wal", path);

	kills = kill_writers_at_random(sqlite_writer, path, log, 3, 25, 2000000);
	struct idle_arg ia = { path };
	cr_assert(harness_wait(resource_idle, &ia, 30000),
	          "the resource did not become idle with a finished checkpoint");

	db = open_db(path);
	cr_assert(db, "cannot reopen the database");
	sqlite3_stmt *st;
	char *ic = NULL;
	cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK, "prep");
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "integrity_check returned nothing");
	ic = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	cr_assert_str_eq(ic, "ok", "integrity_check after %ld kills: %s", kills, ic);
	free(ic);
	long partial = query_long(db, "SELECT count(*) FROM (SELECT txn FROM t GROUP BY txn "
	                              "HAVING count(*) != " "50" ")");
	cr_assert_eq(partial, 0, "%ld transactions are partially present", partial);
	long n = log->n < MAX_LOG ? log->n : MAX_LOG;
	for (long i = 0; i < n; i++) {
		char sql[128];
		snprintf(sql, sizeof sql, "SELECT count(*) FROM t WHERE txn = %ld", log->id[i]);
		long rows = query_long(db, sql);
		cr_assert_eq(rows, ROWS_PER_TXN, "committed transaction %ld has %ld rows", log->id[i], rows);
	}
	long long wal_bytes = file_size(wal);
	printf("db: %ld committed transactions survived %ld SIGKILLs; WAL after the last release: "
	       "%lld bytes\n", n, kills, wal_bytes);
	cr_assert_gt(n, 10, "too few transactions committed (%ld) to mean anything", n);
	cr_assert_leq(wal_bytes, 1 << 20, "WAL is %lld bytes after the last writer released", wal_bytes);
	sqlite3_close(db);
	munmap(log, sizeof *log);
}

/* ---- failing checkpointers ---- */

static int run_ctl(char *out, size_t size, const char *fmt, ...)
{
	char args[1024], cmd[2048];
	va_list ap;
	FILE *f;
	size_t n = 0;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", getenv("COORD_TEST_COORDCTL"), args);
	f = popen(cmd, "r");
	cr_assert(f, "popen");
	n = fread(out, 1, size - 1, f);
	out[n] = 0;
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct failing_case {
	char policy[64];
	char expect[64];
};

ParameterizedTestParameters(db, failing_checkpointer_never_wedges)
{
	static struct failing_case cases[] = {
		{ "exec:exit 3", "exit status 3" },
		{ "exec:sleep 100", "timed out" },
		{ "sqlite", "sqlite" }, /* forced on a file that is not a database */
	};
	return cr_make_param_array(struct failing_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct failing_case *fc, db, failing_checkpointer_never_wedges)
{
	const char *path = harness_path(&h, "notes.txt");
	char out[4096];
	FILE *f = fopen(path, "w");
	fputs("not a database\n", f);
	fclose(f);
	int st = run_ctl(out, sizeof out, "policy '%s' '%s' --timeout 0.3", path, fc->policy);
	cr_assert_eq(st, 0, "coordctl policy failed (%d): %s", st, out);

	coord_t *c;
	coord_lease_t *l;
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w1", &l), 0, "first writer");
	coord_release(l);
	/* the checkpoint runs now and fails or hangs; the next writer must
	 * still be granted once it is over (time limit 0.3 s) */
	int rc = coord_acquire(c, path, COORD_WRITE, 10000, "w2", &l);
	cr_assert_eq(rc, 0, "a failed checkpoint (%s) wedged the resource: %s", fc->policy,
	             coord_strerror(rc));
	coord_release(l);
	struct idle_arg ia = { path };
	cr_assert(harness_wait(resource_idle, &ia, 10000), "resource never became idle");
	run_ctl(out, sizeof out, "show '%s'", path);
	cr_assert(strstr(out, "COORD_ECHECKPOINT") && strstr(out, fc->expect),
	          "coordctl show must report the failure ('%s'):\n%s", fc->expect, out);
	coord_disconnect(c);
}

Test(db, missing_libduckdb_is_reported_and_leases_still_work)
{
	const char *path = harness_path(&h, "x.duckdb");
	char head[4096] = { 0 }, out[4096];
	FILE *f = fopen(path, "w");
	memcpy(head + 8, "DUCK", 4);
	fwrite(head, 1, sizeof head, f);
	fclose(f);
	harness_stop_broker(&h);
	harness_start_broker(&h, "--duckdb-lib", "/nonexistent/libduckdb.so", NULL);
	coord_t *c;
	coord_lease_t *l;
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, NULL, &l), 0,
	             "a DuckDB file must get leases without libduckdb");
	coord_release(l);
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, NULL, &l), 0, "and again");
	coord_release(l);
	coord_disconnect(c);
	run_ctl(out, sizeof out, "show '%s'", path);
	cr_assert(strstr(out, "kind:       duckdb") && strstr(out, "DuckDB checkpoints are off") &&
	                  strstr(out, "/nonexistent/libduckdb.so"),
	          "coordctl show must say that and why DuckDB checkpoints are off:\n%s", out);
	snprintf(head, sizeof head, "grep -q 'event=checkpoint-skip.*nonexistent' '%s/broker.log'",
	         h.dir);
	cr_assert_eq(system(head), 0, "the broker log must say the checkpoint was skipped and why");
}

/* ---- DuckDB ---- */

static int duck_exec(struct ckpt_duckdb *api, void *conn, const char *sql)
{
	char res[CKPT_DUCKDB_RESULT_SIZE];
	memset(res, 0, sizeof res);
	int rc = api->query(conn, sql, res);
	api->destroy_result(res);
	return rc;
}

/* A DuckDB writer: DuckDB admits one read-write process at a time, so it
 * opens the file only under its write lease and closes it before release. */
static void duckdb_writer(const char *path, struct txlog *log, int seq0)
{
	struct ckpt_duckdb api;
	char why[256], sql[256];
	coord_t *c;
	long txn = (long)getpid() * 1000000 + seq0;
	if (ckpt_duckdb_load(&api, getenv("COORD_DUCKDB_LIB"), why, sizeof why) < 0 ||
	    coord_connect(&c, NULL) < 0)
		_exit(2);
	for (;;) {
		coord_lease_t *l;
		void *db = NULL, *conn = NULL;
		if (coord_acquire(c, path, COORD_WRITE, -1, "duck-writer", &l) < 0)
			_exit(3);
		if (api.open_ext(path, &db, NULL, NULL) || api.connect(db, &conn))
			_exit(4);
		snprintf(sql, sizeof sql,
		         "BEGIN; INSERT INTO t SELECT %ld, range FROM range(%d); COMMIT;", txn,
		         ROWS_PER_TXN);
		if (duck_exec(&api, conn, sql))
			_exit(5);
		long slot = log->n++;
		if (slot < MAX_LOG)
			log->id[slot] = txn;
		api.disconnect(&conn);
		api.close(&db);
		coord_release(l);
		txn++;
	}
}

Test(db, duckdb_writers_killed_mid_transaction)
{
	const char *path = harness_path(&h, "crash.duckdb");
	const char *counts = harness_path(&h, "counts.csv");
	char why[256], sql[1200], wal[600];
	struct ckpt_duckdb api;
	struct txlog *log = mmap(NULL, sizeof *log, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                         -1, 0);
	void *db = NULL, *conn = NULL;
	char *err = NULL;
	long kills = 0;
	cr_assert_eq(ckpt_duckdb_load(&api, getenv("COORD_DUCKDB_LIB"), why, sizeof why), 0,
	             "libduckdb.so must be installed (scripts/install-duckdb.sh): %s", why);
	cr_assert_eq(api.open_ext(path, &db, NULL, NULL), 0, "create %s", path);
	api.connect(db, &conn);
	cr_assert_eq(duck_exec(&api, conn, "CREATE TABLE t(txn BIGINT, i INTEGER)"), 0, "create table");
	api.disconnect(&conn);
	api.close(&db);
	snprintf(wal, sizeof wal, "%s.wal", path);

	kills = kill_writers_at_random(duckdb_writer, path, log, 2, 12, 3000000);
	struct idle_arg ia = { path };
	cr_assert(harness_wait(resource_idle, &ia, 60000),
	          "the DuckDB resource did not become idle with a finished checkpoint");
	long long wal_bytes = file_size(wal);

	cr_assert_eq(api.open_ext(path, &db, NULL, &err), 0, "DuckDB must open after %ld kills: %s",
	             kills, err ? err : "?");
	api.connect(db, &conn);
	snprintf(sql, sizeof sql,
	         "COPY (SELECT txn, count(*) FROM t GROUP BY txn ORDER BY txn) TO '%s' (HEADER false)",
	         counts);
	cr_assert_eq(duck_exec(&api, conn, sql), 0, "query the rows");
	api.disconnect(&conn);
	api.close(&db);

	FILE *f = fopen(counts, "r");
	long txn, rows, present = 0;
	cr_assert(f, "no counts written");
	while (fscanf(f, "%ld,%ld", &txn, &rows) == 2) {
		cr_assert_eq(rows, ROWS_PER_TXN, "transaction %ld is partial: %ld rows", txn, rows);
		present++;
	}
	fclose(f);
	long n = log->n < MAX_LOG ? log->n : MAX_LOG;
	cr_assert_geq(present, n, "%ld transactions committed but only %ld present", n, present);
	printf("db: DuckDB: %ld committed transactions survived %ld SIGKILLs; WAL after the last "
	       "release: %lld bytes\n", n, kills, wal_bytes);
	cr_assert_gt(n, 5, "too few DuckDB transactions committed (%ld)", n);
	cr_assert_leq(wal_bytes, 1 << 20, "DuckDB WAL is %lld bytes after the last release", wal_bytes);
	ckpt_duckdb_unload(&api);
	munmap(log, sizeof *log);
}

/* ---- starvation ---- */

struct starve {
	_Atomic int stop;
	_Atomic long reads;
};

/* A reader that is always inside a read transaction, staggered with its
 * twin so that one of them always holds a snapshot. */
static void reader(const char *path, struct starve *s, int use_coord, int phase)
{
	coord_t *c = NULL;
	sqlite3 *db = open_db(path);
	if (!db || (use_coord && coord_connect(&c, NULL) < 0))
		_exit(2);
	poll(NULL, 0, phase);
	while (!s->stop) {
		coord_lease_t *l = NULL;
		if (use_coord && coord_acquire(c, path, COORD_READ, -1, "reader", &l) < 0)
			_exit(3);
		exec(db, "BEGIN");
		query_long(db, "SELECT count(*) FROM t");
		poll(NULL, 0, 10); /* a dashboard rendering */
		exec(db, "COMMIT");
		if (l)
			coord_release(l);
		s->reads++;
	}
	_exit(0);
}

static long long starvation_run(const char *path, int use_coord, int commits)
{
	struct starve *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                        -1, 0);
	sqlite3 *db = open_db(path);
	coord_t *c = NULL;
	pid_t r[2];
	char wal[600];
	long long wal_max = 0;
	cr_assert(db, "open %s", path);
	exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x BLOB)");
	snprintf(wal, sizeof wal, "%s-wal", path);
	memset(s, 0, sizeof *s);
	for (int i = 0; i < 2; i++) {
		r[i] = fork();
		if (r[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			reader(path, s, use_coord, i * 5);
		}
	}
	if (use_coord)
		cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	for (int i = 0; i < 200 && s->reads < 4; i++)
		poll(NULL, 0, 5);
	for (int i = 0; i < commits; i++) {
		coord_lease_t *l = NULL;
		if (use_coord)
			cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 30000, "writer", &l), 0, "acquire");
		cr_assert_eq(exec(db, "INSERT INTO t VALUES(randomblob(8000))"), SQLITE_OK, "insert: %s",
		             sqlite3_errmsg(db));
		if (l)
			coord_release(l);
		long long w = file_size(wal);
		if (w > wal_max)
			wal_max = w;
	}
	s->stop = 1;
	for (int i = 0; i < 2; i++)
		waitpid(r[i], NULL, 0);
	if (c)
		coord_disconnect(c);
	sqlite3_close(db);
	munmap(s, sizeof *s);
	return wal_max;
}

Test(db, wal_stays_bounded_under_constant_readers)
{
	const int commits = 600;
	long long without = starvation_run(harness_path(&h, "plain.db"), 0, commits);
	long long with = starvation_run(harness_path(&h, "coord.db"), 1, commits);
	printf("db: WAL high-water mark after %d commits of 8 KB with readers always active: "
	       "without coord %lld bytes, with coord %lld bytes\n", commits, without, with);
	cr_log_info("starvation: without coord %lld bytes, with coord %lld bytes", without, with);
	cr_assert_lt(with, 512 * 1024, "with coord the WAL grew to %lld bytes", with);
	cr_assert_gt(without, 2 * with,
	             "the test does not reproduce starvation: without coord %lld, with %lld", without,
	             with);
}
