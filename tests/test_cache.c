/* Cached read leases, with a real broker and real processes.  A read
 * released through a resource handle stays as the handle's cached grant,
 * and the next read through the handle is taken and dropped in shared
 * memory: no message (the same lease), no system call (the reads run
 * under seccomp's strict mode, which kills a process at any call but
 * read, write and exit).  A conflicting request takes an idle grant back
 * at once, with its kernel lock, even from a stopped process; it waits
 * for a grant a read is under; a waiting writer stops new cached reads;
 * a SIGKILLed cached reader is reclaimed; a broker restart keeps what is
 * under way and lets the rest go; a descriptor a client passes that is not
 * a local file costs it its connection.  The stress test races cached
 * readers against writers and counts overlaps with a shared witness. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord.h"
#include "harness.h"

HARNESS_SUITE(cache, 120);

/* What the test's processes share. */
struct shared {
	_Atomic long step;         /* raised by a child as it goes */
	_Atomic long go;           /* raised by the test to let it go on */
	_Atomic long readers_in, writers_in;
	_Atomic long overlaps, reads, cached, writes;
	_Atomic uint64_t lease;    /* a child's first lease id */
};

static struct shared *shared_new(void)
{
	struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                        -1, 0);
	cr_assert(s != MAP_FAILED);
	memset(s, 0, sizeof *s);
	return s;
}

static const char *make_file(const char *name)
{
	const char *path = harness_path(&h, name);
	int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	cr_assert(fd >= 0, "create %s", path);
	close(fd);
	return path;
}

/* A child connected with a handle on path, its first read released
 * (cached); `id` gets that lease's id.  Exits with 10+ on failure. */
static void child_cache(const char *path, coord_t **c, coord_resource_t **r, uint64_t *id)
{
	coord_lease_t *l;
	if (coord_connect(c, NULL) != 0 || coord_resource_open(*c, path, r) != 0)
		_exit(10);
	if (coord_resource_acquire(*r, COORD_READ, 5000, "cached", &l) != 0)
		_exit(11);
	*id = coord_lease_id(l);
	if (coord_release(l) != 0)
		_exit(12);
}

static int wait_pid_status(pid_t pid)
{
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return st;
}

/* The holder of `path` as coord_list() shows it (cached field), or -1. */
static int cached_state(const char *path)
{
	coord_t *c;
	coord_lease_info_t *v;
	size_t n;
	int state = -1;
	if (coord_connect(&c, NULL) != 0)
		return -1;
	if (coord_list(c, &v, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			if (!v[i].waiting && !strcmp(v[i].resource, path))
				state = v[i].cached;
		coord_free(v);
	}
	coord_disconnect(c);
	return state;
}

struct state_want {
	const char *path;
	int want;
};

static int state_is(void *p)
{
	struct state_want *s = p;
	return cached_state(s->path) == s->want;
}

Test(cache, a_second_read_through_a_handle_sends_nothing_and_makes_no_system_call)
{
	const char *path = make_file("a.db");
	struct state_want sw = { path, COORD_CACHED_IDLE };
	pid_t pid = fork();
	int st;
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *c;
		coord_resource_t *r;
		coord_lease_t *l;
		uint64_t first;
		child_cache(path, &c, &r, &first);
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL) != 0)
			_exit(13);
		/* From here any system call but read, write and exit kills. */
		for (int i = 0; i < 10000; i++) {
			if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0)
				syscall(SYS_exit, 14);
			if (coord_lease_id(l) != first || !coord_lease_valid(l) ||
			    coord_lease_mode(l) != COORD_READ)
				syscall(SYS_exit, 15);
			if (coord_release(l) != 0)
				syscall(SYS_exit, 16);
		}
		syscall(SYS_exit, 0);
	}
	st = wait_pid_status(pid);
	cr_assert(WIFEXITED(st), "the cached reads made a system call (killed by signal %d)",
	          WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	cr_assert_eq(WEXITSTATUS(st), 0, "the cached reads failed (exit %d)", WEXITSTATUS(st));
	/* The child is gone: its grant went with it. */
	sw.want = -1;
	cr_assert(harness_wait(state_is, &sw, 5000), "a dead cached reader's grant is reclaimed");
}

Test(cache, the_listing_shows_a_cached_grant_idle_and_in_use)
{
	const char *path = make_file("b.db");
	struct shared *s = shared_new();
	struct state_want sw = { path, COORD_CACHED_IDLE };
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *c;
		coord_resource_t *r;
		coord_lease_t *l;
		uint64_t id;
		child_cache(path, &c, &r, &id);
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0 || coord_lease_id(l) != id)
			_exit(20);
		s->step = 2;
		while (s->go < 2)
			usleep(1000);
		coord_release(l);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000));
	cr_assert(harness_wait(state_is, &sw, 5000), "listed as a cached grant nobody reads under");
	s->go = 1;
	cr_assert(harness_wait_at_least(&s->step, 2, 5000));
	sw.want = COORD_CACHED_IN_USE;
	cr_assert(harness_wait(state_is, &sw, 5000), "listed as in use while the read is under way");
	s->go = 2;
	cr_assert_eq(wait_pid_status(pid), 0);
}

Test(cache, a_writer_takes_an_idle_grant_back_at_once_even_from_a_stopped_process)
{
	const char *path = make_file("c.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_lease_t *w;
	pid_t pid = fork();
	int st;
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_resource_t *r;
		coord_lease_t *l;
		uint64_t id;
		child_cache(path, &cc, &r, &id);
		s->lease = id;
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		/* The grant was taken back: this read asks the broker. */
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0)
			_exit(30);
		_exit(coord_lease_id(l) != id ? 0 : 31);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000));
	cr_assert_eq(kill(pid, SIGSTOP), 0);
	cr_assert_eq(coord_connect(&c, NULL), 0);
	/* Granted by the broker, and then its kernel lock (flock LOCK_EX),
	 * which it would wait for until the timeout if the stopped reader
	 * still held its shared lock. */
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w", &w), 0,
	             "an idle cached grant must not keep a writer out, even when its process "
	             "is stopped");
	cr_assert(coord_lease_fd(w) >= 0, "the writer holds the kernel lock");
	cr_assert_eq(coord_release(w), 0);
	coord_disconnect(c);
	cr_assert_eq(kill(pid, SIGCONT), 0);
	s->go = 1;
	st = wait_pid_status(pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader reads again (exit %d)",
	          WEXITSTATUS(st));
}

/* In a child process holding cc: forks a grandchild that closes its copy
 * of cc (the handles are left to it) and exits, and waits for it.  Exits
 * with 20 or 21 if that fails. */
static void fork_a_child_that_disconnects(coord_t *cc)
{
	int st;
	pid_t kid = fork();
	if (kid < 0)
		_exit(20);
	if (kid == 0) {
		coord_disconnect(cc);
		_exit(0);
	}
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		_exit(21);
}

/* A forked child that closes what it inherited (coord_disconnect(), as
 * the header tells it to) writes nothing its parent's grant depends on:
 * the page is shared memory, and an entry cleared by the child looked, to
 * the broker, like a grant bound elsewhere, never idle, so a writer
 * waited for ever for the parent's idle grant. */
Test(cache, a_forked_child_closing_its_copies_leaves_the_parents_grant_alone)
{
	const char *path = make_file("fork.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_lease_t *w;
	pid_t pid = fork();
	int st;
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_resource_t *r;
		uint64_t id;
		child_cache(path, &cc, &r, &id);
		fork_a_child_that_disconnects(cc);
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		coord_resource_close(r);
		coord_disconnect(cc);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000), "the reader has its cached grant");
	cr_assert_eq(coord_connect(&c, NULL), 0);
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w", &w), 0,
	             "the parent's idle cached grant must be taken back for a writer after its "
	             "child closed its inherited copies");
	cr_assert_eq(coord_release(w), 0);
	coord_disconnect(c);
	s->go = 1;
	st = wait_pid_status(pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader ran to its end (exit %d)",
	          WEXITSTATUS(st));
}

/* The same with a read under the grant when the process forks: the
 * child's coord_disconnect() must not end the parent's read in the page
 * (inside 1 -> 0), or the broker would take the grant back, unlocking its
 * kernel lock, and grant a writer while the parent still reads. */
Test(cache, a_forked_child_closing_its_copies_does_not_end_the_parents_read)
{
	const char *path = make_file("fork-inside.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_lease_t *w;
	pid_t pid = fork();
	int st, rc;
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_resource_t *r;
		coord_lease_t *l;
		uint64_t id;
		child_cache(path, &cc, &r, &id);
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0 || coord_lease_id(l) != id)
			_exit(20); /* a read under the cached grant */
		fork_a_child_that_disconnects(cc);
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		s->readers_in = 0; /* the read ends */
		if (coord_release(l) != 0)
			_exit(23);
		coord_disconnect(cc);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000), "the reader reads under its grant");
	s->readers_in = 1;
	cr_assert_eq(coord_connect(&c, NULL), 0);
	rc = coord_acquire(c, path, COORD_WRITE, 1500, "w", &w);
	cr_assert_eq(rc, COORD_ETIMEDOUT,
	             "a writer must not be granted while the parent reads under its cached grant, "
	             "whatever its forked child closed (got %s)", coord_errname(rc));
	s->go = 1;
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w", &w), 0,
	             "the writer gets the lease once the read ends");
	cr_assert_eq(s->readers_in, 0, "no writer while the read was under way");
	cr_assert_eq(coord_release(w), 0);
	coord_disconnect(c);
	st = wait_pid_status(pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader ran to its end (exit %d)",
	          WEXITSTATUS(st));
}

Test(cache, a_writer_waits_for_a_read_under_the_grant_and_a_waiting_writer_stops_new_ones)
{
	const char *path = make_file("d.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_resource_t *wr;
	coord_lease_t *w = NULL;
	coord_pending_t *p;
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc, *cc2;
		coord_resource_t *r, *r2;
		coord_lease_t *l, *l2;
		uint64_t id;
		child_cache(path, &cc, &r, &id);
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0 || coord_lease_id(l) != id)
			_exit(40);
		s->step = 1; /* inside */
		while (s->go < 1)
			usleep(1000);
		/* A writer waits now: no new read may start, cached or not (on
		 * another connection: a second read of one connection is
		 * granted at once, so it can never wait for itself). */
		if (coord_connect(&cc2, NULL) != 0 || coord_resource_open(cc2, path, &r2) != 0)
			_exit(41);
		if (coord_resource_acquire(r2, COORD_READ, 0, NULL, &l2) != COORD_EBUSY)
			_exit(42);
		coord_release(l);
		if (coord_resource_acquire(r, COORD_READ, 0, NULL, &l2) != COORD_EBUSY)
			_exit(43);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000));
	cr_assert_eq(coord_connect(&c, NULL), 0);
	cr_assert_eq(coord_resource_open(c, path, &wr), 0);
	cr_assert_eq(coord_acquire_start(wr, COORD_WRITE, 10000, "w", &w, &p), 0,
	             "the writer waits for the read under the grant");
	cr_assert(harness_wait_count(&h, path, COORD_WRITE, 1, 1), "the writer is queued");
	cr_assert_eq(coord_pending_wait(p, 0, &w), 0, "no grant while a read is under the cached grant");
	s->go = 1;
	cr_assert_eq(coord_pending_wait(p, 10000, &w), 1, "granted once the read is released");
	{
		int st = wait_pid_status(pid);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		          "the reader's reads after the writer queued (exit %d)", WEXITSTATUS(st));
	}
	coord_pending_cancel(p);
	coord_release(w);
	coord_disconnect(c);
}

Test(cache, a_cached_reader_killed_inside_its_read_is_reclaimed)
{
	const char *path = make_file("e.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_lease_t *w;
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_resource_t *r;
		coord_lease_t *l;
		uint64_t id;
		child_cache(path, &cc, &r, &id);
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0)
			_exit(50);
		s->step = 1;
		for (;;)
			pause();
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000));
	cr_assert_eq(coord_connect(&c, NULL), 0);
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 0, "w", &w), COORD_EBUSY,
	             "a read is under the cached grant");
	cr_assert_eq(kill(pid, SIGKILL), 0);
	wait_pid_status(pid);
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w", &w), 0,
	             "the killed reader's grant is reclaimed");
	coord_release(w);
	coord_disconnect(c);
}

Test(cache, a_broker_restart_keeps_a_read_under_way_and_lets_the_idle_grant_go)
{
	const char *path = make_file("f.db"), *other = make_file("g.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_lease_t *w;
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_resource_t *r, *r2;
		coord_lease_t *l, *l2;
		uint64_t id, id2;
		child_cache(path, &cc, &r, &id);
		if (coord_resource_open(cc, other, &r2) != 0 ||
		    coord_resource_acquire(r2, COORD_READ, 5000, NULL, &l2) != 0)
			_exit(60);
		id2 = coord_lease_id(l2);
		coord_release(l2); /* g.db: cached, idle */
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0 || coord_lease_id(l) != id)
			_exit(61); /* f.db: a read under the grant */
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		/* After the restart: the read under way is still valid, and the
		 * next read of g.db asks the new broker. */
		if (!coord_lease_valid(l))
			_exit(62);
		if (coord_resource_acquire(r2, COORD_READ, 5000, NULL, &l2) != 0 ||
		    coord_lease_id(l2) == id2)
			_exit(63);
		coord_release(l2);
		s->step = 2;
		while (s->go < 2)
			usleep(1000);
		if (coord_release(l) != 0)
			_exit(64);
		s->step = 3;
		while (s->go < 3)
			usleep(1000);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000));
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	s->go = 1;
	if (!harness_wait_at_least(&s->step, 2, 10000)) {
		int st = wait_pid_status(pid);
		cr_assert_fail("the reader goes on after the restart (exit %d)", WEXITSTATUS(st));
	}
	cr_assert_eq(coord_connect(&c, NULL), 0);
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 0, "w", &w), COORD_EBUSY,
	             "the read under the grant is still held after the restart");
	s->go = 2;
	cr_assert(harness_wait_at_least(&s->step, 3, 10000));
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w", &w), 0,
	             "released after the restart, the grant does not stay cached");
	coord_release(w);
	cr_assert_eq(coord_acquire(c, other, COORD_WRITE, 5000, "w", &w), 0,
	             "the idle grant of g.db went at the reconnect or at the next read");
	coord_release(w);
	s->go = 3;
	cr_assert_eq(wait_pid_status(pid), 0);
	coord_disconnect(c);
}

/* A handle closed during a read under its grant (allowed: the read's
 * release frees it) is off the connection's list of handles, but its grant
 * still protects the read: a broker restart must attach it like any held
 * lease, or the new broker lets it go and grants a writer beside the read.
 * The resource is a file that does not exist, so no kernel lock stands in
 * for the broker. */
Test(cache, a_handle_closed_during_its_read_keeps_the_read_across_a_broker_restart)
{
	const char *path = harness_path(&h, "missing.db"), *other = make_file("other.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_lease_t *w;
	int rc;
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_resource_t *r;
		coord_lease_t *l, *l2;
		uint64_t id;
		child_cache(path, &cc, &r, &id);
		if (coord_resource_acquire(r, COORD_READ, 5000, NULL, &l) != 0 || coord_lease_id(l) != id)
			_exit(60); /* a read under the grant */
		coord_resource_close(r); /* during the read */
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		/* After the restart: any call reconnects. */
		if (coord_acquire(cc, other, COORD_READ, 5000, NULL, &l2) != 0)
			_exit(61);
		coord_release(l2);
		s->step = 2;
		while (s->go < 2)
			usleep(1000);
		if (!coord_lease_valid(l))
			_exit(62);
		if (coord_release(l) != 0)
			_exit(63);
		s->step = 3;
		while (s->go < 3)
			usleep(1000);
		coord_disconnect(cc);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000), "the reader reads, its handle closed");
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	s->go = 1;
	if (!harness_wait_at_least(&s->step, 2, 10000)) {
		int st = wait_pid_status(pid);
		cr_assert_fail("the reader goes on after the restart (exit %d)", WEXITSTATUS(st));
	}
	cr_assert_eq(coord_connect(&c, NULL), 0);
	rc = coord_acquire(c, path, COORD_WRITE, 0, "w", &w);
	cr_assert_eq(rc, COORD_EBUSY,
	             "a writer must not get the file while the read under the closed handle's "
	             "grant goes on after the restart (got %s)",
	             rc == 0 ? "the lease" : coord_errname(rc));
	s->go = 2;
	cr_assert(harness_wait_at_least(&s->step, 3, 10000), "the reader's lease stayed valid");
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, "w", &w), 0,
	             "the writer gets the file once the read ends");
	coord_release(w);
	s->go = 3;
	cr_assert_eq(wait_pid_status(pid), 0);
	coord_disconnect(c);
}

Test(cache, an_idle_grant_closes_no_wait_for_cycle)
{
	const char *x = make_file("x.db"), *y = make_file("y.db");
	struct shared *s = shared_new();
	coord_t *c;
	coord_resource_t *hx, *hy;
	coord_lease_t *l, *w = NULL;
	coord_pending_t *p;
	pid_t pid;
	int st;

	/* This process keeps an idle cached grant on x.db ... */
	cr_assert_eq(coord_connect(&c, NULL), 0);
	cr_assert_eq(coord_resource_open(c, x, &hx), 0);
	cr_assert_eq(coord_resource_open(c, y, &hy), 0);
	cr_assert_eq(coord_resource_acquire(hx, COORD_READ, 5000, NULL, &l), 0);
	cr_assert_eq(coord_release(l), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		coord_t *cc;
		coord_lease_t *ly, *lx;
		if (coord_connect(&cc, NULL) != 0 || coord_acquire(cc, y, COORD_WRITE, 5000, "c", &ly) != 0)
			_exit(90);
		s->step = 1;
		while (s->go < 1)
			usleep(1000);
		/* ... and waits for y.db, which the child holds: the child's
		 * request for x.db would close a cycle through the idle grant,
		 * which goes at the recall instead. */
		int rc = coord_acquire(cc, x, COORD_WRITE, 5000, "c", &lx);
		if (rc != 0)
			_exit(rc == COORD_EDEADLK ? 91 : 92);
		_exit(0);
	}
	cr_assert(harness_wait_at_least(&s->step, 1, 5000));
	cr_assert_eq(coord_acquire_start(hy, COORD_WRITE, 10000, "m", &w, &p), 0);
	cr_assert(harness_wait_count(&h, y, COORD_WRITE, 1, 1), "this process waits for y.db");
	s->go = 1;
	st = wait_pid_status(pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "the child gets x.db from the idle grant (exit %d: 91 is a false deadlock)",
	          WEXITSTATUS(st));
	cr_assert_eq(coord_pending_wait(p, 10000, &w), 1, "and this process then gets y.db");
	coord_pending_cancel(p);
	coord_release(w);
	coord_disconnect(c);
}

static int count_cached(void)
{
	coord_t *c;
	coord_lease_info_t *v;
	size_t n;
	int cached = 0;
	if (coord_connect(&c, NULL) != 0)
		return -1;
	if (coord_list(c, &v, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			cached += v[i].cached != 0;
		coord_free(v);
	}
	coord_disconnect(c);
	return cached;
}

Test(cache, a_connection_keeps_at_most_32_descriptors_in_the_broker)
{
	coord_t *c;
	coord_resource_t *r[40];
	coord_lease_t *l;
	cr_assert_eq(coord_connect(&c, NULL), 0);
	for (int i = 0; i < 40; i++) {
		char name[32];
		snprintf(name, sizeof name, "many-%d.db", i);
		cr_assert_eq(coord_resource_open(c, make_file(name), &r[i]), 0);
		cr_assert_eq(coord_resource_acquire(r[i], COORD_READ, 5000, NULL, &l), 0);
		cr_assert_eq(coord_release(l), 0);
	}
	cr_assert_eq(count_cached(), 32, "32 files' grants cached, the rest released");
	for (int i = 0; i < 40; i++) {
		cr_assert_eq(coord_resource_acquire(r[i], COORD_READ, 5000, NULL, &l), 0,
		             "every handle still reads");
		cr_assert_eq(coord_release(l), 0);
	}
	coord_disconnect(c);
}

/* ---- a hostile client ---- */

static void send_msg(int fd, const void *msg, size_t len, int pass_fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)msg, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (pass_fd >= 0) {
		struct cmsghdr *cm;
		memset(&ctl, 0, sizeof ctl);
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof ctl.buf;
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof pass_fd);
	}
	cr_assert_eq(sendmsg(fd, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* Receives one message; returns its length, and the descriptor it carried
 * in *got (or -1). */
static ssize_t recv_msg(int fd, void *buf, size_t size, int *got)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { buf, size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
		             .msg_controllen = sizeof ctl.buf };
	ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	*got = -1;
	if (n > 0 && cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(got, CMSG_DATA(cm), sizeof *got);
	return n;
}

/* Grants the broker took back (here: recalled by a writer while idle) no
 * longer count against the 32 a connection may keep: the library learns
 * it from their slots, and a new handle's read is cached again. */
Test(cache, grants_taken_back_make_room_for_new_cached_grants)
{
	coord_t *c, *w;
	coord_resource_t *r[33];
	coord_lease_t *l;
	char name[32];
	const char *path[33];
	cr_assert_eq(coord_connect(&c, NULL), 0);
	cr_assert_eq(coord_connect(&w, NULL), 0);
	for (int i = 0; i < 33; i++) {
		snprintf(name, sizeof name, "room-%d.db", i);
		path[i] = strdup(make_file(name));
		cr_assert_eq(coord_resource_open(c, path[i], &r[i]), 0);
	}
	for (int i = 0; i < 32; i++) {
		cr_assert_eq(coord_resource_acquire(r[i], COORD_READ, 5000, NULL, &l), 0);
		cr_assert_eq(coord_release(l), 0);
		cr_assert_eq(cached_state(path[i]), COORD_CACHED_IDLE, "grant %d is cached", i);
	}
	for (int i = 0; i < 32; i++) { /* each idle grant is taken back */
		cr_assert_eq(coord_acquire(w, path[i], COORD_WRITE, 5000, NULL, &l), 0,
		             "a writer takes file %d from its idle cached grant", i);
		cr_assert_eq(coord_release(l), 0);
	}
	cr_assert_eq(coord_resource_acquire(r[32], COORD_READ, 5000, NULL, &l), 0);
	cr_assert_eq(coord_release(l), 0);
	cr_assert_eq(cached_state(path[32]), COORD_CACHED_IDLE,
	             "with its 32 grants taken back, the connection caches a 33rd file");
	for (int i = 0; i < 33; i++) {
		coord_resource_close(r[i]);
		free((void *)path[i]);
	}
	coord_disconnect(w);
	coord_disconnect(c);
}

Test(cache, the_page_is_sealed_and_a_descriptor_that_is_no_local_file_costs_the_connection)
{
	int fd = harness_dial(h.dir), page = -1, p[2];
	char buf[COORD_MSG_MAX];
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	coord_msg_hdr cache = { COORD_MSG_CACHE, 2 };
	struct {
		coord_msg_acquire m;
		char name[5];
	} acq = { { { COORD_MSG_ACQUIRE, 3 }, COORD_READ, -1, 5, 0, 0 }, "key:x" };
	coord_msg_grant g;
	coord_msg_release rel = { { COORD_MSG_RELEASE, 4 }, 0, COORD_RELEASE_CACHE, 0 };
	coord_cache_entry *e;
	ssize_t n;

	cr_assert(fd >= 0);
	send_msg(fd, &hello, sizeof hello, -1);
	cr_assert(recv_msg(fd, buf, sizeof buf, &page) > 0);
	send_msg(fd, &cache, sizeof cache, -1);
	n = recv_msg(fd, buf, sizeof buf, &page);
	cr_assert(n >= (ssize_t)sizeof(coord_msg_reply) && page >= 0, "CACHE answers with the page");
	cr_assert(ftruncate(page, 0) < 0, "the page is sealed: it cannot shrink under the broker");
	cr_assert(ftruncate(page, 2 * COORD_CACHE_PAGE_SIZE) < 0, "nor grow");
	e = mmap(NULL, COORD_CACHE_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, page, 0);
	cr_assert(e != MAP_FAILED, "the client maps it read-write");

	send_msg(fd, &acq, sizeof acq.m + 5, -1);
	n = recv_msg(fd, &g, sizeof g, &page);
	cr_assert(n == sizeof g && g.h.type == COORD_MSG_GRANT, "the read is granted (%zd bytes, type %u)",
	          n, (unsigned)g.h.type);
	cr_assert_eq(harness_count(&h, "key:x", COORD_READ, 0), 1);

	/* A pipe for a kernel lock: not a local file. */
	cr_assert_eq(pipe(p), 0);
	atomic_store(&e[0].lease, g.lease_id);
	rel.lease_id = g.lease_id;
	send_msg(fd, &rel, sizeof rel, p[0]);
	n = recv(fd, buf, sizeof buf, 0);
	cr_assert_eq(n, 0, "the broker hangs up on a client that passes a descriptor of no local file");
	cr_assert(harness_wait_count(&h, "key:x", COORD_READ, 0, 0), "and reclaims its lease");
	close(fd);
	close(p[0]);
	close(p[1]);
}

/* ---- the stress test ---- */

#define READERS 3
#define WRITERS 2
#define WRITES 300

/* Every process connects, then waits for the others, so they race. */
static void barrier(struct shared *s)
{
	atomic_fetch_add(&s->step, 1);
	while (atomic_load(&s->go) == 0)
		usleep(100);
}

/* Reads until the writers are done; inside each read it watches for a
 * writer most of the time, so one let in early meets it. */
static void reader_main(struct shared *s, const char *path)
{
	coord_t *c;
	coord_resource_t *r;
	uint64_t last = 0;
	if (coord_connect(&c, NULL) != 0 || coord_resource_open(c, path, &r) != 0)
		_exit(70);
	barrier(s);
	while (atomic_load(&s->writes) < WRITERS * WRITES) {
		coord_lease_t *l;
		if (coord_resource_acquire(r, COORD_READ, 30000, "reader", &l) != 0)
			_exit(71);
		atomic_fetch_add(&s->readers_in, 1);
		for (int k = 0; k < 2000; k++) {
			if (atomic_load(&s->writers_in) != 0)
				atomic_fetch_add(&s->overlaps, 1);
		}
		if (coord_lease_id(l) == last)
			atomic_fetch_add(&s->cached, 1);
		last = coord_lease_id(l);
		atomic_fetch_add(&s->reads, 1);
		atomic_fetch_sub(&s->readers_in, 1);
		if (coord_release(l) != 0)
			_exit(72);
	}
	_exit(0);
}

static void writer_main(struct shared *s, const char *path)
{
	coord_t *c;
	coord_resource_t *r;
	if (coord_connect(&c, NULL) != 0 || coord_resource_open(c, path, &r) != 0)
		_exit(80);
	barrier(s);
	for (int i = 0; i < WRITES; i++) {
		coord_lease_t *l;
		if (coord_resource_acquire(r, COORD_WRITE, 30000, "writer", &l) != 0)
			_exit(81);
		if (atomic_fetch_add(&s->writers_in, 1) != 0)
			atomic_fetch_add(&s->overlaps, 1);
		for (int k = 0; k < 2000; k++) {
			if (atomic_load(&s->readers_in) != 0)
				atomic_fetch_add(&s->overlaps, 1);
		}
		atomic_fetch_sub(&s->writers_in, 1);
		atomic_fetch_add(&s->writes, 1);
		if (coord_release(l) != 0)
			_exit(82);
		/* Pacing, not waiting for anything: room for the readers to
		 * take cached grants between the writes. */
		usleep(300);
	}
	_exit(0);
}

Test(cache, cached_readers_racing_writers_never_overlap)
{
	const char *path = make_file("stress.db");
	struct shared *s = shared_new();
	pid_t pids[READERS + WRITERS];
	for (int i = 0; i < READERS + WRITERS; i++) {
		pids[i] = fork();
		cr_assert(pids[i] >= 0);
		if (pids[i] == 0) {
			if (i < READERS)
				reader_main(s, path);
			writer_main(s, path);
		}
	}
	cr_assert(harness_wait_at_least(&s->step, READERS + WRITERS, 10000));
	s->go = 1;
	for (int i = 0; i < READERS + WRITERS; i++) {
		int st = wait_pid_status(pids[i]);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process %d failed (status %#x)", i, st);
	}
	cr_assert_eq(s->writes, WRITERS * WRITES);
	cr_assert_eq(s->overlaps, 0, "a writer and a reader were inside together %ld times",
	             (long)s->overlaps);
	cr_assert(s->cached > 0, "some reads were served by a cached grant (%ld)", (long)s->cached);
	cr_log_info("%ld of %ld reads under a cached grant, %ld writes, 0 overlaps", (long)s->cached,
	            (long)s->reads, (long)s->writes);
}
