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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

/* `coordctl run --write db -- sh -c 'child & ...'`, then SIGKILL coordctl:
 * its command dies with it (PDEATHSIG), but the command's own child lives
 * on with the kernel lock it inherited.  The child reads a pipe whose
 * other end only the test holds (*life, close it to end the child), so it
 * ends with the test even if an assertion fails first.  Start actors
 * before, so that they hold no end of the pipe.  Returns the orphan's pid,
 * and the killed coordctl's in *ctl_pid, once the broker has reclaimed
 * coordctl's lease. */
static pid_t orphan_of_killed_coordctl_run(const char *db, const char *pidfile, pid_t *ctl_pid,
                                           int *life)
{
	char cmd[1600];
	int p[2];
	pid_t ctl, orphan;
	cr_assert(pipe2(p, O_CLOEXEC) == 0, "pipe");
	ctl = fork();
	cr_assert(ctl >= 0, "fork");
	if (ctl == 0) {
		dup2(p[0], 5); /* dup2 clears close-on-exec */
		snprintf(cmd, sizeof cmd, "cat <&5 >/dev/null & echo $! > '%s'; wait", pidfile);
		execl(getenv("COORD_TEST_COORDCTL"), "coordctl", "run", "--write", db, "--", "sh", "-c",
		      cmd, (char *)NULL);
		_exit(127);
	}
	cr_assert(harness_wait(harness_pid_in_file, (void *)pidfile, 10000),
	          "coordctl run did not start its command (no %s)", pidfile);
	orphan = harness_pid_in_file((void *)pidfile);
	close(p[0]);
	kill(ctl, SIGKILL);
	waitpid(ctl, NULL, 0);
	cr_assert(harness_wait_count(&h, db, 0, 0, 0),
	          "the broker must reclaim the lease of the SIGKILLed coordctl");
	*ctl_pid = ctl;
	*life = p[1];
	return orphan;
}

Test(kernel_lock, orphaned_child_of_coordctl_run_keeps_the_file)
{
	const char *db = harness_path(&h, "run.db");
	char pidfile[512];
	int life;
	pid_t ctl, orphan;
	struct actor b;
	const char *r;
	write_file(db, "x", 1);
	snprintf(pidfile, sizeof pidfile, "%s", harness_path(&h, "orphan.pid"));
	actor_start(&b, &h); /* before the pipe, so that it holds no end of it */
	orphan = orphan_of_killed_coordctl_run(db, pidfile, &ctl, &life);

	actor_send(&b, "acquire write 300 %s", db);
	r = actor_reply(&b, 10000);
	cr_assert_str_eq(r, "err COORD_ETIMEDOUT",
	                 "the next writer got the file while the orphaned child (pid %d) of the "
	                 "killed command could still write it (reply '%s')", (int)orphan, r);
	close(life); /* the orphan reads end-of-file and exits */
	cr_assert(harness_wait(gone, &orphan, 10000), "the orphan %d did not exit", (int)orphan);
	actor_send(&b, "acquire write 5000 %s", db);
	r = actor_reply(&b, 10000);
	cr_assert(!strncmp(r, "ok", 2), "with the orphan gone the next writer must get in: '%s'", r);
	actor_stop(&b);
}

/* ---- coordctl list: a grant that waits for an outside holder ---- */

/* A process outside the broker, named "outsider", that holds path
 * flock()ed exclusively (creating the file) until *life is closed.
 * Returns its pid once it holds the lock. */
static pid_t outsider_start(const char *path, int *life)
{
	int ready[2], p[2];
	pid_t pid;
	char c;
	cr_assert(pipe2(ready, O_CLOEXEC) == 0 && pipe2(p, O_CLOEXEC) == 0, "pipe");
	pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) {
		int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
		close(ready[0]);
		close(p[1]);
		prctl(PR_SET_NAME, "outsider");
		if (fd < 0 || flock(fd, LOCK_EX) < 0 || write(ready[1], "l", 1) != 1)
			_exit(1);
		while (read(p[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(ready[1]);
	close(p[0]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the outside process could not flock %s", path);
	close(ready[0]);
	*life = p[1];
	return pid;
}

/* What `coordctl list` says of resource: its line(s), into buf. */
static void list_lines_of(const char *resource, char *buf, size_t size)
{
	char out[8192], *line, *save = NULL;
	size_t n = 0;
	harness_coordctl(out, sizeof out, "list");
	buf[0] = 0;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strstr(line, resource))
			continue;
		n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s\n", line);
	}
}

struct expected_note {
	const char *resource;
	char note[256];
};

static int list_shows_note(void *arg)
{
	struct expected_note *e = arg;
	char lines[4096];
	list_lines_of(e->resource, lines, sizeof lines);
	return strstr(lines, e->note) != NULL;
}

/* `coordctl list --json`'s "kernel_lock_holder" of resource's lease, as
 * "pid=N comm=C locked_by=P holders=[...]" or "null", parsed by Python's
 * json module (so the output must be valid JSON). */
static void json_kernel_lock_holder(const char *resource, char *buf, size_t size)
{
	harness_coordctl(buf, size,
	                 "list --json | python3 -c '"
	                 "import json, sys\n"
	                 "d = json.load(sys.stdin)\n"
	                 "l = [x for x in d[\"leases\"] if x[\"resource\"] == sys.argv[1]]\n"
	                 "k = l[0][\"kernel_lock_holder\"] if l else \"no lease\"\n"
	                 "print(\"null\" if k is None else k if isinstance(k, str) else "
	                 "\"pid=%%d comm=%%s locked_by=%%d holders=%%s\" %% (k[\"pid\"], k[\"comm\"], "
	                 "k[\"locked_by\"], [h[\"pid\"] for h in k[\"holders\"]]), end=\"\")"
	                 "' '%s'",
	                 resource);
}

/* The kernel_wait coord_list() gives the first holder of resource, or -1
 * when it has none. */
static int kernel_wait_of(const char *resource)
{
	coord_t *c;
	coord_lease_info_t *v = NULL;
	size_t n = 0;
	int got = -1;
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect to list");
	cr_assert_eq(coord_list(c, &v, &n), 0, "coord_list");
	for (size_t i = 0; i < n && got < 0; i++)
		if (!v[i].waiting && !strcmp(v[i].resource, resource))
			got = v[i].kernel_wait;
	coord_free(v);
	coord_disconnect(c);
	return got;
}

static int kernel_waits(void *resource)
{
	return kernel_wait_of(resource) == COORD_KERNEL_WAITING;
}

struct outside_case {
	int key;
};

ParameterizedTestParameters(kernel_lock, list_names_the_outside_holder_a_grant_waits_for)
{
	static struct outside_case cases[] = { { 0 }, { 1 } };
	return cr_make_param_array(struct outside_case, cases, 2);
}

/* A process that never asked the broker holds the file (or the key's lock
 * file) flock()ed: the broker grants a writer, which then waits for the
 * kernel lock.  `coordctl list`, `list --json` and `show` name the
 * outside process until it lets go; then the writer gets in and the note
 * goes. */
ParameterizedTest(struct outside_case *oc, kernel_lock,
                  list_names_the_outside_holder_a_grant_waits_for)
{
	const char *res = oc->key ? "key:outside-key" : harness_path(&h, "outside.db");
	const char *lockfile = oc->key ? harness_path(&h, "keys/k-outside-key") : res;
	struct expected_note e = { .resource = res };
	char json[1024], want[256], out[8192], lines[4096];
	struct actor b;
	pid_t outsider;
	const char *r;
	int life;
	if (oc->key)
		cr_assert(mkdir(harness_path(&h, "keys"), 0700) == 0 || errno == EEXIST, "mkdir keys");
	actor_start(&b, &h); /* before the pipes, so that it holds no end of them */
	outsider = outsider_start(lockfile, &life);

	actor_send(&b, "acquire write 30000 %s", res);
	snprintf(e.note, sizeof e.note,
	         "(waiting for kernel lock held by pid %d (outsider), outside this broker)",
	         (int)outsider);
	cr_assert(harness_wait(list_shows_note, &e, 10000),
	          "coordctl list must mark the writer granted by the broker as waiting for the "
	          "kernel lock of pid %d (it said:\n%s)", (int)outsider,
	          (list_lines_of(res, lines, sizeof lines), lines));
	json_kernel_lock_holder(res, json, sizeof json);
	snprintf(want, sizeof want, "pid=%d comm=outsider locked_by=%d holders=[%d]", (int)outsider,
	         (int)outsider, (int)outsider);
	cr_assert_str_eq(json, want, "list --json must name the outside holder in kernel_lock_holder");
	harness_coordctl(out, sizeof out, "show '%s'", res);
	cr_assert(strstr(out, e.note), "coordctl show %s must carry the same note:\n%s", res, out);
	cr_assert(!actor_has_reply(&b), "the writer got in while pid %d held the file: '%s'",
	          (int)outsider, actor_reply(&b, 0));
	/* the broker knows from the writer's library, not from /proc */
	cr_assert(harness_wait(kernel_waits, (void *)res, 10000),
	          "coord_list must give the writer kernel_wait COORD_KERNEL_WAITING, not %d",
	          kernel_wait_of(res));

	close(life);
	cr_assert_eq(waitpid(outsider, NULL, 0), outsider, "reap the outside process");
	r = actor_reply(&b, 10000);
	cr_assert(!strncmp(r, "ok", 2), "with the outside holder gone the writer must get in: '%s'",
	          r);
	list_lines_of(res, lines, sizeof lines);
	cr_assert(strstr(lines, "held") && !strstr(lines, "waiting for kernel lock"),
	          "once the writer holds its kernel lock the note must go:\n%s", lines);
	json_kernel_lock_holder(res, json, sizeof json);
	cr_assert_str_eq(json, "null", "kernel_lock_holder must be null for a lease that holds its "
	                               "kernel lock");
	cr_assert_eq(kernel_wait_of(res), COORD_KERNEL_NOT_WAITING,
	             "with its kernel lock taken the writer's kernel_wait must be "
	             "COORD_KERNEL_NOT_WAITING");
	actor_stop(&b);
}

/* The surviving descendant: /proc/locks names the killed coordctl that
 * took the lock, but the process that holds it is its command's child;
 * coordctl list names that one. */
Test(kernel_lock, list_names_the_surviving_descendant_not_the_dead_taker)
{
	const char *db = harness_path(&h, "descendant.db");
	struct expected_note e = { .resource = db };
	char pidfile[512], json[1024], want[256], lines[4096];
	int life;
	pid_t ctl, orphan;
	struct actor b;
	const char *r;
	write_file(db, "x", 1);
	snprintf(pidfile, sizeof pidfile, "%s", harness_path(&h, "descendant.pid"));
	actor_start(&b, &h);
	orphan = orphan_of_killed_coordctl_run(db, pidfile, &ctl, &life);

	actor_send(&b, "acquire write 30000 %s", db);
	snprintf(e.note, sizeof e.note,
	         "(waiting for kernel lock held by pid %d (cat), locked by pid %d (gone), outside "
	         "this broker)",
	         (int)orphan, (int)ctl);
	cr_assert(harness_wait(list_shows_note, &e, 10000),
	          "coordctl list must name the live descendant %d, not the killed coordctl %d that "
	          "took the lock (it said:\n%s)", (int)orphan, (int)ctl,
	          (list_lines_of(db, lines, sizeof lines), lines));
	json_kernel_lock_holder(db, json, sizeof json);
	snprintf(want, sizeof want, "pid=%d comm=cat locked_by=%d holders=[%d]", (int)orphan,
	         (int)ctl, (int)orphan);
	cr_assert_str_eq(json, want, "list --json must name the descendant that holds the lock");

	close(life); /* the orphan reads end-of-file and exits */
	cr_assert(harness_wait(gone, &orphan, 10000), "the orphan %d did not exit", (int)orphan);
	r = actor_reply(&b, 10000);
	cr_assert(!strncmp(r, "ok", 2), "with the orphan gone the writer must get in: '%s'", r);
	list_lines_of(db, lines, sizeof lines);
	cr_assert(!strstr(lines, "waiting for kernel lock"),
	          "once the writer holds its kernel lock the note must go:\n%s", lines);
	actor_stop(&b);
}

/* A fresh process (exec, not a fork: a forked child would inherit this
 * process's SQLite lock bookkeeping and never ask the kernel) cannot start
 * writing db: this process's SQLite write transaction still holds it. */
static void assert_sqlite_write_locked(const char *db, const char *otherwise)
{
	char cmd[1200], said[512];
	FILE *out;
	size_t n;
	int status;
	snprintf(cmd, sizeof cmd, "sqlite3 -cmd '.timeout 0' '%s' 'BEGIN IMMEDIATE;' 2>&1", db);
	out = popen(cmd, "r");
	cr_assert(out, "popen(%s)", cmd);
	n = fread(said, 1, sizeof said - 1, out);
	said[n] = 0;
	status = pclose(out);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0 && strstr(said, "locked"),
	          "another process could start writing while this one is inside a SQLite write "
	          "transaction: %s (sqlite3 said '%s', status 0x%x)", otherwise, said, status);
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

	/* A rollback journal: its write lock (RESERVED) is a POSIX lock on the
	 * database file itself, the one a close() would drop. */
	sqlite_exec(mine, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x);");
	sqlite_exec(mine, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1);");
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(coord_acquire(c, db, i == 1 ? COORD_READ : COORD_WRITE, -1, NULL, &l), 0,
		             "acquire %d", i);
		coord_release(l);
	}
	assert_sqlite_write_locked(db, "the library closed a descriptor of the database and so "
	                               "dropped SQLite's POSIX locks");
	sqlite_exec(mine, "COMMIT");
	sqlite3_close(mine);
	coord_disconnect(c);
}

/* The same across whole connections: a process that opens and closes
 * connections while its database stays open (a thread's connection in a
 * thread-per-request server) keeps SQLite's locks, because a closed
 * connection's descriptor is kept for the next one, not closed. */
Test(kernel_lock, sqlite_locks_survive_a_closed_connection)
{
	const char *db = harness_path(&h, "posix2.db");
	sqlite3 *mine = sqlite_open(db);

	sqlite_exec(mine, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x);");
	sqlite_exec(mine, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1);");
	for (int i = 0; i < 4; i++) {
		coord_t *c = connect_ok();
		coord_lease_t *l;
		cr_assert_eq(coord_acquire(c, db, i % 2 ? COORD_READ : COORD_WRITE, -1, NULL, &l), 0,
		             "acquire on connection %d", i);
		if (i < 3)
			coord_release(l);
		coord_disconnect(c); /* the last one with its lease still held */
	}
	assert_sqlite_write_locked(db, "closing a connection closed a descriptor of the database");
	{
		/* and the flock of the disconnected holder is gone */
		coord_t *c = connect_ok();
		coord_lease_t *l;
		cr_assert_eq(coord_acquire(c, db, COORD_WRITE, 2000, NULL, &l), 0,
		             "the next writer gets the file and its kernel lock");
		coord_release(l);
		coord_disconnect(c);
	}
	sqlite_exec(mine, "COMMIT");
	sqlite3_close(mine);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How many descriptors this process has open. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	cr_assert(d, "opendir /proc/self/fd");
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* One connection with hundreds of files locked (its index of them grows
 * many times over): each lease's kernel lock is on its own file, each
 * release drops it, and a file replaced under its name (a new inode) gets
 * the lock on the new file, not the old one. */
#define MANY_FILES 300
Test(kernel_lock, hundreds_of_files_on_one_connection_each_lock_their_own)
{
	coord_t *c = connect_ok();
	static coord_lease_t *l[MANY_FILES];
	char path[MANY_FILES][64];
	struct stat before, after;
	for (int i = 0; i < MANY_FILES; i++) {
		snprintf(path[i], sizeof path[i], "%s", harness_path(&h, ""));
		snprintf(path[i] + strlen(path[i]), sizeof path[i] - strlen(path[i]), "f%d.db", i);
		write_file(path[i], "x", 1);
	}
	for (int round = 0, fds = 0; round < 2; round++) {
		/* The second round finds every file's descriptor in the index:
		 * a lookup that missed would open a new one (they are never
		 * closed, see coord.h section 7). */
		if (round == 1)
			fds = open_fds();
		for (int i = 0; i < MANY_FILES; i++)
			cr_assert_eq(coord_acquire(c, path[i], COORD_WRITE, 5000, NULL, &l[i]), 0,
			             "round %d: write %s", round, path[i]);
		for (int i = 0; i < MANY_FILES; i++)
			cr_assert(!kernel_lock_free(path[i], LOCK_SH),
			          "round %d: %s is not flock()ed while its write lease is held", round,
			          path[i]);
		for (int i = 0; i < MANY_FILES; i += 2)
			coord_release(l[i]);
		for (int i = 0; i < MANY_FILES; i++)
			cr_assert_eq(kernel_lock_free(path[i], LOCK_EX), i % 2 == 0,
			             "round %d: %s is %s after %s", round, path[i],
			             i % 2 ? "free" : "still locked", i % 2 ? "no release" : "its release");
		for (int i = 1; i < MANY_FILES; i += 2)
			coord_release(l[i]);
		if (round == 1)
			cr_assert_eq(open_fds(), fds, "the second round opened %d descriptors",
			             open_fds() - fds);
	}
	/* Replace f7.db: the old name now means another inode. */
	cr_assert_eq(stat(path[7], &before), 0, "stat");
	{
		char tmp[80];
		snprintf(tmp, sizeof tmp, "%s.new", path[7]);
		write_file(tmp, "y", 1);
		cr_assert_eq(rename(tmp, path[7]), 0, "rename over %s", path[7]);
	}
	cr_assert_eq(stat(path[7], &after), 0, "stat");
	cr_assert_neq(before.st_ino, after.st_ino, "the replacement kept the inode");
	cr_assert_eq(coord_acquire(c, path[7], COORD_WRITE, 5000, NULL, &l[7]), 0, "write again");
	cr_assert(!kernel_lock_free(path[7], LOCK_SH),
	          "the lease on the replaced %s must lock the new file", path[7]);
	coord_release(l[7]);
	cr_assert(kernel_lock_free(path[7], LOCK_EX), "its release must unlock the new file");
	coord_disconnect(c);
}

/* The library makes DIR/keys only when a key's lock file cannot be
 * created without it: removed under a running connection, it comes back
 * at the next acquire, and the lease locks the new file. */
Test(kernel_lock, a_removed_keys_directory_is_made_again)
{
	coord_t *c = connect_ok();
	coord_lease_t *l;
	char keys[512], file[600];
	snprintf(keys, sizeof keys, "%s", harness_path(&h, "keys"));
	snprintf(file, sizeof file, "%s/k-comeback", keys);
	cr_assert_eq(coord_acquire(c, "key:comeback", COORD_WRITE, 5000, NULL, &l), 0, "write");
	cr_assert(!kernel_lock_free(file, LOCK_SH), "the key's file is not locked");
	coord_release(l);
	cr_assert_eq(unlink(file), 0, "unlink %s", file);
	cr_assert_eq(rmdir(keys), 0, "rmdir %s", keys);
	cr_assert_eq(coord_acquire(c, "key:comeback", COORD_WRITE, 5000, NULL, &l), 0,
	             "write after keys/ was removed");
	cr_assert(!kernel_lock_free(file, LOCK_SH), "the new key file is not locked");
	coord_release(l);
	cr_assert(kernel_lock_free(file, LOCK_EX), "the release must unlock the new file");
	coord_disconnect(c);
}

/* An event loop that polls a pending request with coord_pending_wait(p,
 * 0) never sleeps in the library: the broker must still hear that its
 * grant waits for an outside kernel lock, or coordctl would skip it. */
Test(kernel_lock, a_pending_request_polled_without_waiting_is_listed_as_waiting)
{
	const char *db = harness_path(&h, "polled.db");
	coord_t *c = connect_ok();
	coord_resource_t *r;
	coord_pending_t *p;
	coord_lease_t *l = NULL;
	int life, rc = 0, polls = 0;
	pid_t outsider = outsider_start(db, &life);
	cr_assert_eq(coord_resource_open(c, db, &r), 0, "open %s", db);
	rc = coord_acquire_start(r, COORD_WRITE, 30000, NULL, &l, &p);
	cr_assert_eq(rc, 0, "the request must stay pending while pid %d holds the file: %d",
	             (int)outsider, rc);
	for (int64_t until = mono_ms() + 10000;
	     kernel_wait_of(db) != COORD_KERNEL_WAITING && mono_ms() < until; polls++)
		cr_assert_eq(coord_pending_wait(p, 0, &l), 0, "granted while pid %d holds the file",
		             (int)outsider);
	cr_assert_eq(kernel_wait_of(db), COORD_KERNEL_WAITING,
	             "after %d polls without waiting the grant is listed as %d, not waiting", polls,
	             kernel_wait_of(db));
	close(life);
	cr_assert_eq(waitpid(outsider, NULL, 0), outsider, "reap the outside process");
	for (int64_t until = mono_ms() + 10000; rc == 0 && mono_ms() < until;)
		rc = coord_pending_wait(p, 50, &l);
	cr_assert_eq(rc, 1, "with the outside holder gone the request must be granted: %d", rc);
	cr_assert_eq(kernel_wait_of(db), COORD_KERNEL_NOT_WAITING, "still listed as waiting");
	coord_release(l);
	coord_pending_cancel(p);
	coord_resource_close(r);
	coord_disconnect(c);
}
