/* coord-bench --load: the broker under load, beside its peers under the
 * same load.  CLIENTS processes each take and drop a random one of
 * RESOURCES locks for SECONDS, a read with probability READ_SHARE, else a
 * write, and record each acquire+release in a histogram of their own in
 * shared memory.  For coord the run also reads the broker's CPU time
 * (utime+stime in /proc/PID/stat) before and after, and its resident
 * memory at the end while every client is still connected with its
 * handles open.  A list of client counts ("1,2,4:100:1.0:5") is a sweep,
 * one run per count, the rows that scripts/bench-plot.py draws.
 *
 * The variants: coord through resource handles with the library's
 * defaults (reads are cached), coord with no_cache (every operation is a
 * broker round trip: the broker's own throughput), and with --load-peers
 * flock(2) and OFD fcntl(2) locks on one file per resource and a
 * process-shared pthread rwlock per resource. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define LOAD_MAX_CLIENTS 4096
#define LOAD_MAX_COUNTS 32

enum load_kind { L_COORD, L_COORD_NOCACHE, L_FLOCK, L_FCNTL, L_RWLOCK };

static const char *const load_who[] = { "coord", "coord", "flock", "fcntl", "rwlock" };
static const char *const load_via[] = { "handle, cached", "handle, no cache", "fd", "OFD lock",
	                                "shared memory" };

struct load_slot {
	uint64_t ops, errors;
	struct hist h;
};

struct load_spec {
	int counts[LOAD_MAX_COUNTS], ncounts;
	int resources, seconds;
	double read_share;
};

/* The per-resource state a client of one kind needs. */
struct load_locks {
	enum load_kind kind;
	coord_t *c;
	coord_resource_t **r;
	int *fd;
	pthread_rwlock_t *rw; /* shared by all clients: the parent's mapping */
};

static void load_path(char *buf, size_t size, int i)
{
	snprintf(buf, size, "%s/load/%d.lock", bench.dir, i);
}

static void locks_open(struct load_locks *k, enum load_kind kind, int n, pthread_rwlock_t *rw)
{
	coord_options_t o = { .no_cache = kind == L_COORD_NOCACHE };
	char name[PATH_MAX + 64];
	int rc;
	memset(k, 0, sizeof *k);
	k->kind = kind;
	k->rw = rw;
	if (kind == L_COORD || kind == L_COORD_NOCACHE) {
		if ((rc = coord_connect(&k->c, &o)) < 0)
			bench_die("connect to the broker", rc);
		if (!(k->r = calloc((size_t)n, sizeof *k->r)))
			bench_die("calloc", 0);
		for (int i = 0; i < n; i++) {
			snprintf(name, sizeof name, "key:load-%d", i);
			if ((rc = coord_resource_open(k->c, name, &k->r[i])) < 0)
				bench_die("coord_resource_open", rc);
		}
	} else if (kind == L_FLOCK || kind == L_FCNTL) {
		if (!(k->fd = calloc((size_t)n, sizeof *k->fd)))
			bench_die("calloc", 0);
		for (int i = 0; i < n; i++) {
			load_path(name, sizeof name, i);
			if ((k->fd[i] = open(name, O_RDWR | O_CLOEXEC)) < 0)
				bench_die(name, 0);
		}
	}
}

/* One acquire+release of resource i; 0 or -1 (counted as an error). */
static int locks_cycle(struct load_locks *k, int i, int write)
{
	coord_lease_t *l;
	struct flock fl = { .l_whence = SEEK_SET };
	int rc = 0;
	switch (k->kind) {
	case L_COORD:
	case L_COORD_NOCACHE:
		rc = coord_resource_acquire(k->r[i], write ? COORD_WRITE : COORD_READ, 10000, NULL, &l);
		if (rc < 0)
			return -1;
		return coord_release(l) < 0 ? -1 : 0;
	case L_FLOCK:
		if (flock(k->fd[i], write ? LOCK_EX : LOCK_SH) < 0)
			return -1;
		return flock(k->fd[i], LOCK_UN);
	case L_FCNTL:
		fl.l_type = write ? F_WRLCK : F_RDLCK;
		if (fcntl(k->fd[i], F_OFD_SETLKW, &fl) < 0)
			return -1;
		fl.l_type = F_UNLCK;
		return fcntl(k->fd[i], F_OFD_SETLK, &fl);
	case L_RWLOCK:
		rc = write ? pthread_rwlock_wrlock(&k->rw[i]) : pthread_rwlock_rdlock(&k->rw[i]);
		if (rc)
			return -1;
		pthread_rwlock_unlock(&k->rw[i]);
		return 0;
	}
	return -1;
}

/* A load client: sets up, says so on ready_fd, waits for the start (EOF on
 * go_fd), runs for the spec's seconds, says so on done_fd, and stays
 * connected until the parent has read the broker's memory (EOF on quit_fd). */
static _Noreturn void load_client(enum load_kind kind, const struct load_spec *sp,
                                  struct load_slot *slot, pthread_rwlock_t *rw, int fds[4])
{
	struct load_locks k;
	unsigned seed = (unsigned)getpid() * 2654435761u;
	char ch;
	locks_open(&k, kind, sp->resources, rw);
	if (write(fds[0], "r", 1) != 1 || read(fds[1], &ch, 1) != 0)
		_exit(1);
	int64_t end = bench_now_ns() + (int64_t)sp->seconds * 1000000000;
	unsigned share = (unsigned)(sp->read_share * 1000000);
	for (;;) {
		int64_t t0 = bench_now_ns();
		if (t0 >= end)
			break;
		int write_mode = (unsigned)rand_r(&seed) % 1000000 >= share;
		int i = (int)((unsigned)rand_r(&seed) % (unsigned)sp->resources);
		if (locks_cycle(&k, i, write_mode) < 0) {
			slot->errors++;
			continue;
		}
		hist_add(&slot->h, bench_now_ns() - t0);
		slot->ops++;
	}
	if (write(fds[2], "d", 1) != 1)
		_exit(1);
	if (read(fds[3], &ch, 1) != 0)
		_exit(1);
	_exit(0); /* the kernel closes what it holds; the broker sees the hangups */
}

/* utime+stime of pid in clock ticks, -1 if unreadable. */
static long long proc_cpu_ticks(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	if (!(f = fopen(path, "r")))
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

static long proc_rss_kib(int pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int broker_pid(void)
{
	char path[PATH_MAX + 32];
	int pid = 0;
	FILE *f;
	snprintf(path, sizeof path, "%s/coordd.lock", bench.dir);
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

/* One run of one kind with n clients. */
static void load_run(enum load_kind kind, const struct load_spec *sp, int n, pthread_rwlock_t *rw)
{
	size_t size = sizeof(struct load_slot) * (size_t)n;
	struct load_slot *slots = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                               -1, 0);
	struct hist *all = calloc(1, sizeof *all);
	struct load_result r = { .who = load_who[kind], .via = load_via[kind], .clients = n,
		                 .resources = sp->resources, .seconds = sp->seconds,
		                 .read_share = sp->read_share, .broker_cpu_us = -1,
		                 .broker_rss_kib = -1 };
	int ready[2], go[2], done[2], quit[2], bpid = 0;
	long long cpu0 = -1, cpu1 = -1;
	int64_t t0, t1;
	char ch;
	if (slots == MAP_FAILED || !all || pipe(ready) < 0 || pipe(go) < 0 || pipe(done) < 0 ||
	    pipe(quit) < 0)
		bench_die("load setup", 0);
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			bench_die("fork", 0);
		if (pid == 0) {
			int fds[4] = { ready[1], go[0], done[1], quit[0] };
			close(ready[0]);
			close(go[1]);
			close(done[0]);
			close(quit[1]);
			load_client(kind, sp, &slots[i], rw, fds);
		}
	}
	close(ready[1]);
	close(go[0]);
	close(done[1]);
	close(quit[0]);
	for (int i = 0; i < n; i++)
		if (read(ready[0], &ch, 1) != 1)
			bench_die("a load client failed to start", 1);
	if (kind == L_COORD || kind == L_COORD_NOCACHE) {
		bpid = broker_pid();
		cpu0 = proc_cpu_ticks(bpid);
	}
	t0 = bench_now_ns();
	close(go[1]); /* everyone starts */
	for (int i = 0; i < n; i++)
		if (read(done[0], &ch, 1) != 1)
			bench_die("a load client died", 1);
	t1 = bench_now_ns();
	if (bpid > 0) {
		cpu1 = proc_cpu_ticks(bpid);
		r.broker_rss_kib = proc_rss_kib(bpid);
	}
	close(quit[1]); /* everyone goes */
	for (int i = 0; i < n; i++)
		wait(NULL);
	for (int i = 0; i < n; i++) {
		r.ops += slots[i].ops;
		r.errors += slots[i].errors;
		hist_merge(all, &slots[i].h);
	}
	double secs = (double)(t1 - t0) / 1e9;
	r.ops_per_s = (double)r.ops / secs;
	r.p50 = hist_quantile_us(all, 0.50);
	r.p99 = hist_quantile_us(all, 0.99);
	r.p999 = hist_quantile_us(all, 0.999);
	if (cpu0 >= 0 && cpu1 >= 0 && r.ops)
		r.broker_cpu_us = (double)(cpu1 - cpu0) * 1e6 / (double)sysconf(_SC_CLK_TCK) /
		                  (double)r.ops;
	out_load(&r);
	close(ready[0]);
	close(done[0]);
	munmap(slots, size);
	free(all);
}

static int parse_spec(const char *spec, struct load_spec *sp)
{
	char counts[256];
	const char *colon = strchr(spec, ':');
	memset(sp, 0, sizeof *sp);
	if (!colon || (size_t)(colon - spec) >= sizeof counts)
		return -1;
	memcpy(counts, spec, (size_t)(colon - spec));
	counts[colon - spec] = 0;
	if (sscanf(colon + 1, "%d:%lf:%d", &sp->resources, &sp->read_share, &sp->seconds) != 3 ||
	    sp->resources < 1 || sp->read_share < 0 || sp->read_share > 1 || sp->seconds < 1)
		return -1;
	for (char *save = NULL, *t = strtok_r(counts, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *end;
		long v = strtol(t, &end, 10);
		if (*end || v < 1 || v > LOAD_MAX_CLIENTS || sp->ncounts == LOAD_MAX_COUNTS)
			return -1;
		sp->counts[sp->ncounts++] = (int)v;
	}
	return sp->ncounts ? 0 : -1;
}

/* Enough descriptors for the largest run: each flock client opens one per
 * resource; the broker is its own process with its own limit. */
static int raise_fd_limit(int want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	if (rl.rlim_cur >= (rlim_t)want)
		return 0;
	rl.rlim_cur = rl.rlim_max >= (rlim_t)want ? (rlim_t)want : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	return rl.rlim_cur >= (rlim_t)want ? 0 : -1;
}

int bench_load(const char *spec, int no_cache, int peers)
{
	struct load_spec sp;
	pthread_rwlock_t *rw = NULL;
	size_t rw_size = 0;
	int peers_fd_ok = 1;
	if (parse_spec(spec, &sp) < 0) {
		fprintf(stderr, "coord-bench: --load CLIENTS[,CLIENTS...]:RESOURCES:READ_SHARE:SECONDS, "
		                "e.g. 10:100:1.0:10 or 1,2,4,8:100:0.9:5 (CLIENTS 1-%d, READ_SHARE "
		                "0-1, SECONDS >= 1)\n", LOAD_MAX_CLIENTS);
		return 64;
	}
	if (peers) {
		char path[PATH_MAX + 64];
		pthread_rwlockattr_t a;
		snprintf(path, sizeof path, "%s/load", bench.dir);
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			bench_die(path, 0);
		for (int i = 0; i < sp.resources; i++) {
			int fd;
			load_path(path, sizeof path, i);
			if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
				bench_die(path, 0);
			close(fd);
		}
		peers_fd_ok = raise_fd_limit(sp.resources + 64) == 0;
		rw_size = sizeof *rw * (size_t)sp.resources;
		rw = mmap(NULL, rw_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (rw == MAP_FAILED)
			bench_die("mmap", 0);
		pthread_rwlockattr_init(&a);
		pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
		for (int i = 0; i < sp.resources; i++)
			pthread_rwlock_init(&rw[i], &a);
		pthread_rwlockattr_destroy(&a);
	}
	if (!bench.json) {
		printf("coord-bench --load %s: each client takes and drops a random one of the "
		       "resources for %d s\n", spec, sp.seconds);
		printf("  latency: acquire+release in microseconds; broker: CPU us per operation, "
		       "RSS MiB at the end\n");
		printf("  %-6s %-16s %7s %9s %5s %12s %9s %9s %9s %8s %8s\n", "who", "via", "clients",
		       "resources", "read", "ops/s", "p50", "p99", "p99.9", "cpu/op", "rss");
	}
	for (int c = 0; c < sp.ncounts; c++) {
		int n = sp.counts[c];
		/* Writes are never cached: the default variant is the same as
		 * no_cache when every operation is a write. */
		if (!no_cache && sp.read_share > 0)
			load_run(L_COORD, &sp, n, NULL);
		load_run(L_COORD_NOCACHE, &sp, n, NULL);
		if (!peers)
			continue;
		if (peers_fd_ok) {
			load_run(L_FLOCK, &sp, n, NULL);
			load_run(L_FCNTL, &sp, n, NULL);
		}
		load_run(L_RWLOCK, &sp, n, rw);
	}
	if (peers && !peers_fd_ok)
		out_note("flock and fcntl rows skipped: %d resources need more descriptors than the "
		         "limit allows (ulimit -n)", sp.resources);
	if (rw)
		munmap(rw, rw_size);
	return 0;
}
