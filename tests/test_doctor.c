/* Tests of coordctl doctor's report on real files made by SQLite:
 *  - healthy files of each kind, and paths that cannot be inspected;
 *  - a WAL and a rollback journal left by writers killed with SIGKILL, and
 *    proof that opening the database then replays them as the report says;
 *  - WALs SQLite would not replay (all copied, torn tail, an old cycle) and
 *    a PERSIST journal with a zeroed header, which must not alarm anyone;
 *  - this very process holding the file, directly or through a hard link,
 *    and holding a WAL that was deleted under it;
 *  - side files owned by another user or not writable by the database's
 *    user, and a directory that user cannot create files in;
 *  - a DuckDB file with a .wal;
 *  - a file name, a process name and a broker's command name with an ESC
 *    sequence, invalid UTF-8 and a newline, which the report shows escaped
 *    and a shell reads back from the suggested command.
 * Every doctor run also checks that the directory is unchanged: names,
 * sizes, owners, modes, times and bytes.
 *
 * The tests that give files to uid 65534 need root; they skip otherwise. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbutil.h"
#include "doctor.h"
#include "harness.h"

#define NOBODY 65534

static char dir[256];
static char *report; /* the last report doctor wrote */
static size_t report_len;

static void setup(void)
{
	harness_tmpdir(dir, sizeof dir, "coord-doctor");
}

static void teardown(void)
{
	harness_rmtree(dir);
	free(report);
	report = NULL;
}

TestSuite(doctor, .init = setup, .fini = teardown, .timeout = 60);

static const char *in_dir(const char *name)
{
	return harness_file(dir, name);
}

#define assert_says(phrase, why)                                                                \
	cr_assert(report && strstr(report, phrase), "%s, so the report must say \"%s\"; it says:\n%s", \
	          why, phrase, report)
#define assert_not_says(phrase, why)                                                            \
	cr_assert(report && !strstr(report, phrase),                                              \
	          "%s, so the report must not say \"%s\"; it says:\n%s", why, phrase, report)

/* ---- "doctor changed nothing" ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

static uint64_t fnv_stat(uint64_t h, const struct stat *st)
{
	h = fnv(h, &st->st_ino, sizeof st->st_ino);
	h = fnv(h, &st->st_mode, sizeof st->st_mode);
	h = fnv(h, &st->st_uid, sizeof st->st_uid);
	h = fnv(h, &st->st_gid, sizeof st->st_gid);
	h = fnv(h, &st->st_size, sizeof st->st_size);
	h = fnv(h, &st->st_mtim, sizeof st->st_mtim);
	return fnv(h, &st->st_ctim, sizeof st->st_ctim);
}

/* A hash of everything in dir doctor could change, access times aside.
 * Per-file hashes are added up, so readdir's order does not matter. */
static uint64_t fingerprint(void)
{
	struct stat st;
	uint64_t sum;
	struct dirent *e;
	DIR *d = opendir(dir);
	cr_assert(d, "cannot list %s: %s", dir, strerror(errno));
	cr_assert_eq(fstat(dirfd(d), &st), 0, "cannot stat %s", dir);
	sum = fnv_stat(1469598103934665603ull, &st);
	while ((e = readdir(d))) {
		char buf[4096];
		ssize_t n;
		uint64_t h = fnv(1469598103934665603ull, e->d_name, strlen(e->d_name));
		int fd;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue; /* dir itself is hashed above; its parent is not ours */
		cr_assert_eq(fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW), 0, "cannot stat %s",
		             e->d_name);
		h = fnv_stat(h, &st);
		if (S_ISREG(st.st_mode)) {
			fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
			cr_assert(fd >= 0, "cannot read %s: %s", e->d_name, strerror(errno));
			while ((n = read(fd, buf, sizeof buf)) > 0)
				h = fnv(h, buf, (size_t)n);
			close(fd);
		}
		sum += h;
	}
	closedir(d);
	return sum;
}

/* Runs the doctor in this process; the report lands in `report`. */
static int doctor_on(const char *path, const struct doctor_lease *leases, size_t n, int broker_up)
{
	uint64_t before = fingerprint();
	FILE *f;
	int rc;
	free(report);
	report = NULL;
	f = open_memstream(&report, &report_len);
	cr_assert(f, "open_memstream: %s", strerror(errno));
	rc = doctor_run(f, path, leases, n, broker_up);
	cr_assert_eq(fclose(f), 0, "the report could not be written");
	cr_assert_eq(fingerprint(), before, "doctor changed something in %s; its report:\n%s", dir,
	             report);
	return rc;
}

/* Runs the doctor as uid/gid 65534 in a child; the report comes back
 * through a pipe.  Returns the doctor's exit status. */
static int doctor_as_nobody(const char *path)
{
	uint64_t before = fingerprint();
	int p[2], status;
	char buf[4096];
	ssize_t n;
	FILE *f;
	pid_t pid;

	cr_assert_eq(pipe(p), 0, "pipe: %s", strerror(errno));
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		if (setgroups(0, NULL) || setgid(NOBODY) || setuid(NOBODY))
			_exit(100);
		f = fdopen(p[1], "w");
		if (!f)
			_exit(101);
		status = doctor_run(f, path, NULL, 0, 0);
		_exit(fclose(f) ? 101 : status);
	}
	close(p[1]);
	free(report);
	report = NULL;
	f = open_memstream(&report, &report_len);
	cr_assert(f, "open_memstream: %s", strerror(errno));
	while ((n = read(p[0], buf, sizeof buf)) > 0)
		fwrite(buf, 1, (size_t)n, f);
	close(p[0]);
	cr_assert_eq(fclose(f), 0, "the report could not be kept");
	cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) < 100,
	          "the child could not become uid %d or write its report (status %#x)", NOBODY,
	          status);
	cr_assert_eq(fingerprint(), before, "doctor changed something in %s; its report:\n%s", dir,
	             report);
	return WEXITSTATUS(status);
}

/* Asserts that the doctor returned want (0 healthy, 1 problems found, 2
 * could not inspect); why, a format, says why that is the right answer. */
static void assert_verdict(int rc, int want, const char *why, ...)
        __attribute__((format(printf, 3, 4)));
static void assert_verdict(int rc, int want, const char *why, ...)
{
	char text[256];
	va_list ap;
	va_start(ap, why);
	vsnprintf(text, sizeof text, why, ap);
	va_end(ap);
	cr_assert_eq(rc, want, "%s, so doctor must return %d; it returned %d:\n%s", text, want, rc,
	             report);
}

/* ---- making files ---- */

/* A database with table t holding one row, closed cleanly. */
static void make_db(const char *path, const char *journal_mode)
{
	char pragma[64];
	sqlite3 *db = sqlite_open(path);
	snprintf(pragma, sizeof pragma, "PRAGMA journal_mode=%s;", journal_mode);
	sqlite_exec(db, pragma);
	sqlite_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
	cr_assert_eq(sqlite3_close(db), SQLITE_OK, "close %s", path);
}

static int count_rows(const char *path)
{
	sqlite3 *db = sqlite_open(path);
	int n = (int)sqlite_int(db, "SELECT count(*) FROM t");
	sqlite3_close(db);
	return n;
}

/* A child runs `statements` on the database and is killed with SIGKILL
 * before it can close it, as a crashed writer would be. */
static void kill_writer_after(const char *path, const char *statements)
{
	int status;
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		sqlite3 *db;
		if (sqlite3_open(path, &db) != SQLITE_OK ||
		    sqlite3_exec(db, statements, NULL, NULL, NULL) != SQLITE_OK)
			_exit(3);
		kill(getpid(), SIGKILL);
		_exit(4);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	          "the writer must die by SIGKILL after its statements; status %#x (exit 3: SQLite "
	          "refused \"%s\")",
	          status, statements);
}

/* Makes a WAL database (make_db()) and returns a connection that keeps one
 * insert in its WAL, still open. */
static sqlite3 *open_with_wal(const char *path)
{
	sqlite3 *db;
	make_db(path, "WAL");
	db = sqlite_open(path);
	sqlite_exec(db, "PRAGMA wal_autocheckpoint=0; INSERT INTO t VALUES (2);");
	return db;
}

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to give files to uid %d", NOBODY);
}

/* ---- kinds ---- */

struct kind_case {
	char name[16];
	unsigned char head[32];
	size_t len;
	char says[48];
};

ParameterizedTestParameters(doctor, kind_of_a_healthy_file)
{
	static struct kind_case cases[] = {
		{ "rollback.db", "SQLite format 3\0\x10\0\1\1", 20, "kind      SQLite, rollback journal" },
		{ "wal.db", "SQLite format 3\0\x10\0\2\2", 20, "kind      SQLite, WAL mode" },
		{ "d.duckdb", "\0\0\0\0\0\0\0\0DUCK", 12, "kind      DuckDB" },
		{ "notes.txt", "hello, world\n", 13, "kind      plain file" },
		{ "empty.db", "", 0, "kind      empty file" },
	};
	return cr_make_param_array(struct kind_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct kind_case *c, doctor, kind_of_a_healthy_file)
{
	const char *path = in_dir(c->name);
	write_file(path, c->head, c->len);
	assert_verdict(doctor_on(path, NULL, 0, 0), 0,
	               "a lone %s with no side files is healthy", c->name);
	assert_says(c->says, "the kind comes from the first bytes");
	assert_says("verdict: healthy", "nothing is wrong");
}

Test(doctor, healthy_sqlite_after_clean_close)
{
	const char *db = in_dir("ok.db");
	make_db(db, "WAL");
	assert_verdict(doctor_on(db, NULL, 0, 0), 0, "a cleanly closed database is healthy");
	assert_says("kind      SQLite, WAL mode", "the database is in WAL mode");
	assert_says("locking   flock(2)", "a local filesystem: leases are kernel locks too");
	assert_says("-wal      absent", "SQLite deletes the WAL on a clean close");
	assert_says("Processes with the file open\n  none", "nobody has it open");
	assert_says("broker not running", "broker_up was 0");
	assert_says("nothing: the file looks healthy.", "there is nothing to do");
	assert_says("verdict: healthy", "nothing is wrong");
}

/* ---- leftovers after crashes ---- */

Test(doctor, leftover_wal_after_sigkill)
{
	const char *db = in_dir("crashed.db");
	struct doctor_lease lease = { "write", 4242, "pipeline", 17 };
	make_db(db, "WAL");
	kill_writer_after(db, "PRAGMA wal_autocheckpoint=0;"
	                      "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);");
	cr_assert_gt(file_size(in_dir("crashed.db-wal")), 0, "the killed writer must leave its WAL");

	assert_verdict(doctor_on(db, NULL, 0, 0), 1, "a leftover WAL is one problem");
	assert_says("leftover WAL", "nobody holds the file and the WAL has commits");
	assert_says("2 committed\n     transaction(s)", "the writer committed two inserts");
	assert_says("Do NOT delete", "deleting the WAL loses committed data");
	assert_says("coordctl checkpoint '", "the fix is to replay it");
	assert_says("verdict: 1 problem(s)", "there is exactly one problem");

	assert_verdict(doctor_on(db, &lease, 1, 1), 0,
	               "with a broker lease on the file the WAL is in use");
	assert_not_says("leftover WAL", "a lease holder may be about to use it");
	assert_says("write  pid 4242    pipeline        token 17", "the lease is listed");

	/* The advice works: opening the database replays the WAL. */
	cr_assert_eq(count_rows(db), 3, "both inserts must come back from the WAL");
	assert_verdict(doctor_on(db, NULL, 0, 0), 0, "after the replay the file is healthy");
}

Test(doctor, persistent_wal_with_nothing_new_is_healthy)
{
	const char *db = in_dir("persist.db");
	sqlite3 *h;
	int persist = 1;
	make_db(db, "WAL");
	h = sqlite_open(db);
	cr_assert_eq(sqlite3_file_control(h, "main", SQLITE_FCNTL_PERSIST_WAL, &persist), SQLITE_OK,
	             "SQLITE_FCNTL_PERSIST_WAL");
	sqlite_exec(h, "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);");
	cr_assert_eq(sqlite3_close(h), SQLITE_OK, "close");
	cr_assert_gt(file_size(in_dir("persist.db-wal")), 0, "a persistent WAL stays after close");

	assert_verdict(doctor_on(db, NULL, 0, 0), 0,
	               "a WAL whose commits were all copied is healthy");
	assert_says("2 committed transaction(s), all already", "the -shm says they were copied");
	assert_not_says("leftover WAL", "there is nothing to replay");
}

Test(doctor, torn_wal_tail_is_not_counted)
{
	const char *db = in_dir("torn.db"), *wal = in_dir("torn.db-wal");
	unsigned char b[4];
	uint32_t page_size;
	off_t second_page;
	int fd;
	make_db(db, "WAL");
	kill_writer_after(db, "PRAGMA wal_autocheckpoint=0;"
	                      "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);");
	/* Spoil a byte of the second transaction's page, as a torn write would:
	 * its checksum no longer holds, so SQLite drops it on recovery. */
	fd = open(wal, O_RDWR | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", wal, strerror(errno));
	cr_assert_eq(pread(fd, b, 4, 8), 4, "read the WAL's page size");
	page_size = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
	second_page = 32 + (off_t)(24 + page_size) + 24;
	cr_assert_eq(pread(fd, b, 1, second_page + 100), 1, "read the second frame");
	b[0] ^= 0xff;
	cr_assert_eq(pwrite(fd, b, 1, second_page + 100), 1, "spoil the second frame");
	close(fd);

	assert_verdict(doctor_on(db, NULL, 0, 0), 1, "the first transaction is still a leftover");
	assert_says("holds 1 committed\n     transaction(s)", "only the intact transaction counts");
	cr_assert_eq(count_rows(db), 2, "SQLite must agree: one insert survives the torn tail");
}

Test(doctor, restarted_wal_counts_only_its_new_cycle)
{
	const char *db = in_dir("cycle.db");
	make_db(db, "WAL");
	/* After a full checkpoint the next write starts the WAL over with new
	 * salts; the frames of the old cycle stay in the file behind it. */
	kill_writer_after(db, "PRAGMA wal_autocheckpoint=0;"
	                      "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);"
	                      "PRAGMA wal_checkpoint(PASSIVE); INSERT INTO t VALUES (4);");

	assert_verdict(doctor_on(db, NULL, 0, 0), 1, "the new cycle's transaction is a leftover");
	assert_says("holds 1 committed\n     transaction(s)", "old-cycle frames are not counted");
	cr_assert_eq(count_rows(db), 4, "SQLite must agree: all four rows are there");
}

Test(doctor, persisted_journal_with_zeroed_header_is_healthy)
{
	const char *db = in_dir("persist.db");
	sqlite3 *h;
	make_db(db, "PERSIST");
	h = sqlite_open(db);
	sqlite_exec(h, "PRAGMA journal_mode=PERSIST; INSERT INTO t VALUES (2);");
	cr_assert_eq(sqlite3_close(h), SQLITE_OK, "close");
	cr_assert_gt(file_size(in_dir("persist.db-journal")), 0, "PERSIST keeps the journal");

	assert_verdict(doctor_on(db, NULL, 0, 0), 0, "a committed PERSIST journal is healthy");
	assert_says("header zeroed: nothing to roll back", "SQLite zeroes the header on commit");
	assert_not_says("hot journal", "there is nothing to roll back");
}

Test(doctor, hot_journal_after_sigkill)
{
	const char *db = in_dir("rollback.db");
	make_db(db, "DELETE");
	/* A transaction too big for a 10-page cache spills into the database
	 * file before COMMIT, which makes the journal hot. */
	kill_writer_after(db, "PRAGMA cache_size=10; BEGIN;"
	                      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
	                      " WHERE i < 2000) INSERT INTO t SELECT randomblob(1000) FROM n;");
	cr_assert_gt(file_size(in_dir("rollback.db-journal")), 0, "the writer must leave its journal");

	assert_verdict(doctor_on(db, NULL, 0, 0), 1, "a hot journal is one problem");
	assert_says("kind      SQLite, rollback journal", "the database is in rollback mode");
	assert_says("hot journal", "the journal holds a cut-short write");
	assert_says("Do NOT delete", "deleting a hot journal can corrupt the database");
	assert_says("PRAGMA quick_check;", "opening the database rolls it back");

	cr_assert_eq(count_rows(db), 1, "opening the database must roll the insert back");
	assert_verdict(doctor_on(db, NULL, 0, 0), 0, "after the rollback the file is healthy");
}

Test(doctor, duckdb_leftover_wal)
{
	const char *db = in_dir("d.duckdb");
	char head[4096] = { 0 };
	memcpy(head + 8, "DUCK", 4);
	write_file(db, head, sizeof head);
	write_file(in_dir("d.duckdb.wal"), head, 100);

	assert_verdict(doctor_on(db, NULL, 0, 0), 1, "a leftover DuckDB WAL is one problem");
	assert_says("kind      DuckDB", "bytes 8..11 are DUCK");
	assert_says(".wal      100 bytes", "the .wal is listed with its size");
	assert_says("leftover WAL", "nobody holds the file and the .wal is not empty");
	assert_says("duckdb '", "DuckDB replays its WAL on open");
}

/* ---- processes ---- */

Test(doctor, live_connection_is_listed_and_not_leftover)
{
	const char *db = in_dir("live.db");
	char self[64];
	sqlite3 *h = open_with_wal(db);
	int rc;

	rc = doctor_on(db, NULL, 0, 1);
	sqlite3_close(h);
	assert_verdict(rc, 0, "a WAL in use by a live connection is healthy");
	snprintf(self, sizeof self, "pid %-7ld", (long)getpid());
	assert_says(self, "this process has the database open");
	assert_says("(this process)", "doctor marks its own process");
	assert_says("-wal, fd", "the connection has the WAL open too");
	assert_says("1 committed transaction(s) in 1 frame(s)", "the insert is in the WAL");
	assert_not_says("leftover WAL", "its connection is alive");
	assert_says("Broker leases\n  none", "broker_up was 1 and there are no leases");
}

Test(doctor, holder_through_a_hard_link_is_found)
{
	const char *db = in_dir("app.db"), *sub = in_dir("elsewhere"),
	           *other = in_dir("elsewhere/app.db");
	char self[64];
	int fd, rc;
	make_db(db, "WAL");
	kill_writer_after(db, "PRAGMA wal_autocheckpoint=0; INSERT INTO t VALUES (2);");
	cr_assert_eq(mkdir(sub, 0755), 0, "mkdir %s: %s", sub, strerror(errno));
	cr_assert_eq(link(db, other), 0, "link %s: %s", other, strerror(errno));
	fd = open(other, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", other, strerror(errno));

	rc = doctor_on(db, NULL, 0, 0);
	close(fd);
	assert_verdict(rc, 0, "a WAL whose database is open under another name is in use");
	snprintf(self, sizeof self, "pid %-7ld", (long)getpid());
	assert_says(self, "this process has the database open through the link");
	assert_not_says("leftover WAL", "the file is open, under another path");
}

Test(doctor, wal_deleted_while_open)
{
	const char *db = in_dir("victim.db");
	char copy[64];
	sqlite3 *h = open_with_wal(db);
	int rc;
	cr_assert_eq(unlink(in_dir("victim.db-wal")), 0, "rm the WAL under the connection");

	rc = doctor_on(db, NULL, 0, 0);
	sqlite3_close(h);
	assert_verdict(rc, 1, "a WAL deleted under a live connection is one problem");
	assert_says("deleted while open", "the connection writes to a deleted WAL");
	snprintf(copy, sizeof copy, "cp /proc/%ld/fd/", (long)getpid());
	assert_says(copy, "its copy can still be saved through /proc");
}

/* ---- text from elsewhere ---- */

/* An ESC sequence, a byte that is not UTF-8 and a newline in a file name,
 * in this process's name (which doctor reads from /proc; 9 bytes, within
 * the 15 of a comm) and in the command name the broker reports. */
static const char hostile_name[] = "bad\x1b[31m\xff\nname.db";
static const char hostile_comm[] = "c\x1b]0;x\x07\xff\n";
static const char hostile_command[] = "cmd\x1b[2J\xfe\r";

/* What bash makes of `word` as one word: the output of `printf %s WORD`,
 * into out (size bytes, terminated). */
static void bash_word(const char *word, char *out, size_t size)
{
	char *cmd = NULL;
	size_t n = 0;
	ssize_t r;
	int p[2], status;
	pid_t pid;
	cr_assert(asprintf(&cmd, "printf %%s %s", word) > 0, "asprintf");
	cr_assert_eq(pipe(p), 0, "pipe: %s", strerror(errno));
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execlp("bash", "bash", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (n + 1 < size && (r = read(p[0], out + n, size - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = 0;
	close(p[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	          "bash -c '%s' failed (status %#x; 127: no bash on PATH)", cmd, status);
	free(cmd);
}

Test(doctor, hostile_names_are_shown_escaped)
{
	const char *db = in_dir(hostile_name);
	struct doctor_lease lease = { "write", 4242, hostile_command, 17 };
	char path[512], save[600], prefix[64], word[2048], got[600];
	const char *at, *end;
	int fd, rc;
	snprintf(path, sizeof path, "%s", db);
	write_file(path, "hello\n", 6);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open the hostile file: %s", strerror(errno));
	/* replaced under the open fd: the report names the process and gives
	 * a cp command with the (hostile) path to save its copy to */
	cr_assert_eq(unlink(path), 0, "unlink: %s", strerror(errno));
	write_file(path, "hello\n", 6);
	cr_assert_eq(prctl(PR_SET_NAME, hostile_comm), 0, "PR_SET_NAME: %s", strerror(errno));

	rc = doctor_on(path, &lease, 1, 1);
	close(fd);
	assert_verdict(rc, 1, "a file replaced while this process has it open is one problem");
	for (const unsigned char *p = (const unsigned char *)report; *p; p++)
		cr_assert(*p == '\n' || (*p >= 0x20 && *p < 0x7f),
		          "the report must write no control byte and (outside a UTF-8 locale) no\n"
		          "byte above 0x7e; byte 0x%02x at %zu of:\n%s",
		          *p, (size_t)(p - (const unsigned char *)report), report);
	assert_says("bad\\x1b[31m\\xff\\nname.db", "the file name is shown with visible escapes");
	assert_says("c\\x1b]0;x\\x07\\xff\\n", "the process name from /proc is shown escaped");
	assert_says("cmd\\x1b[2J\\xfe\\r", "the broker's command name is shown escaped");
	assert_says("deleted while open: pid", "this process uses the replaced file");

	/* The suggested command still names the file: bash reads the quoted
	 * word back to the exact bytes. */
	snprintf(save, sizeof save, "%s.pid%ld", path, (long)getpid());
	snprintf(prefix, sizeof prefix, "cp /proc/%ld/fd/%d ", (long)getpid(), fd);
	at = strstr(report, prefix);
	cr_assert(at, "the report must give `%s...`:\n%s", prefix, report);
	at += strlen(prefix);
	end = strchr(at, '\n');
	cr_assert(end && (size_t)(end - at) < sizeof word, "the cp line must end:\n%s", report);
	snprintf(word, sizeof word, "%.*s", (int)(end - at), at);
	cr_assert(!strncmp(word, "$'", 2), "a name with control bytes is quoted as $'...': %s", word);
	bash_word(word, got, sizeof got);
	cr_assert_str_eq(got, save, "bash must read %s back as the path to save to", word);
}

/* ---- owners and permissions ---- */

Test(doctor, wal_owned_by_another_user)
{
	const char *db = in_dir("owned.db"), *wal = in_dir("owned.db-wal");
	char fixcmd[600];
	int fd;
	need_root();
	make_db(db, "WAL");
	cr_assert_eq(chmod(db, 0644), 0, "chmod the database");
	fd = open(wal, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "create %s: %s", wal, strerror(errno));
	cr_assert_eq(fchown(fd, NOBODY, NOBODY), 0, "chown the WAL: %s", strerror(errno));
	cr_assert_eq(fchmod(fd, 0600), 0, "chmod the WAL: %s", strerror(errno));
	close(fd);

	assert_verdict(doctor_on(db, NULL, 0, 0), 1,
	               "a side file with the wrong owner is a problem");
	assert_says("-wal owner differs", "the WAL belongs to uid 65534, the database to root");
	assert_says("-wal mode differs: 0600", "the WAL is 0600, the database 0644");
	assert_says("disk I/O error", "the admin must recognise the symptom");
	snprintf(fixcmd, sizeof fixcmd, "chown root:root '%s'", wal);
	assert_says(fixcmd, "the fix gives the WAL the database's owner");
	snprintf(fixcmd, sizeof fixcmd, "chmod 0644 '%s'", wal);
	assert_says(fixcmd, "the fix gives the WAL the database's mode");
	assert_says("verdict: 2 problem(s)", "owner and mode are two problems");
}

/* A leftover WAL that another user owns: the checkpoint that replays it
 * needs the WAL to be the database's first, so the chown comes first. */
Test(doctor, chown_comes_before_the_checkpoint_that_needs_it)
{
	const char *db = in_dir("both.db"), *wal = in_dir("both.db-wal");
	char fixcmd[600];
	const char *chown_at, *checkpoint_at;
	need_root();
	make_db(db, "WAL");
	kill_writer_after(db, "PRAGMA wal_autocheckpoint=0; INSERT INTO t VALUES (2);");
	cr_assert_gt(file_size(wal), 0, "the killed writer must leave its WAL");
	cr_assert_eq(chown(wal, NOBODY, NOBODY), 0, "chown the WAL: %s", strerror(errno));

	assert_verdict(doctor_on(db, NULL, 0, 0), 1, "a leftover WAL of another owner is a problem");
	assert_says("leftover WAL", "the WAL has a commit and nobody holds the file");
	assert_says("-wal owner differs", "the WAL belongs to uid 65534");
	snprintf(fixcmd, sizeof fixcmd, "chown root:root '%s'", wal);
	chown_at = strstr(report, fixcmd);
	checkpoint_at = strstr(report, "coordctl checkpoint '");
	cr_assert(chown_at && checkpoint_at, "the report must give both fixes:\n%s", report);
	cr_assert_lt(chown_at, checkpoint_at,
	             "`%s` must come before the `coordctl checkpoint` that needs it:\n%s", fixcmd,
	             report);
	assert_says("after the fixes above", "the checkpoint's fix says to do the others first");
}

Test(doctor, wal_not_writable_by_the_databases_user)
{
	const char *db = in_dir("app.db"), *wal = in_dir("app.db-wal");
	need_root();
	make_db(db, "WAL");
	write_file(wal, "", 0); /* root's and 0644: uid 65534 may not write it */
	cr_assert_eq(chown(dir, NOBODY, NOBODY), 0, "chown the directory");
	cr_assert_eq(chmod(dir, 0755), 0, "chmod the directory");
	cr_assert_eq(chown(db, NOBODY, NOBODY), 0, "chown the database");

	assert_verdict(doctor_as_nobody(db), 1,
	               "a WAL the database's user cannot write is a problem");
	assert_says("-wal not writable by you", "uid 65534 writes the database but not the WAL");
	assert_says("-wal owner differs", "the WAL is root's");
	assert_not_says("directory not writable", "uid 65534 owns the directory");
}

Test(doctor, directory_not_writable_by_the_databases_user)
{
	const char *db = in_dir("app.db");
	need_root();
	make_db(db, "WAL");
	cr_assert_eq(chmod(dir, 0755), 0, "chmod the directory");
	cr_assert_eq(chown(db, NOBODY, NOBODY), 0, "chown the database");

	assert_verdict(doctor_as_nobody(db), 1,
	               "a directory the database's user cannot write is a problem");
	assert_says("directory not writable by you", "SQLite must create its -wal there");
	assert_says("unable to open database file", "the admin must recognise the symptom");
	assert_says("chmod g+rwx '", "the fix opens the directory to the group");
}

/* ---- cannot inspect ---- */

struct bad_path_case {
	char name[16];
	int make_dir;
	char says[32];
};

ParameterizedTestParameters(doctor, cannot_inspect)
{
	static struct bad_path_case cases[] = {
		{ "missing.db", 0, "No such file or directory" },
		{ "folder.db", 1, "not a regular file" },
	};
	return cr_make_param_array(struct bad_path_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_path_case *c, doctor, cannot_inspect)
{
	const char *path = in_dir(c->name);
	if (c->make_dir)
		cr_assert_eq(mkdir(path, 0755), 0, "mkdir %s", path);
	assert_verdict(doctor_on(path, NULL, 0, 0), 2, "%s cannot be inspected (2)", c->name);
	assert_says(c->says, "the report says why");
	assert_says("verdict: cannot inspect", "the verdict line is always there");
}
