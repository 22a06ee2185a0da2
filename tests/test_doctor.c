/* Tests of coordctl doctor's report on real files: a healthy SQLite file, a
 * WAL left by a writer killed with SIGKILL, a WAL owned by another user,
 * a file another process holds open, a DuckDB WAL, and a missing file;
 * and in every case the directory is byte-for-byte unchanged. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
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

#include "doctor.h"
#include "harness.h"

static char dir[256];
static char report[16384];

static void setup(void)
{
	harness_tmpdir(dir, sizeof dir, "coord-doctor");
}

static void teardown(void)
{
	harness_rmtree(dir);
}

TestSuite(doctor, .init = setup, .fini = teardown, .timeout = 60);

static const char *in_dir(const char *name)
{
	static char buf[4][512];
	static int n;
	char *b = buf[n++ % 4];
	snprintf(b, sizeof buf[0], "%s/%s", dir, name);
	return b;
}

/* A fingerprint of every file in the directory: names, sizes, modes,
 * owners and contents. */
static unsigned long long fingerprint(void)
{
	char cmd[400];
	unsigned long long h = 1469598103934665603ull;
	FILE *f;
	int ch;
	snprintf(cmd, sizeof cmd, "cd '%s' && ls -ln --time-style=+%%s . && cat ./* 2>/dev/null", dir);
	f = popen(cmd, "r");
	cr_assert(f, "popen");
	while ((ch = fgetc(f)) != EOF)
		h = (h ^ (unsigned)ch) * 1099511628211ull;
	pclose(f);
	return h;
}

/* Runs the doctor and checks it changed nothing. */
static int doctor(const char *path, const struct doctor_lease *l, size_t n)
{
	unsigned long long before = fingerprint();
	FILE *f = fmemopen(report, sizeof report - 1, "w");
	int rc;
	cr_assert(f, "fmemopen");
	rc = doctor_run(f, path, l, n, n > 0);
	fclose(f);
	cr_assert_eq(fingerprint(), before, "doctor changed the directory:\n%s", report);
	return rc;
}

static void make_sqlite(const char *path)
{
	sqlite3 *db;
	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK, "open");
	cr_assert_eq(sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1)",
	                          NULL, NULL, NULL), SQLITE_OK, "create");
	sqlite3_close(db);
}

Test(doctor, healthy_sqlite)
{
	const char *db = in_dir("ok.db");
	make_sqlite(db);
	int rc = doctor(db, NULL, 0);
	cr_assert_eq(rc, 0, "a clean database must be healthy, got %d:\n%s", rc, report);
	cr_assert(strstr(report, "SQLite, WAL mode"), "kind missing:\n%s", report);
	cr_assert(strstr(report, "verdict: healthy"), "verdict missing:\n%s", report);
}

Test(doctor, leftover_wal_after_sigkill)
{
	const char *db = in_dir("crashed.db");
	int st;
	make_sqlite(db);
	pid_t pid = fork();
	if (pid == 0) {
		sqlite3 *h;
		sqlite3_open(db, &h);
		sqlite3_exec(h, "PRAGMA wal_autocheckpoint=0; INSERT INTO t SELECT 2", NULL, NULL, NULL);
		kill(getpid(), SIGKILL);
	}
	waitpid(pid, &st, 0);
	cr_assert(WIFSIGNALED(st), "the writer must be killed");
	int rc = doctor(db, NULL, 0);
	cr_assert_eq(rc, 1, "a leftover WAL is a problem, got %d:\n%s", rc, report);
	cr_assert(strstr(report, "leftover WAL"), "must name the leftover WAL:\n%s", report);
	cr_assert(strstr(report, "Do NOT delete the WAL"), "must warn against deleting it:\n%s", report);
	cr_assert(strstr(report, "coordctl checkpoint"), "must say how to replay it:\n%s", report);
}

Test(doctor, wal_owned_by_another_user)
{
	const char *db = in_dir("owned.db");
	make_sqlite(db);
	int fd = open(in_dir("owned.db-wal"), O_CREAT | O_WRONLY, 0600);
	cr_assert(fd >= 0, "create wal");
	close(fd);
	if (chown(in_dir("owned.db-wal"), 65534, 65534) != 0)
		cr_skip_test("needs root to chown");
	chmod(db, 0644);
	int rc = doctor(db, NULL, 0);
	cr_assert_eq(rc, 1, "a foreign WAL is a problem:\n%s", report);
	cr_assert(strstr(report, "-wal owner differs"), "owner difference not reported:\n%s", report);
	cr_assert(strstr(report, "mode 0600 differs"), "mode difference not reported:\n%s", report);
	cr_assert(strstr(report, "chown "), "the fix command is missing:\n%s", report);
}

Test(doctor, holders_are_listed)
{
	const char *db = in_dir("held.db");
	int ready[2], done[2];
	char ch;
	make_sqlite(db);
	cr_assert(pipe(ready) == 0 && pipe(done) == 0, "pipe");
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(db, O_RDONLY);
		close(done[1]);
		if (write(ready[1], "r", 1) != 1 || read(done[0], &ch, 1) < 0)
			_exit(1);
		close(fd);
		_exit(0);
	}
	close(done[0]);
	cr_assert_eq(read(ready[0], &ch, 1), 1, "child not ready");
	struct doctor_lease l = { "write", 4242, "pipeline", 17 };
	int rc = doctor(db, &l, 1);
	char want[64];
	snprintf(want, sizeof want, "pid %-7ld", (long)pid);
	close(done[1]); /* the child's read sees EOF and it exits */
	close(ready[0]);
	close(ready[1]);
	waitpid(pid, NULL, 0);
	cr_assert_eq(rc, 0, "an open, leased file is healthy:\n%s", report);
	cr_assert(strstr(report, want), "the process holding the file (%d) is missing:\n%s", (int)pid,
	          report);
	cr_assert(strstr(report, "write pid 4242") && strstr(report, "token 17"),
	          "the broker's lease is missing:\n%s", report);
}

Test(doctor, duckdb_leftover_wal)
{
	const char *db = in_dir("d.duckdb");
	char head[4096] = { 0 };
	memcpy(head + 8, "DUCK", 4);
	FILE *f = fopen(db, "w");
	fwrite(head, 1, sizeof head, f);
	fclose(f);
	f = fopen(in_dir("d.duckdb.wal"), "w");
	fwrite(head, 1, 100, f);
	fclose(f);
	int rc = doctor(db, NULL, 0);
	cr_assert_eq(rc, 1, "a leftover DuckDB WAL is a problem:\n%s", report);
	cr_assert(strstr(report, "kind:     DuckDB"), "kind:\n%s", report);
	cr_assert(strstr(report, "leftover WAL"), "leftover WAL:\n%s", report);
}

Test(doctor, missing_file)
{
	int rc = doctor(in_dir("nope.db"), NULL, 0);
	cr_assert_eq(rc, 2, "a missing file cannot be inspected (2), got %d", rc);
	cr_assert(strstr(report, "No such file"), "say why:\n%s", report);
}
