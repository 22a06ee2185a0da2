/* coord-bench: how fast coord is, measured beside its peers in the same
 * run on the same machine.
 *
 * The rows (bench_locks.c), for coord and, where they apply, for flock(2),
 * fcntl(2) OFD locks, a process-shared pthread rwlock (the shared-memory
 * floor) and SQLite's BEGIN IMMEDIATE/COMMIT on a WAL database:
 *   - uncontended acquire+release, read and write; for coord by path
 *     (coord_acquire() resolves the name every time), through a resource
 *     handle opened once, whose reads are cached, and through a handle on a
 *     connection without the cache (every read asks the broker);
 *   - the same in batches of 100, per operation, for the fastest ones: the
 *     lock without the clock's cost;
 *   - handoff: from the holder's release to a blocked waiter running;
 *   - reclaim: from SIGKILL of the holder to the waiter running;
 *   - recall (coord only): an idle reader waits on coord_recall_fd() and
 *     lets go when a writer asks;
 * and a Unix-socket round trip (SOCK_SEQPACKET, coord's transport), free
 * and pinned across CPUs, the floor any broker-based design pays.  Then it
 * prints the speed targets with this run's figures.  It never asserts a
 * time: speed is reported, not tested, because machines are noisy.
 *
 * --load runs the load mode instead (bench_load.c): N client processes on
 * M resources, giving operations/s, p50/p99/p99.9, and the broker's CPU
 * per grant and memory.  --json prints every row as one JSON object per
 * line (scripts/bench-plot.py draws them).
 *
 * By default it starts a private broker in a temporary directory (found
 * via $COORD_BROKER, next to this binary in a build tree, or on PATH) and
 * stops it at the end; --dir uses an existing instance instead.  Unless
 * --no-python, it then runs the Python binding's rows on the same instance
 * (bindings/python/bench.py; see run_python_rows()). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

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
		out_note("(no Python rows: bench.py is neither in this build tree nor installed)");
		return 0;
	}
	if (access(python, X_OK) != 0) {
		out_note("(no Python rows: %s: %s)", python, strerror(errno));
		return 0;
	}
	argv = calloc((size_t)nextra + 6, sizeof *argv);
	if (!argv)
		bench_die("calloc", 0);
	argv[0] = (char *)python;
	argv[1] = script;
	argv[2] = "--dir";
	argv[3] = (char *)dir;
	i = 4;
	if (bench.json)
		argv[i++] = "--json";
	for (int j = 0; j < nextra; j++)
		argv[i++] = extra[j];
	setenv("PYTHONDONTWRITEBYTECODE", "1", 1); /* nothing written into a source tree */
	if (!bench.json)
		printf("\n");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		bench_die("fork", 0);
	if (pid == 0) {
		execv(python, argv);
		fprintf(stderr, "coord-bench: exec %s %s: %s\n", python, script, strerror(errno));
		_exit(127);
	}
	free(argv);
	if (waitpid(pid, &status, 0) < 0)
		bench_die("waitpid", 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		out_note("(no Python rows: the coord package cannot be imported; see above)");
		return 0;
	}
	fprintf(stderr, "coord-bench: the Python rows failed: %s %s exited with status %d\n", python,
	        script, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 1;
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

static void run_header(void)
{
	struct utsname u;
	uname(&u);
	if (bench.json) {
		printf("{\"row\":\"run\",\"iterations\":%d,\"handoffs\":%d,\"reclaims\":%d,"
		       "\"cpus\":%ld,\"kernel\":\"%s\",\"machine\":\"%s\",\"coord\":\"%d.%d\"}\n",
		       bench.iterations, bench.handoffs, bench.reclaims, sysconf(_SC_NPROCESSORS_ONLN),
		       u.release, u.machine, COORD_VERSION_MAJOR, COORD_VERSION_MINOR);
		return;
	}
	printf("coord-bench: %d iterations, %d handoffs, %d reclaims on %ld CPUs (Linux %s); "
	       "times in microseconds\n", bench.iterations, bench.handoffs, bench.reclaims,
	       sysconf(_SC_NPROCESSORS_ONLN), u.release);
}

static double ratio(struct stats a, struct stats b)
{
	return b.p50 > 0 ? a.p50 / b.p50 : 0;
}

/* The rows, then the speed targets with this run's figures. */
static void run_rows(void)
{
	static const enum lock_kind uncontended_write[] = { K_COORD_PATH, K_COORD_HANDLE, K_FLOCK,
		                                            K_FCNTL, K_RWLOCK, K_SQLITE };
	static const enum lock_kind peers[] = { K_FLOCK, K_FCNTL, K_RWLOCK };
	static const enum lock_kind handoff[] = { K_COORD_HANDLE, K_FLOCK, K_FCNTL, K_RWLOCK,
		                                  K_SQLITE };
	static const enum lock_kind reclaim[] = { K_COORD_HANDLE, K_FLOCK, K_FCNTL, K_SQLITE };
	struct stats rtt, rtt_x, path_r, nocache_r, cached_r, flock_r, rc, flock_rc, s;
	const char *ar = "acquire+release";

	out_header();
	rtt = bench_unix_rtt(0);
	out_row("socket round trip", "", "socket", "SEQPACKET", rtt);
	rtt_x = bench_unix_rtt(1);
	out_row("socket round trip", "", "socket", "across CPUs", rtt_x);

	for (size_t i = 0; i < sizeof uncontended_write / sizeof *uncontended_write; i++) {
		enum lock_kind k = uncontended_write[i];
		out_row(ar, "write", lock_who(k), lock_via(k, COORD_WRITE), bench_uncontended(k, COORD_WRITE));
	}
	path_r = bench_uncontended(K_COORD_PATH, COORD_READ);
	out_row(ar, "read", "coord", lock_via(K_COORD_PATH, COORD_READ), path_r);
	nocache_r = bench_uncontended(K_COORD_NOCACHE, COORD_READ);
	out_row(ar, "read", "coord", lock_via(K_COORD_NOCACHE, COORD_READ), nocache_r);
	cached_r = bench_uncontended(K_COORD_HANDLE, COORD_READ);
	out_row(ar, "read", "coord", lock_via(K_COORD_HANDLE, COORD_READ), cached_r);
	for (size_t i = 0; i < sizeof peers / sizeof *peers; i++) {
		s = bench_uncontended(peers[i], COORD_READ);
		if (peers[i] == K_FLOCK)
			flock_r = s;
		out_row(ar, "read", lock_who(peers[i]), lock_via(peers[i], COORD_READ), s);
	}
	out_row("acquire+release, 100 per sample", "read", "coord",
	        lock_via(K_COORD_HANDLE, COORD_READ), bench_batched(K_COORD_HANDLE, COORD_READ, 100));
	for (size_t i = 0; i < sizeof peers / sizeof *peers; i++)
		out_row("acquire+release, 100 per sample", "read", lock_who(peers[i]),
		        lock_via(peers[i], COORD_READ), bench_batched(peers[i], COORD_READ, 100));

	for (size_t i = 0; i < sizeof handoff / sizeof *handoff; i++)
		out_row("handoff: release -> waiter runs", "write", lock_who(handoff[i]),
		        lock_via(handoff[i], COORD_WRITE), bench_handoff(handoff[i]));
	for (size_t i = 0; i < sizeof reclaim / sizeof *reclaim; i++) {
		s = bench_reclaim(reclaim[i]);
		if (i == 0)
			rc = s;
		else if (reclaim[i] == K_FLOCK)
			flock_rc = s;
		out_row("reclaim: SIGKILL -> waiter runs", "write", lock_who(reclaim[i]),
		        lock_via(reclaim[i], COORD_WRITE), s);
	}
	out_none("reclaim: SIGKILL -> waiter runs", "write", "rwlock", lock_via(K_RWLOCK, COORD_WRITE),
	         "never: a dead holder's rwlock stays held");
	struct stats rrel, rrun;
	bench_recall(&rrel, &rrun);
	out_row("recall: writer asks -> reader lets go", "read", "coord", "path", rrel);
	out_row("recall: writer asks -> writer runs", "write", "coord", "path", rrun);

	if (!bench.json)
		printf("\nTargets, with this run's figures (p50 unless named):\n");
	out_target("cached read acquire+release, us", cached_r.p50, "us", 0.1);
	out_target("cached read / flock read", ratio(cached_r, flock_r), "x", 0.3);
	out_target("read through the broker (handle, no cache) / socket across CPUs",
	           ratio(nocache_r, rtt_x), "x", 1.2);
	out_target("reclaim after SIGKILL / flock's", ratio(rc, flock_rc), "x", 1.5);
	out_target("reclaim after SIGKILL p99, us", rc.p99, "us", 1000);
	(void)path_r;
}

static void usage(FILE *to)
{
	fprintf(to,
	        "usage: coord-bench [--dir DIR] [--json] [--iterations N] [--handoffs N]\n"
	        "                   [--python PYTHON | --no-python] [-- BENCH.PY-ARGS]\n"
	        "       coord-bench [--dir DIR] [--json] [--no-cache] [--load-peers]\n"
	        "                   --load CLIENTS[,CLIENTS...]:RESOURCES:READ_SHARE:SECONDS\n"
	        "Measures coord beside flock(2), fcntl(2) OFD locks, a process-shared pthread\n"
	        "rwlock, SQLite's BEGIN IMMEDIATE/COMMIT and a Unix-socket round trip, and\n"
	        "prints p50/p99/mean in microseconds and the speed targets with this run's\n"
	        "figures.  Then the Python rows: bindings/python/bench.py under PYTHON\n"
	        "(default /usr/bin/python3) on the same instance; BENCH.PY-ARGS go to it.\n"
	        "--load: CLIENTS processes loop acquire+release on random ones of RESOURCES\n"
	        "resources (reads with probability READ_SHARE) for SECONDS, once per CLIENTS\n"
	        "value; prints ops/s, p50/p99/p99.9 and the broker's CPU per operation and\n"
	        "memory, for coord with its cache and without (--no-cache: only without),\n"
	        "and with --load-peers for flock, fcntl and rwlock under the same load.\n"
	        "--json: one JSON object per line instead of the table.\n"
	        "Exit status: 0; 1 when a measurement failed; 64 on a usage error.\n");
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
		{ "load-peers", no_argument, NULL, 'p' },
		{ "no-cache", no_argument, NULL, 'C' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *dir = NULL, *python = "/usr/bin/python3", *load = NULL;
	int opt, with_python = 1, no_cache = 0, load_peers = 0;
	bench_set_main_pid();
	while ((opt = getopt_long(argc, argv, "+d:n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'n':
			bench.iterations = atoi(optarg);
			break;
		case 'H':
			bench.handoffs = atoi(optarg);
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
		case 'p':
			load_peers = 1;
			break;
		case 'C':
			no_cache = 1;
			break;
		case 'j':
			bench.json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		fprintf(stderr, "coord-bench: unexpected argument '%s' (arguments for the Python rows "
		                "come after --)\n", argv[optind]);
		return 64;
	}
	if (bench.iterations < 100 || bench.handoffs < 10) {
		fprintf(stderr, "coord-bench: --iterations >= 100 and --handoffs >= 10\n");
		return 64;
	}
	if ((no_cache || load_peers) && !load) {
		fprintf(stderr, "coord-bench: --no-cache and --load-peers go with --load\n");
		return 64;
	}
	bench.reclaims = bench.handoffs / 3 > 10 ? bench.handoffs / 3 : 10;
	if (!dir) {
		snprintf(tmpdir, sizeof tmpdir, "%s/coord-bench-XXXXXX",
		         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(tmpdir))
			bench_die("mkdtemp", 0);
		dir = tmpdir;
		find_broker();
		unsetenv("COORD_NO_AUTOSTART");
		atexit(stop_private_broker);
	}
	setenv("COORD_DIR", dir, 1);
	unsetenv("COORD_NO_CACHE"); /* the rows say which connections cache */
	snprintf(bench.dir, sizeof bench.dir, "%s", dir);
	snprintf(bench.lockfile, sizeof bench.lockfile, "%s/bench.lock", dir);
	snprintf(bench.resource, sizeof bench.resource, "%s/bench.db", dir);
	snprintf(bench.sqlite_db, sizeof bench.sqlite_db, "%s/bench-sqlite.db", dir);
	/* An existing file, like a real database: coord's figures include the
	 * kernel lock (flock) the library takes on it. */
	{
		int fd = open(bench.resource, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		coord_t *c;
		int rc;
		if (fd < 0)
			bench_die(bench.resource, 0);
		close(fd);
		if ((rc = coord_connect(&c, NULL)) < 0) /* start the broker before timing */
			bench_die("connect to the broker", rc);
		coord_disconnect(c);
	}
	if (load)
		return bench_load(load, no_cache, load_peers);
	bench_setup_peers();
	run_header();
	run_rows();
	bench_teardown_peers();
	if (!with_python)
		return 0;
	return run_python_rows(python, dir, argv + optind, argc - optind);
}
