/* The kernel lock behind every lease on a file: flock(2) on the file,
 * taken by the library after the broker grants.  These tests take away
 * what the broker knows (SIGKILL it and start a new one; SIGKILL the
 * `coordctl run` wrapper of a command whose child lives on) and check
 * that no second writer gets the file all the same.  They also check the
 * hazard the design must avoid: the library never closes a descriptor of
 * a file the process may have open in SQLite, since that would drop
 * SQLite's POSIX locks. */
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
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbutil.h"
#include "harness.h"

HARNESS_SUITE(kernel_lock, 60);

static coord_t *connect_ok(void)
{
	coord_t *c;
	int rc = coord_connect(&c, NULL);
	cr_assert_eq(rc, 0, "coord_connect to %s failed: %s", h.dir, coord_strerror(rc));
	return c;
}

/* 1 if another open file description can take `op` on path right now. */
static int kernel_lock_free(const char *path, int op)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ok;
	cr_assert(fd >= 0, "cannot open %s", path);
	ok = flock(fd, op | LOCK_NB) == 0;
	close(fd);
	return ok;
}

Test(kernel_lock, a_lease_on_a_file_holds_flock_until_release)
{
	const char *db = harness_path(&h, "held.db");
	coord_t *c = connect_ok();
	coord_lease_t *w, *r1, *r2;
	write_file(db, "x", 1);

	cr_assert_eq(coord_acquire(c, db, COORD_WRITE, -1, NULL, &w), 0, "write on an idle file");
	cr_assert_geq(coord_lease_fd(w), 0, "a lease on an existing file must carry a kernel lock");
	cr_assert(!kernel_lock_free(db, LOCK_SH),
	          "while a write lease is held, the file must be flock()ed exclusively");
	coord_release(w);
	cr_assert(kernel_lock_free(db, LOCK_EX), "a release must drop the kernel lock");
	cr_assert_eq(coord_lease_fd(w), -1, "a released handle has no kernel lock");

	/* nested reads of one connection share one shared lock */
	cr_assert_eq(coord_acquire(c, db, COORD_READ, -1, NULL, &r1), 0, "first read");
	cr_assert_eq(coord_acquire(c, db, COORD_READ, -1, NULL, &r2), 0, "nested read");
	cr_assert(kernel_lock_free(db, LOCK_SH), "readers must hold the file shared, not exclusive");
	coord_release(r1);
	cr_assert(!kernel_lock_free(db, LOCK_EX),
	          "releasing one of two nested reads dropped the kernel lock of the other");
	coord_release(r2);
	cr_assert(kernel_lock_free(db, LOCK_EX), "the last read's release must drop the kernel lock");

	cr_assert_eq(coord_acquire(c, "key:plain-key", COORD_WRITE, -1, NULL, &w), 0, "write on a key");
	cr_assert_geq(coord_lease_fd(w), 0, "a key's lease must be a kernel lock too");
	cr_assert(!kernel_lock_free(harness_path(&h, "keys/k-plain-key"), LOCK_SH),
	          "a key's write lease must hold its lock file under DIR/keys exclusively");
	coord_release(w);
	cr_assert(kernel_lock_free(harness_path(&h, "keys/k-plain-key"), LOCK_EX),
	          "the key's release must drop its kernel lock");
	coord_disconnect(c);
}

/* The broker dies under a writer and its lease records are lost with it
 * (leases.mdb removed), so the new one starts with an empty table: it
 * grants the next writer, but the kernel lock keeps that writer out until
 * the first one lets go: on a file, and on a key (its lock file). */
struct restart_case {
	int key;
};

ParameterizedTestParameters(kernel_lock, broker_restart_never_lets_a_second_writer_in)
{
	static struct restart_case cases[] = { { 0 }, { 1 } };
	return cr_make_param_array(struct restart_case, cases, 2);
}

ParameterizedTest(struct restart_case *rc, kernel_lock, broker_restart_never_lets_a_second_writer_in)
{
	const char *db = rc->key ? "key:restart-key" : harness_path(&h, "restart.db");
	struct actor a, b;
	const char *r;
	if (!rc->key)
		write_file(db, "x", 1);

	actor_start(&a, &h);
	actor_send(&a, "acquire write -1 %s", db);
	r = actor_reply(&a, 5000);
	cr_assert(!strncmp(r, "ok", 2), "first writer: '%s'", r);

	harness_kill_broker(&h);
	cr_assert_eq(unlink(harness_path(&h, "leases.mdb")), 0, "remove leases.mdb: %s",
	             strerror(errno));
	unlink(harness_path(&h, "leases.mdb-lock"));
	harness_start_broker(&h, NULL);

	actor_start(&b, &h);
	actor_send(&b, "acquire write 300 %s", db);
	r = actor_reply(&b, 10000);
	cr_assert_str_eq(r, "err COORD_ETIMEDOUT",
	                 "after a broker restart a second writer got the file while the first "
	                 "still held it (reply '%s')", r);
	cr_assert_eq(harness_count(&h, db, 0, 0), 0,
	             "a writer that timed out on the kernel lock must give the broker's lease back");

	actor_send(&b, "acquire write -1 %s", db);
	cr_assert(!actor_has_reply(&b) || strncmp(actor_reply(&b, 0), "ok", 2),
	          "the second writer was let in while the first still held the file");
	actor_send(&a, "release");
	r = actor_reply(&a, 5000);
	cr_assert_str_eq(r, "err COORD_ELOST",
	                 "the new broker never knew the first writer's lease: '%s'", r);
	r = actor_reply(&b, 10000);
	cr_assert(!strncmp(r, "ok", 2), "once the first writer let go, the second must get in: '%s'",
	          r);
	actor_stop(&a);
	actor_stop(&b);
}

static int gone(void *pid)
{
	return kill(*(pid_t *)pid, 0) < 0;
}

/* `coordctl run --write db -- sh -c 'child & ...'`: SIGKILL coordctl, and
 * its command dies with it (PDEATHSIG), but the command's own child lives
 * on.  It inherited the kernel lock, so the next writer waits for it.  The
 * child reads a pipe whose other end only this test holds, so it ends
 * with the test even if an assertion fails first. */
Test(kernel_lock, orphaned_child_of_coordctl_run_keeps_the_file)
{
	const char *db = harness_path(&h, "run.db");
	char pidfile[512], cmd[1600];
	int life[2];
	pid_t ctl, orphan;
	struct actor b;
	const char *r;
	write_file(db, "x", 1);
	snprintf(pidfile, sizeof pidfile, "%s", harness_path(&h, "orphan.pid"));
	actor_start(&b, &h); /* before the pipe, so that it holds no end of it */
	cr_assert(pipe2(life, O_CLOEXEC) == 0, "pipe");

	ctl = fork();
	cr_assert(ctl >= 0, "fork");
	if (ctl == 0) {
		dup2(life[0], 5); /* dup2 clears close-on-exec */
		snprintf(cmd, sizeof cmd, "cat <&5 >/dev/null & echo $! > '%s'; wait", pidfile);
		execl(getenv("COORD_TEST_COORDCTL"), "coordctl", "run", "--write", db, "--", "sh", "-c",
		      cmd, (char *)NULL);
		_exit(127);
	}
	cr_assert(harness_wait(harness_pid_in_file, pidfile, 10000),
	          "coordctl run did not start its command (no %s)", pidfile);
	orphan = harness_pid_in_file(pidfile);
	close(life[0]);
	kill(ctl, SIGKILL);
	waitpid(ctl, NULL, 0);
	cr_assert(harness_wait_count(&h, db, 0, 0, 0),
	          "the broker must reclaim the lease of the SIGKILLed coordctl");

	actor_send(&b, "acquire write 300 %s", db);
	r = actor_reply(&b, 10000);
	cr_assert_str_eq(r, "err COORD_ETIMEDOUT",
	                 "the next writer got the file while the orphaned child (pid %d) of the "
	                 "killed command could still write it (reply '%s')", (int)orphan, r);
	close(life[1]); /* the orphan reads end-of-file and exits */
	cr_assert(harness_wait(gone, &orphan, 10000), "the orphan %d did not exit", (int)orphan);
	actor_send(&b, "acquire write 5000 %s", db);
	r = actor_reply(&b, 10000);
	cr_assert(!strncmp(r, "ok", 2), "with the orphan gone the next writer must get in: '%s'", r);
	actor_stop(&b);
}

/* Closing any descriptor of a file drops the process's POSIX locks on it.
 * A SQLite write transaction open across an acquire and a release must
 * keep its lock: another process still cannot start writing. */
Test(kernel_lock, sqlite_locks_survive_acquire_and_release)
{
	const char *db = harness_path(&h, "posix.db");
	sqlite3 *mine = sqlite_open(db);
	coord_t *c = connect_ok();
	coord_lease_t *l;
	char cmd[1200], said[512];
	FILE *out;
	size_t n;
	int status;

	/* A rollback journal: its write lock (RESERVED) is a POSIX lock on the
	 * database file itself, the one a close() would drop. */
	sqlite_exec(mine, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x);");
	sqlite_exec(mine, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1);");
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(coord_acquire(c, db, i == 1 ? COORD_READ : COORD_WRITE, -1, NULL, &l), 0,
		             "acquire %d", i);
		coord_release(l);
	}
	/* A fresh process (exec, not a fork: a forked child would inherit this
	 * process's SQLite lock bookkeeping and never ask the kernel). */
	snprintf(cmd, sizeof cmd, "sqlite3 -cmd '.timeout 0' '%s' 'BEGIN IMMEDIATE;' 2>&1", db);
	out = popen(cmd, "r");
	cr_assert(out, "popen(%s)", cmd);
	n = fread(said, 1, sizeof said - 1, out);
	said[n] = 0;
	status = pclose(out);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0 && strstr(said, "locked"),
	          "another process could start writing while this one is inside a SQLite write "
	          "transaction: the library closed a descriptor of the database and so dropped "
	          "SQLite's POSIX locks (sqlite3 said '%s', status 0x%x)", said, status);
	sqlite_exec(mine, "COMMIT");
	sqlite3_close(mine);
	coord_disconnect(c);
}
