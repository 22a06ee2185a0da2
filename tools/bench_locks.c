/* coord-bench's measurements of one lock at a time: uncontended
 * acquire+release, handoff to a blocked waiter, reclaim after SIGKILL and
 * coord's recall, for coord (by path, through a handle with its cached
 * reads, through a handle without the cache) and for its peers on the same
 * machine in the same run: flock(2), fcntl(2) OFD locks, a process-shared
 * pthread rwlock (the floor for anything in shared memory) and SQLite's own
 * BEGIN IMMEDIATE/COMMIT on a WAL database.  Each kind is opened, taken,
 * dropped and closed through the same four calls (struct lock), so every
 * row times the same loop.  Waiters and holders are fork()ed processes; a
 * failure in one of them ends that process only (bench_die()). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

const char *lock_who(enum lock_kind k)
{
	static const char *const who[] = { "coord", "coord", "coord", "flock", "fcntl", "rwlock",
	                                   "sqlite" };
	return who[k];
}

const char *lock_via(enum lock_kind k, int mode)
{
	static const char *const via[] = { "path", "handle, cached", "handle, no cache", "fd",
	                                   "OFD lock", "shared memory", "BEGIN IMMEDIATE" };
	/* Only reads are cached: a write through either handle is the same. */
	if (mode == COORD_WRITE && (k == K_COORD_HANDLE || k == K_COORD_NOCACHE))
		return "handle";
	return via[k];
}

void bench_setup_peers(void)
{
	pthread_rwlockattr_t a;
	sqlite3 *db = NULL;
	char *err = NULL;
	bench.rwlock = mmap(NULL, sizeof(pthread_rwlock_t), PROT_READ | PROT_WRITE,
	                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (bench.rwlock == MAP_FAILED)
		bench_die("mmap", 0);
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_rwlock_init(bench.rwlock, &a);
	pthread_rwlockattr_destroy(&a);
	if (sqlite3_open(bench.sqlite_db, &db) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(k INTEGER "
	                     "PRIMARY KEY, v TEXT); INSERT OR IGNORE INTO t VALUES (1, 'one');",
	                 NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "coord-bench: %s: %s\n", bench.sqlite_db, err ? err : sqlite3_errmsg(db));
		exit(1);
	}
	sqlite3_close(db);
}

void bench_teardown_peers(void)
{
	if (bench.rwlock)
		munmap(bench.rwlock, sizeof(pthread_rwlock_t));
}

/* ---- a lock of any kind ---- */

struct lock {
	enum lock_kind kind;
	coord_t *c;
	coord_resource_t *r;
	coord_lease_t *l;
	int fd;
	sqlite3 *db;
	sqlite3_stmt *begin, *commit;
};

static void lock_open(struct lock *k, enum lock_kind kind)
{
	coord_options_t o = { .no_cache = kind == K_COORD_NOCACHE };
	int rc = 0;
	memset(k, 0, sizeof *k);
	k->kind = kind;
	k->fd = -1;
	switch (kind) {
	case K_COORD_PATH:
	case K_COORD_HANDLE:
	case K_COORD_NOCACHE:
		if ((rc = coord_connect(&k->c, &o)) < 0)
			bench_die("connect to the broker", rc);
		if (kind != K_COORD_PATH && (rc = coord_resource_open(k->c, bench.resource, &k->r)) < 0)
			bench_die("open the resource", rc);
		break;
	case K_FLOCK:
	case K_FCNTL:
		if ((k->fd = open(bench.lockfile, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
			bench_die(bench.lockfile, 0);
		break;
	case K_RWLOCK:
		break;
	case K_SQLITE:
		if (sqlite3_open(bench.sqlite_db, &k->db) != SQLITE_OK ||
		    sqlite3_busy_timeout(k->db, 600000) != SQLITE_OK ||
		    sqlite3_prepare_v2(k->db, "BEGIN IMMEDIATE", -1, &k->begin, NULL) != SQLITE_OK ||
		    sqlite3_prepare_v2(k->db, "COMMIT", -1, &k->commit, NULL) != SQLITE_OK) {
			fprintf(stderr, "coord-bench: %s: %s\n", bench.sqlite_db, sqlite3_errmsg(k->db));
			bench_die("sqlite", 0);
		}
		break;
	}
}

static int ofd_lock(int fd, short type, int wait)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET };
	return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

static int sqlite_step(sqlite3 *db, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "coord-bench: sqlite: %s\n", sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

/* Takes the lock in COORD_READ or COORD_WRITE mode, waiting as long as it
 * takes. */
static void lock_take(struct lock *k, int mode)
{
	int rc = 0, w = mode == COORD_WRITE;
	switch (k->kind) {
	case K_COORD_PATH:
		rc = coord_acquire(k->c, bench.resource, mode, -1, "bench", &k->l);
		break;
	case K_COORD_HANDLE:
	case K_COORD_NOCACHE:
		rc = coord_resource_acquire(k->r, mode, -1, "bench", &k->l);
		break;
	case K_FLOCK:
		rc = flock(k->fd, w ? LOCK_EX : LOCK_SH);
		break;
	case K_FCNTL:
		rc = ofd_lock(k->fd, w ? F_WRLCK : F_RDLCK, 1);
		break;
	case K_RWLOCK: {
		int e = w ? pthread_rwlock_wrlock(bench.rwlock) : pthread_rwlock_rdlock(bench.rwlock);
		if (e) {
			errno = e;
			rc = -1;
		}
		break;
	}
	case K_SQLITE:
		if (sqlite_step(k->db, k->begin) < 0)
			bench_die("sqlite BEGIN IMMEDIATE", 1);
		break;
	}
	if (rc < 0)
		bench_die("lock", rc == -1 ? 0 : rc);
}

static void lock_drop(struct lock *k)
{
	int rc = 0;
	switch (k->kind) {
	case K_COORD_PATH:
	case K_COORD_HANDLE:
	case K_COORD_NOCACHE:
		rc = coord_release(k->l);
		break;
	case K_FLOCK:
		rc = flock(k->fd, LOCK_UN);
		break;
	case K_FCNTL:
		rc = ofd_lock(k->fd, F_UNLCK, 0);
		break;
	case K_RWLOCK:
		pthread_rwlock_unlock(bench.rwlock);
		break;
	case K_SQLITE:
		if (sqlite_step(k->db, k->commit) < 0)
			bench_die("sqlite COMMIT", 1);
		break;
	}
	if (rc < 0)
		bench_die("unlock", rc == -1 ? 0 : rc);
}

static void lock_close(struct lock *k)
{
	coord_resource_close(k->r);
	coord_disconnect(k->c);
	if (k->fd >= 0)
		close(k->fd);
	sqlite3_finalize(k->begin);
	sqlite3_finalize(k->commit);
	sqlite3_close(k->db);
}

static int64_t *samples(int n)
{
	int64_t *ns = malloc(sizeof *ns * (size_t)n);
	if (!ns)
		bench_die("malloc", 0);
	return ns;
}

/* ---- the socket round trip ---- */

static void pin_to(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof set, &set);
}

/* A 32-byte SOCK_SEQPACKET (coord's transport) request and reply with an
 * echoing child.  cross_cpu: the two are pinned to CPUs 0 and 1, the case a
 * broker on another CPU pays (a wakeup across CPUs); else they run where
 * the scheduler puts them. */
struct stats bench_unix_rtt(int cross_cpu)
{
	int sv[2], n = bench.iterations;
	int64_t *ns = samples(n);
	char buf[64] = { 0 };
	cpu_set_t saved;
	pid_t pid;
	sched_getaffinity(0, sizeof saved, &saved);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		bench_die("socketpair", 0);
	pid = fork();
	if (pid == 0) {
		ssize_t got;
		close(sv[0]);
		if (cross_cpu)
			pin_to(1);
		while ((got = recv(sv[1], buf, sizeof buf, 0)) > 0)
			if (send(sv[1], buf, (size_t)got, 0) != got)
				break;
		_exit(0);
	}
	close(sv[1]);
	if (cross_cpu)
		pin_to(0);
	for (int i = 0; i < n; i++) {
		int64_t t0 = bench_now_ns();
		if (send(sv[0], buf, 32, 0) != 32 || recv(sv[0], buf, sizeof buf, 0) != 32)
			bench_die("unix round trip", 0);
		ns[i] = bench_now_ns() - t0;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	sched_setaffinity(0, sizeof saved, &saved);
	struct stats s = stats_of(ns, n, 1);
	free(ns);
	return s;
}

/* ---- uncontended ---- */

/* Each sample is batch acquire+release pairs timed together, reported per
 * pair: with batch 1, clock reads included; with more, the cost of the
 * lock itself without the clock's ~20 ns.  The first pair is not timed: a
 * handle's first read makes its cached grant. */
struct stats bench_batched(enum lock_kind kind, int mode, int batch)
{
	int n = bench.iterations / batch > 20 ? bench.iterations / batch : 20;
	int64_t *ns = samples(n);
	struct lock k;
	lock_open(&k, kind);
	lock_take(&k, mode);
	lock_drop(&k);
	for (int i = 0; i < n; i++) {
		int64_t t0 = bench_now_ns();
		for (int j = 0; j < batch; j++) {
			lock_take(&k, mode);
			lock_drop(&k);
		}
		ns[i] = bench_now_ns() - t0;
	}
	lock_close(&k);
	struct stats s = stats_of(ns, n, batch);
	free(ns);
	return s;
}

struct stats bench_uncontended(enum lock_kind kind, int mode)
{
	return bench_batched(kind, mode, 1);
}

/* ---- handoff and reclaim ---- */

struct shared_times {
	volatile int64_t t0, t1;
};

static void *shared_map(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		bench_die("mmap", 0);
	return p;
}

/* Gives a waiter time to block before the clock starts.  Nothing reports
 * "blocked in flock()", so every kind gets the same 2 ms; a waiter not yet
 * blocked would only inflate its own figure. */
static void wait_until_blocked(void)
{
	struct timespec ts = { 0, 2000000 };
	nanosleep(&ts, NULL);
}

/* The waiter: each round, waits for the lock, stamps t1, lets go and says
 * so on the pipe. */
static _Noreturn void handoff_waiter(enum lock_kind kind, struct shared_times *st, int go_fd,
                                     int done_fd, int rounds)
{
	struct lock k;
	char ch;
	lock_open(&k, kind);
	for (int i = 0; i < rounds; i++) {
		if (read(go_fd, &ch, 1) != 1)
			_exit(1);
		lock_take(&k, COORD_WRITE);
		st[i].t1 = bench_now_ns();
		lock_drop(&k);
		if (write(done_fd, "d", 1) != 1)
			_exit(1);
	}
	lock_close(&k);
	_exit(0);
}

/* From the holder's release to the blocked waiter running. */
struct stats bench_handoff(enum lock_kind kind)
{
	int rounds = bench.handoffs, go[2], done[2];
	struct shared_times *st = shared_map(sizeof *st * (size_t)rounds);
	int64_t *ns = samples(rounds);
	struct lock k;
	pid_t pid;
	char ch;
	if (pipe(go) < 0 || pipe(done) < 0)
		bench_die("pipe", 0);
	pid = fork();
	if (pid < 0)
		bench_die("fork", 0);
	if (pid == 0)
		handoff_waiter(kind, st, go[0], done[1], rounds);
	lock_open(&k, kind);
	for (int i = 0; i < rounds; i++) {
		lock_take(&k, COORD_WRITE);
		if (write(go[1], "g", 1) != 1)
			bench_die("pipe", 0);
		wait_until_blocked();
		st[i].t0 = bench_now_ns();
		lock_drop(&k);
		if (read(done[0], &ch, 1) != 1)
			bench_die("the waiter died", 0);
		ns[i] = st[i].t1 - st[i].t0;
	}
	waitpid(pid, NULL, 0);
	lock_close(&k);
	for (int i = 0; i < 2; i++) {
		close(go[i]);
		close(done[i]);
	}
	struct stats s = stats_of(ns, rounds, 1);
	free(ns);
	munmap(st, sizeof *st * (size_t)rounds);
	return s;
}

/* From SIGKILL of the holder to the blocked waiter running.  Not for the
 * rwlock: a dead holder's pthread rwlock stays held for ever. */
struct stats bench_reclaim(enum lock_kind kind)
{
	int rounds = bench.reclaims;
	struct shared_times *st = shared_map(sizeof *st * (size_t)rounds);
	int64_t *ns = samples(rounds);
	for (int i = 0; i < rounds; i++) {
		int held[2], go[2], done[2];
		pid_t holder, waiter;
		char ch;
		if (pipe(held) < 0 || pipe(go) < 0 || pipe(done) < 0)
			bench_die("pipe", 0);
		holder = fork();
		if (holder == 0) {
			struct lock k;
			lock_open(&k, kind);
			lock_take(&k, COORD_WRITE);
			if (write(held[1], "h", 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
		if (holder < 0 || read(held[0], &ch, 1) != 1)
			bench_die("the holder died", 0);
		waiter = fork();
		if (waiter == 0) {
			struct lock k;
			lock_open(&k, kind);
			if (write(go[1], "r", 1) != 1)
				_exit(1);
			lock_take(&k, COORD_WRITE);
			st[i].t1 = bench_now_ns();
			lock_drop(&k);
			lock_close(&k);
			if (write(done[1], "d", 1) != 1)
				_exit(1);
			_exit(0);
		}
		if (waiter < 0 || read(go[0], &ch, 1) != 1)
			bench_die("the waiter died", 0);
		wait_until_blocked();
		st[i].t0 = bench_now_ns();
		kill(holder, SIGKILL);
		if (read(done[0], &ch, 1) != 1)
			bench_die("the waiter died", 0);
		ns[i] = st[i].t1 - st[i].t0;
		waitpid(holder, NULL, 0);
		waitpid(waiter, NULL, 0);
		for (int j = 0; j < 2; j++) {
			close(held[j]);
			close(go[j]);
			close(done[j]);
		}
	}
	struct stats s = stats_of(ns, rounds, 1);
	free(ns);
	munmap(st, sizeof *st * (size_t)rounds);
	return s;
}

/* ---- recall ---- */

/* The idle reader: holds a read lease (by path: no cache), sleeps in poll()
 * on its recall descriptor, releases when woken, and takes the lease again
 * (it queues behind the writer) for the next round. */
static _Noreturn void recall_reader(struct shared_times *rt, int held_fd, int rounds)
{
	coord_t *c;
	coord_lease_t *l;
	int fd, rc = coord_connect(&c, NULL);
	if (rc < 0)
		bench_die("connect to the broker", rc);
	if ((fd = coord_recall_fd(c)) < 0)
		bench_die("coord_recall_fd", fd);
	for (int i = 0; i < rounds; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if ((rc = coord_acquire(c, bench.resource, COORD_READ, -1, "bench-reader", &l)) < 0)
			bench_die("reader acquire", rc);
		if (write(held_fd, "h", 1) != 1)
			_exit(1);
		do {
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				bench_die("poll", 0);
			rc = coord_recall_clear(c);
		} while (rc == 0);
		if (rc < 0)
			bench_die("coord_recall_clear", rc);
		rt[i].t1 = bench_now_ns();
		coord_release(l);
	}
	coord_disconnect(c);
	_exit(0);
}

/* The writer's request to the idle reader's release, and to the writer
 * running. */
void bench_recall(struct stats *to_release, struct stats *to_writer)
{
	int rounds = bench.handoffs, held[2], rc;
	struct shared_times *rt = shared_map(sizeof *rt * (size_t)rounds);
	int64_t *rel = samples(rounds), *run = samples(rounds);
	coord_t *c;
	pid_t pid;
	char ch;
	if ((rc = coord_connect(&c, NULL)) < 0)
		bench_die("connect to the broker", rc);
	if (pipe(held) < 0)
		bench_die("pipe", 0);
	pid = fork();
	if (pid < 0)
		bench_die("fork", 0);
	if (pid == 0)
		recall_reader(rt, held[1], rounds);
	for (int i = 0; i < rounds; i++) {
		coord_lease_t *l;
		if (read(held[0], &ch, 1) != 1)
			bench_die("the reader died", 0);
		rt[i].t0 = bench_now_ns();
		if ((rc = coord_acquire(c, bench.resource, COORD_WRITE, -1, "bench-writer", &l)) < 0)
			bench_die("writer acquire", rc);
		run[i] = bench_now_ns() - rt[i].t0;
		rel[i] = rt[i].t1 - rt[i].t0;
		coord_release(l);
	}
	waitpid(pid, NULL, 0);
	coord_disconnect(c);
	close(held[0]);
	close(held[1]);
	*to_release = stats_of(rel, rounds, 1);
	*to_writer = stats_of(run, rounds, 1);
	free(rel);
	free(run);
	munmap(rt, sizeof *rt * (size_t)rounds);
}
