/* coord-bench: how fast coord is, measured beside its peers in the same
 * run on the same machine.
 *
 * It measures, for coord and for flock(2) and fcntl(2) OFD locks:
 *   - uncontended acquire+release, read and write; for coord both by path
 *     (coord_acquire(), which resolves the name every time) and through a
 *     resource handle opened once (coord_resource_acquire());
 *   - handoff: from the holder's release to a blocked waiter running;
 *   - reclaim: from SIGKILL of the holder to the waiter running;
 *   - recall (coord only; its peers have none): an idle reader waits on
 *     coord_recall_fd() and lets go when a writer asks, timed from the
 *     writer's request to the reader's release and to the writer running;
 * and a plain Unix-socket round trip (SOCK_SEQPACKET, the transport coord
 * uses), the floor any broker-based design pays.  It prints p50/p99/mean
 * in microseconds.  It never asserts anything: speed is reported, not
 * tested, because machines are noisy.
 *
 * By default it starts a private broker in a temporary directory (found
 * via $COORD_BROKER, next to this binary in a build tree, or on PATH) and
 * stops it at the end; --dir uses an existing instance instead.
 *
 * Then, unless --no-python, it runs the Python binding's rows on the same
 * instance: bindings/python/bench.py, under /usr/bin/python3 (--python
 * names another), which times the coord package beside the filelock,
 * fasteners and portalocker packages (see that file).  They are skipped,
 * with a note, when the script, the interpreter or the package is not
 * there.  Arguments after "--" go to the script.
 *
 * --load CLIENTS:RESOURCES:READ_SHARE:SECONDS measures the broker under
 * load instead (run_load()): throughput, latency and its CPU per grant. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"

static int iterations = 20000;
static int handoffs = 300;
static char lockfile[PATH_MAX + 32];
static char resource[PATH_MAX + 32];

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static pid_t main_pid; /* the children fork()ed for handoffs and reclaims are not it */

static void die(const char *what, int rc)
{
	fprintf(stderr, "coord-bench: %s: %s\n", what, rc < 0 ? coord_strerror(rc) : strerror(errno));
	if (getpid() != main_pid)
		_exit(1); /* the private broker and its directory are the parent's */
	exit(1);
}

struct stats {
	double p50, p99, mean;
};

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static struct stats summarize(int64_t *ns, int n)
{
	struct stats s = { 0 };
	double sum = 0;
	qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
	for (int i = 0; i < n; i++)
		sum += (double)ns[i];
	s.p50 = ns[n / 2] / 1000.0;
	s.p99 = ns[(n * 99) / 100] / 1000.0;
	s.mean = sum / n / 1000.0;
	return s;
}

static void row(const char *what, const char *who, struct stats s)
{
	printf("  %-38s %-8s %9.2f %9.2f %9.2f\n", what, who, s.p50, s.p99, s.mean);
}

/* ---- uncontended ---- */

static struct stats bench_unix_rtt(void)
{
	int sv[2];
	int64_t *ns = malloc(sizeof *ns * (size_t)iterations);
	char buf[64] = { 0 };
	pid_t pid;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		die("socketpair", 0);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		ssize_t n;
		while ((n = recv(sv[1], buf, sizeof buf, 0)) > 0)
			if (send(sv[1], buf, (size_t)n, 0) != n)
				break;
		_exit(0);
	}
	close(sv[1]);
	for (int i = 0; i < iterations; i++) {
		int64_t t0 = now_ns();
		if (send(sv[0], buf, 32, 0) != 32 || recv(sv[0], buf, sizeof buf, 0) != 32)
			die("unix round trip", 0);
		ns[i] = now_ns() - t0;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	struct stats s = summarize(ns, iterations);
	free(ns);
	return s;
}

static int ofd_lock(int fd, short type, int wait)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET };
	return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

static coord_t *connect_or_die(void)
{
	coord_t *c;
	int rc = coord_connect(&c, NULL);
	if (rc < 0)
		die("connect to the broker", rc);
	return c;
}

/* ---- locks of every kind ---- */

/* coord by path (coord_acquire() resolves the name every time), coord
 * through a resource handle opened once, flock(2), fcntl(2) OFD locks. */
enum lock_kind { K_COORD, K_COORD_HANDLE, K_FLOCK, K_FCNTL };

/* A lock of one kind, held by the calling process. */
struct lock {
	enum lock_kind kind;
	coord_t *c;
	coord_resource_t *r;
	coord_lease_t *l;
	int fd;
};

static void lock_open(struct lock *k, enum lock_kind kind)
{
	int rc;
	memset(k, 0, sizeof *k);
	k->kind = kind;
	k->fd = -1;
	if (kind == K_COORD || kind == K_COORD_HANDLE)
		k->c = connect_or_die();
	else
		k->fd = open(lockfile, O_RDWR | O_CREAT, 0600);
	if (kind == K_COORD_HANDLE && (rc = coord_resource_open(k->c, resource, &k->r)) < 0)
		die("open the resource", rc);
}

/* Takes the lock in mode COORD_READ or COORD_WRITE, waiting as long as
 * it takes. */
static void lock_take(struct lock *k, int mode)
{
	int rc;
	switch (k->kind) {
	case K_COORD:
		rc = coord_acquire(k->c, resource, mode, -1, "bench", &k->l);
		break;
	case K_COORD_HANDLE:
		rc = coord_resource_acquire(k->r, mode, -1, "bench", &k->l);
		break;
	case K_FLOCK:
		rc = flock(k->fd, mode == COORD_WRITE ? LOCK_EX : LOCK_SH);
		break;
	default:
		rc = ofd_lock(k->fd, mode == COORD_WRITE ? F_WRLCK : F_RDLCK, 1);
		break;
	}
	if (rc < 0)
		die("lock", rc);
}

static void lock_drop(struct lock *k)
{
	int rc;
	if (k->kind == K_COORD || k->kind == K_COORD_HANDLE)
		rc = coord_release(k->l);
	else if (k->kind == K_FLOCK)
		rc = flock(k->fd, LOCK_UN);
	else
		rc = ofd_lock(k->fd, F_UNLCK, 0);
	if (rc < 0)
		die("unlock", rc);
}

static void lock_close(struct lock *k)
{
	coord_resource_close(k->r);
	coord_disconnect(k->c);
	if (k->fd >= 0)
		close(k->fd);
}

/* ---- uncontended ---- */

static struct stats bench_uncontended(enum lock_kind kind, int mode)
{
	int64_t *ns = malloc(sizeof *ns * (size_t)iterations);
	struct lock k;
	lock_open(&k, kind);
	for (int i = 0; i < iterations; i++) {
		int64_t t0 = now_ns();
		lock_take(&k, mode);
		lock_drop(&k);
		ns[i] = now_ns() - t0;
	}
	lock_close(&k);
	struct stats s = summarize(ns, iterations);
	free(ns);
	return s;
}

/* ---- handoff and reclaim ---- */

struct shared_times {
	volatile int64_t t0, t1;
};

/* waiter: for each round, waits for the lock, stamps t1, releases, and
 * reports on the pipe. */
static void handoff_waiter(enum lock_kind kind, struct shared_times *st, int go_fd, int done_fd,
                           int rounds)
{
	struct lock k;
	char ch;
	lock_open(&k, kind);
	for (int i = 0; i < rounds; i++) {
		if (read(go_fd, &ch, 1) != 1)
			_exit(1);
		lock_take(&k, COORD_WRITE);
		st[i].t1 = now_ns();
		lock_drop(&k);
		if (write(done_fd, "d", 1) != 1)
			_exit(1);
	}
	_exit(0);
}

/* Gives the waiter time to block before the clock starts.  Nothing
 * reports "blocked in flock()", so all three kinds get the same 2 ms; a
 * waiter that was not blocked yet would only inflate its own figure. */
static void wait_until_blocked(void)
{
	struct timespec ts = { 0, 2000000 };
	nanosleep(&ts, NULL);
}

static struct stats bench_handoff(enum lock_kind kind)
{
	struct shared_times *st = mmap(NULL, sizeof *st * (size_t)handoffs, PROT_READ | PROT_WRITE,
	                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int go[2], done[2];
	int64_t *ns = malloc(sizeof *ns * (size_t)handoffs);
	struct lock k;
	pid_t pid;
	char ch;
	if (pipe(go) < 0 || pipe(done) < 0)
		die("pipe", 0);
	pid = fork();
	if (pid == 0)
		handoff_waiter(kind, st, go[0], done[1], handoffs);
	lock_open(&k, kind);
	for (int i = 0; i < handoffs; i++) {
		lock_take(&k, COORD_WRITE);
		if (write(go[1], "g", 1) != 1)
			die("pipe", 0);
		wait_until_blocked();
		st[i].t0 = now_ns();
		lock_drop(&k);
		if (read(done[0], &ch, 1) != 1)
			die("waiter died", 0);
		ns[i] = st[i].t1 - st[i].t0;
	}
	waitpid(pid, NULL, 0);
	lock_close(&k);
	struct stats s = summarize(ns, handoffs);
	free(ns);
	munmap(st, sizeof *st * (size_t)handoffs);
	return s;
}

static struct stats bench_reclaim(enum lock_kind kind, int rounds)
{
	struct shared_times *st = mmap(NULL, sizeof *st * (size_t)rounds, PROT_READ | PROT_WRITE,
	                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int64_t *ns = malloc(sizeof *ns * (size_t)rounds);
	for (int i = 0; i < rounds; i++) {
		int held[2], go[2], done[2];
		pid_t holder, waiter;
		char ch;
		if (pipe(held) < 0 || pipe(go) < 0 || pipe(done) < 0)
			die("pipe", 0);
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
		if (read(held[0], &ch, 1) != 1)
			die("holder died", 0);
		waiter = fork();
		if (waiter == 0) {
			struct lock k;
			lock_open(&k, kind);
			if (write(go[1], "r", 1) != 1)
				_exit(1);
			lock_take(&k, COORD_WRITE);
			st[i].t1 = now_ns();
			lock_drop(&k);
			if (write(done[1], "d", 1) != 1)
				_exit(1);
			_exit(0);
		}
		if (read(go[0], &ch, 1) != 1)
			die("waiter died", 0);
		wait_until_blocked();
		st[i].t0 = now_ns();
		kill(holder, SIGKILL);
		if (read(done[0], &ch, 1) != 1)
			die("waiter died", 0);
		ns[i] = st[i].t1 - st[i].t0;
		waitpid(holder, NULL, 0);
		waitpid(waiter, NULL, 0);
		close(held[0]);
		close(held[1]);
		close(go[0]);
		close(go[1]);
		close(done[0]);
		close(done[1]);
	}
	struct stats s = summarize(ns, rounds);
	free(ns);
	munmap(st, sizeof *st * (size_t)rounds);
	return s;
}

/* ---- recall ---- */

struct recall_times {
	volatile int64_t t0, t1; /* the writer asks; the reader releases */
};

/* The idle reader: holds a read lease, sleeps in poll() on its recall
 * descriptor, releases when woken, and takes the lease again (it queues
 * behind the writer) for the next round. */
static void recall_reader(struct recall_times *rt, int held_fd, int rounds)
{
	coord_t *c = connect_or_die();
	coord_lease_t *l;
	int fd = coord_recall_fd(c), rc;
	if (fd < 0)
		die("coord_recall_fd", fd);
	for (int i = 0; i < rounds; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		rc = coord_acquire(c, resource, COORD_READ, -1, "bench-reader", &l);
		if (rc < 0)
			die("reader acquire", rc);
		if (write(held_fd, "h", 1) != 1)
			_exit(1);
		do {
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				die("poll", 0);
			rc = coord_recall_clear(c);
		} while (rc == 0);
		if (rc < 0)
			die("coord_recall_clear", rc);
		rt[i].t1 = now_ns();
		coord_release(l);
	}
	coord_disconnect(c);
	_exit(0);
}

static void bench_recall(struct stats *to_release, struct stats *to_writer)
{
	struct recall_times *rt = mmap(NULL, sizeof *rt * (size_t)handoffs, PROT_READ | PROT_WRITE,
	                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int64_t *rel = malloc(sizeof *rel * (size_t)handoffs), *run = malloc(sizeof *run * (size_t)handoffs);
	coord_t *c = connect_or_die();
	int held[2], rc;
	pid_t pid;
	char ch;
	if (pipe(held) < 0)
		die("pipe", 0);
	pid = fork();
	if (pid == 0)
		recall_reader(rt, held[1], handoffs);
	for (int i = 0; i < handoffs; i++) {
		coord_lease_t *l;
		if (read(held[0], &ch, 1) != 1)
			die("reader died", 0);
		rt[i].t0 = now_ns();
		rc = coord_acquire(c, resource, COORD_WRITE, -1, "bench-writer", &l);
		if (rc < 0)
			die("writer acquire", rc);
		run[i] = now_ns() - rt[i].t0;
		rel[i] = rt[i].t1 - rt[i].t0;
		coord_release(l);
	}
	waitpid(pid, NULL, 0);
	coord_disconnect(c);
	*to_release = summarize(rel, handoffs);
	*to_writer = summarize(run, handoffs);
	free(rel);
	free(run);
	munmap(rt, sizeof *rt * (size_t)handoffs);
}

/* ---- the Python rows ---- */

/* Where bench.py is, beside this binary: in a build tree, as
 * ../bindings/python/bench.py (a link to the source tree's, so that Python
 * finds the package beside the link's target); installed, as
 * ../libexec/coord/coord-bench.py.  In a build tree, the package is told
 * to load the build's libcoord.so.0 (COORD_LIBRARY).  0 when not found. */
static int find_python_script(char *script, size_t size)
{
	char self[PATH_MAX], lib[PATH_MAX + 32];
	const char *bindir;
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return 0;
	self[n] = 0;
	bindir = dirname(self);
	snprintf(script, size, "%s/../bindings/python/bench.py", bindir);
	if (access(script, R_OK) == 0) {
		snprintf(lib, sizeof lib, "%s/../libcoord/libcoord.so.0", bindir);
		if (access(lib, R_OK) == 0)
			setenv("COORD_LIBRARY", lib, 0);
		return 1;
	}
	snprintf(script, size, "%s/../libexec/coord/coord-bench.py", bindir);
	return access(script, R_OK) == 0;
}

/* Runs the script on the instance dir, with the arguments after "--".
 * Returns 0 when it ran or was skipped (with a note), 1 when it failed. */
static int run_python_rows(const char *python, const char *dir, char **extra, int nextra)
{
	char script[PATH_MAX + 64];
	char **argv;
	int status, i;
	pid_t pid;
	if (!find_python_script(script, sizeof script)) {
		printf("\n(no Python rows: bench.py is neither in this build tree nor installed)\n");
		return 0;
	}
	if (access(python, X_OK) != 0) {
		printf("\n(no Python rows: %s: %s)\n", python, strerror(errno));
		return 0;
	}
	argv = calloc((size_t)nextra + 5, sizeof *argv);
	if (!argv)
		die("calloc", 0);
	argv[0] = (char *)python;
	argv[1] = script;
	argv[2] = "--dir";
	argv[3] = (char *)dir;
	for (i = 0; i < nextra; i++)
		argv[4 + i] = extra[i];
	setenv("PYTHONDONTWRITEBYTECODE", "1", 1); /* nothing written into a source tree */
	printf("\n");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork", 0);
	if (pid == 0) {
		execv(python, argv);
		fprintf(stderr, "coord-bench: exec %s %s: %s\n", python, script, strerror(errno));
		_exit(127);
	}
	free(argv);
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid", 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		printf("(no Python rows: the coord package cannot be imported; see above)\n");
		return 0;
	}
	fprintf(stderr, "coord-bench: the Python rows failed: %s %s exited with status %d\n", python,
	        script, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 1;
}

/* ---- load: many clients, many resources, the broker's cost ---- */

/* --load CLIENTS:RESOURCES:READ_SHARE:SECONDS.  CLIENTS processes, each
 * with its own connection and a handle on each of RESOURCES keys, loop
 * acquire+release on a random one (a read with probability READ_SHARE,
 * else a write) for SECONDS.  Latencies go to a histogram in shared
 * memory (1 us buckets up to LOAD_BUCKETS us); the broker's CPU time
 * (utime+stime of /proc/PID/stat) is read before and after. */
#define LOAD_BUCKETS 200000

struct load_shared {
	volatile int go;
	uint64_t grants[64];
	uint64_t errors[64];
	uint32_t hist[64][LOAD_BUCKETS + 1];
};

static void load_client(struct load_shared *sh, int me, int nres, double read_share,
                        int seconds, int ready_fd)
{
	coord_t *c = connect_or_die();
	coord_resource_t **r = calloc((size_t)nres, sizeof *r);
	unsigned seed = (unsigned)getpid();
	char name[64];
	for (int i = 0; i < nres; i++) {
		snprintf(name, sizeof name, "key:load-%d", i);
		int rc = coord_resource_open(c, name, &r[i]);
		if (rc < 0)
			die("coord_resource_open", rc);
	}
	if (write(ready_fd, "r", 1) != 1)
		_exit(1);
	close(ready_fd);
	while (!sh->go)
		usleep(1000);
	int64_t end_ns = now_ns() + (int64_t)seconds * 1000000000;
	for (;;) {
		int64_t t0 = now_ns();
		coord_lease_t *l;
		int mode = (double)rand_r(&seed) / RAND_MAX < read_share ? COORD_READ : COORD_WRITE;
		int rc;
		if (t0 >= end_ns)
			break;
		rc = coord_resource_acquire(r[rand_r(&seed) % (unsigned)nres], mode, 10000, NULL, &l);
		if (rc < 0) {
			sh->errors[me]++;
			continue;
		}
		coord_release(l);
		int64_t us = (now_ns() - t0) / 1000;
		sh->hist[me][us < LOAD_BUCKETS ? us : LOAD_BUCKETS]++;
		sh->grants[me]++;
	}
	for (int i = 0; i < nres; i++)
		coord_resource_close(r[i]);
	coord_disconnect(c);
	_exit(0);
}

/* utime+stime of pid, in clock ticks; -1 if unreadable. */
static long long proc_cpu_ticks(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	/* fields 14 and 15; field 3 follows ") " */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

static int broker_pid(const char *dir)
{
	char path[PATH_MAX + 32];
	int pid = 0;
	FILE *f;
	snprintf(path, sizeof path, "%s/coordd.lock", dir);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

static double load_percentile(const uint64_t *h, uint64_t total, double q)
{
	uint64_t want = (uint64_t)(q * (double)total), seen = 0;
	for (int i = 0; i <= LOAD_BUCKETS; i++) {
		seen += h[i];
		if (seen > want)
			return i;
	}
	return LOAD_BUCKETS;
}

static int run_load(const char *spec, const char *dir)
{
	int nclients, nres, seconds, p[2], bpid;
	double share;
	struct load_shared *sh;
	uint64_t grants = 0, errors = 0, *h;
	long long cpu0, cpu1;
	int64_t t0, t1;
	char ch;
	if (sscanf(spec, "%d:%d:%lf:%d", &nclients, &nres, &share, &seconds) != 4 || nclients < 1 ||
	    nclients > 64 || nres < 1 || share < 0 || share > 1 || seconds < 1) {
		fprintf(stderr, "coord-bench: --load CLIENTS:RESOURCES:READ_SHARE:SECONDS, e.g. "
		                "10:100:1.0:10 (CLIENTS 1-64, READ_SHARE 0-1)\n");
		return 64;
	}
	bpid = broker_pid(dir);
	if (bpid <= 0) {
		fprintf(stderr, "coord-bench: no broker pid in %s/coordd.lock\n", dir);
		return 1;
	}
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	h = calloc(LOAD_BUCKETS + 1, sizeof *h);
	if (sh == MAP_FAILED || !h || pipe(p) < 0)
		die("load setup", 0);
	for (int i = 0; i < nclients; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork", 0);
		if (pid == 0) {
			close(p[0]);
			load_client(sh, i, nres, share, seconds, p[1]);
		}
	}
	close(p[1]);
	/* Everyone connected, with its handles open: start the clock. */
	for (int i = 0; i < nclients; i++)
		if (read(p[0], &ch, 1) != 1)
			die("a load client failed to start", 0);
	close(p[0]);
	t0 = now_ns();
	cpu0 = proc_cpu_ticks(bpid);
	sh->go = 1;
	for (int i = 0; i < nclients; i++)
		wait(NULL);
	t1 = now_ns();
	cpu1 = proc_cpu_ticks(bpid);
	for (int i = 0; i < nclients; i++) {
		grants += sh->grants[i];
		errors += sh->errors[i];
		for (int k = 0; k <= LOAD_BUCKETS; k++)
			h[k] += sh->hist[i][k];
	}
	double secs = (double)(t1 - t0) / 1e9;
	double cpu_us = (double)(cpu1 - cpu0) * 1e6 / (double)sysconf(_SC_CLK_TCK);
	printf("coord-bench --load %d clients, %d resources, read share %.2f, %d s\n", nclients, nres,
	       share, seconds);
	printf("  grants %llu (errors %llu) in %.2f s: %.0f grants/s\n", (unsigned long long)grants,
	       (unsigned long long)errors, secs, (double)grants / secs);
	printf("  acquire+release us: p50 %.0f  p99 %.0f  p99.9 %.0f\n",
	       load_percentile(h, grants, 0.50), load_percentile(h, grants, 0.99),
	       load_percentile(h, grants, 0.999));
	printf("  broker pid %d CPU %.2f s (%.0f%% of one core): %.2f us per grant\n", bpid,
	       cpu_us / 1e6, cpu_us / 1e4 / secs, grants ? cpu_us / (double)grants : 0.0);
	munmap(sh, sizeof *sh);
	free(h);
	return 0;
}

/* ---- setup ---- */

static char tmpdir[PATH_MAX];

static void find_broker(void)
{
	char self[PATH_MAX], cand[PATH_MAX + 32];
	ssize_t n;
	if (getenv("COORD_BROKER"))
		return;
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		snprintf(cand, sizeof cand, "%s/../broker/coordd", dirname(self));
		if (access(cand, X_OK) == 0) {
			setenv("COORD_BROKER", cand, 1);
			return;
		}
		snprintf(cand, sizeof cand, "%s/coordd", self);
		if (access(cand, X_OK) == 0)
			setenv("COORD_BROKER", cand, 1);
	}
}

static void stop_private_broker(void)
{
	char path[PATH_MAX + 32], cmd[PATH_MAX + 32];
	FILE *f;
	int pid = 0;
	if (!tmpdir[0])
		return;
	snprintf(path, sizeof path, "%s/coordd.lock", tmpdir);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%d", &pid) == 1 && pid > 0)
			kill(pid, SIGTERM);
		fclose(f);
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "coord-bench: could not remove %s\n", tmpdir);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "iterations", required_argument, NULL, 'n' },
		{ "handoffs", required_argument, NULL, 'H' },
		{ "python", required_argument, NULL, 'P' },
		{ "no-python", no_argument, NULL, 'N' },
		{ "load", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *dir = NULL, *python = "/usr/bin/python3", *load = NULL;
	int opt, reclaims, with_python = 1;
	main_pid = getpid();
	while ((opt = getopt_long(argc, argv, "+d:n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'n':
			iterations = atoi(optarg);
			break;
		case 'H':
			handoffs = atoi(optarg);
			break;
		case 'P':
			python = optarg;
			break;
		case 'N':
			with_python = 0;
			break;
		case 'L':
			load = optarg;
			break;
		default:
			fprintf(opt == 'h' ? stdout : stderr,
			        "usage: coord-bench [--dir DIR] [--iterations N] [--handoffs N]\n"
			        "                   [--python PYTHON | --no-python] [-- BENCH.PY-ARGS]\n"
			        "       coord-bench [--dir DIR] --load CLIENTS:RESOURCES:READ_SHARE:SECONDS\n"
			        "Measures coord beside flock(2), fcntl(2) OFD locks and a Unix-socket\n"
			        "round trip; prints p50/p99/mean in microseconds.  Then the Python rows:\n"
			        "bindings/python/bench.py under PYTHON (default /usr/bin/python3), the\n"
			        "coord package beside filelock, fasteners and portalocker, on the same\n"
			        "instance; BENCH.PY-ARGS go to it (e.g. -- --iterations 2000).\n"
			        "--load: CLIENTS processes loop acquire+release on random keys of\n"
			        "RESOURCES (reads with probability READ_SHARE) for SECONDS; prints\n"
			        "grants/s, p50/p99/p99.9 and the broker's CPU time per grant.\n"
			        "Exit status: 0; 1 when a measurement failed; 64 on a usage error.\n");
			return opt == 'h' ? 0 : 64;
		}
	}
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		fprintf(stderr, "coord-bench: unexpected argument '%s' (arguments for the Python rows "
		                "come after --)\n", argv[optind]);
		return 64;
	}
	if (iterations < 100 || handoffs < 10) {
		fprintf(stderr, "coord-bench: --iterations >= 100 and --handoffs >= 10\n");
		return 64;
	}
	reclaims = handoffs / 3 > 10 ? handoffs / 3 : 10;
	if (!dir) {
		snprintf(tmpdir, sizeof tmpdir, "%s/coord-bench-XXXXXX",
		         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(tmpdir))
			die("mkdtemp", 0);
		dir = tmpdir;
		find_broker();
		unsetenv("COORD_NO_AUTOSTART");
		atexit(stop_private_broker);
	}
	setenv("COORD_DIR", dir, 1);
	snprintf(lockfile, sizeof lockfile, "%s/bench.lock", dir);
	snprintf(resource, sizeof resource, "%s/bench.db", dir);
	/* An existing file, like a real database: coord's figures include the
	 * kernel lock (flock) the library takes on it. */
	{
		int fd = open(resource, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			die(resource, 0);
		close(fd);
	}
	coord_disconnect(connect_or_die()); /* start the broker before timing */
	if (load)
		return run_load(load, dir);

	printf("coord-bench: %d iterations, %d handoffs, %d reclaims; times in microseconds\n",
	       iterations, handoffs, reclaims);
	printf("  %-38s %-8s %9s %9s %9s\n", "operation", "who", "p50", "p99", "mean");
	struct stats rtt = bench_unix_rtt();
	row("unix socket round trip", "socket", rtt);
	struct stats cw = bench_uncontended(K_COORD, COORD_WRITE);
	struct stats chw = bench_uncontended(K_COORD_HANDLE, COORD_WRITE);
	struct stats cr = bench_uncontended(K_COORD, COORD_READ);
	struct stats chr = bench_uncontended(K_COORD_HANDLE, COORD_READ);
	row("acquire+release write", "coord", cw);
	row("acquire+release write, handle", "coord", chw);
	row("acquire+release write", "flock", bench_uncontended(K_FLOCK, COORD_WRITE));
	row("acquire+release write", "fcntl", bench_uncontended(K_FCNTL, COORD_WRITE));
	row("acquire+release read", "coord", cr);
	row("acquire+release read, handle", "coord", chr);
	row("acquire+release read", "flock", bench_uncontended(K_FLOCK, COORD_READ));
	row("acquire+release read", "fcntl", bench_uncontended(K_FCNTL, COORD_READ));
	row("handoff release -> waiter runs", "coord", bench_handoff(K_COORD));
	row("handoff release -> waiter runs", "flock", bench_handoff(K_FLOCK));
	row("handoff release -> waiter runs", "fcntl", bench_handoff(K_FCNTL));
	struct stats rc = bench_reclaim(K_COORD, reclaims);
	row("reclaim SIGKILL -> waiter runs", "coord", rc);
	row("reclaim SIGKILL -> waiter runs", "flock", bench_reclaim(K_FLOCK, reclaims));
	row("reclaim SIGKILL -> waiter runs", "fcntl", bench_reclaim(K_FCNTL, reclaims));
	struct stats rrel, rrun;
	bench_recall(&rrel, &rrun);
	row("recall: writer asks -> reader lets go", "coord", rrel);
	row("recall: writer asks -> writer runs", "coord", rrun);
	printf("\n  acquire+release / socket round trip (p50): write %.2fx, read %.2fx (target <= 2x)\n",
	       cw.p50 / rtt.p50, cr.p50 / rtt.p50);
	printf("  the same through a resource handle:        write %.2fx, read %.2fx\n",
	       chw.p50 / rtt.p50, chr.p50 / rtt.p50);
	printf("  reclaim p99: %.0f us (target < 1000 us)\n", rc.p99);
	if (!with_python)
		return 0;
	return run_python_rows(python, dir, argv + optind, argc - optind);
}
