/* Chaos: a mixed load of lease holders on one file and one key, and random
 * SIGKILLs of every kind of process that holds or runs under a lease.
 *
 * The holders are library workers (random reads and writes, half of them
 * through resource handles, so most of their reads are cached read
 * grants) and
 * `coordctl run --read|--write RES -- sh -c '...'` wrappers whose command
 * starts witnesses (tests/chaos_witness.c), one or two shells down, in
 * the background or not.  Every one of them enters the resource's
 * occupancy in a shared file (chaos_shared.h) and checks that no live
 * process of another holder conflicts.  Each round SIGKILLs a worker, a
 * wrapper, a wrapper's command (its shell), a command's child (a witness),
 * and every few rounds the broker, which is started again at once.
 *
 * At the end every wrapper and worker is killed and the test waits for
 * what they started to finish.  It then asks for: no violation of
 * exclusion, no token regression, no lease or waiter left, and no orphan.
 * An orphan is a process started under a lease (a witness or a shell)
 * that runs on when neither the lease nor its kernel lock covers it any
 * more: a witness checks, on entering and before leaving, that a
 * descriptor it inherited still holds the resource's flock, and the test
 * checks the same of each survivor after the kill; a survivor still
 * running long after every lease is gone counts too.  A survivor that
 * still holds the inherited flock is not an orphan: the design lets it
 * run on, and the next holder waits for it.
 *
 * The test becomes a child subreaper, so survivors whose shell was killed
 * are its children to see and reap.  COORD_CHAOS_ROUNDS sets the number of
 * rounds (CI's default is short), COORD_CHAOS_SEED the random seed; it
 * prints one summary line that scripts/chaos.sh sums over a long run. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos_shared.h"
#include "harness.h"

HARNESS_SUITE(chaos, 0); /* no timeout of its own: rounds vary, every wait has a deadline */

enum {
	WORKERS = 4,
	WRAPPERS = 4,
	DEFAULT_ROUNDS = 250,  /* about 20 s here, for CI */
	BROKER_EVERY = 5,      /* rounds between two broker kills */
	HOLD_MS = 20,          /* the longest a witness stays inside */
	PROGRESS = 10,         /* entries between two rounds of kills */
	ROUND_MS = 5000,       /* the longest a round may wait for them */
};

/* What the wrappers run.  "$CHAOS_W" is the witness. */
static const char *const commands[] = {
	/* a child in the background and one in front, waited for */
	"\"$CHAOS_W\" & \"$CHAOS_W\"; wait",
	/* two levels: a shell of its own with two children */
	"\"$CHAOS_W\" & sh -c '\"$CHAOS_W\" & \"$CHAOS_W\"; wait'; wait",
	/* an inner shell that leaves its background child behind */
	"sh -c '\"$CHAOS_W\" & \"$CHAOS_W\"' & \"$CHAOS_W\"; wait",
	/* the command ends while its background child runs on */
	"\"$CHAOS_W\" & \"$CHAOS_W\"",
};

static struct chaos_shared *s;
static const char *names[CHAOS_RESOURCES];
static pid_t workers[WORKERS], wrappers[WRAPPERS];
static unsigned seed;
static int wrapper_log = -1;

static struct {
	long workers, wrappers, commands, children, brokers;
	long wrapper_runs, wrapper_errors, worker_deaths;
} tally;

/* ---- library workers ---- */

/* Connects, waiting out a broker that is being restarted. */
static coord_t *worker_connect(void)
{
	coord_t *c = NULL;
	int rc;
	while ((rc = coord_connect(&c, NULL)) == COORD_ENOBROKER || rc == COORD_EIO)
		poll(NULL, 0, 2); /* a workload's retry, not a test's synchronisation */
	if (rc < 0)
		_exit(2);
	return c;
}

/* Handles on every resource, for a worker that caches its reads. */
static void worker_handles(coord_t *c, coord_resource_t **h)
{
	for (int r = 0; r < CHAOS_RESOURCES; r++)
		if (coord_resource_open(c, names[r], &h[r]) < 0)
			_exit(4);
}

/* Random reads and writes on random resources, each entered in the
 * occupancy while held.  A `cached` worker acquires through resource
 * handles kept open, so most of its reads are cached read grants, taken
 * and dropped in shared memory; the others by name, through the broker
 * every time. */
static void worker(unsigned wseed, int cached)
{
	coord_t *c = worker_connect();
	coord_resource_t *h[CHAOS_RESOURCES];
	pid_t me = getpid();
	uint64_t last[CHAOS_RESOURCES] = { 0 };
	if (cached)
		worker_handles(c, h);
	for (;;) {
		coord_lease_t *l;
		int r = (int)(rand_r(&wseed) % CHAOS_RESOURCES), slot, rc;
		int write = rand_r(&wseed) % 3 == 0;
		if (cached)
			rc = coord_resource_acquire(h[r], write ? COORD_WRITE : COORD_READ, -1, "chaos", &l);
		else
			rc = coord_acquire(c, names[r], write ? COORD_WRITE : COORD_READ, -1, "chaos", &l);
		if (rc == COORD_EIO || rc == COORD_EPROTO) {
			if (cached)
				for (int i = 0; i < CHAOS_RESOURCES; i++)
					coord_resource_close(h[i]);
			coord_disconnect(c);
			c = worker_connect();
			if (cached)
				worker_handles(c, h);
			continue;
		}
		if (rc < 0) {
			s->worker_errors++;
			fprintf(stderr, "chaos: worker %d: acquire %s on %s: %s\n", (int)me,
			        write ? "write" : "read", names[r], coord_errname(rc));
			_exit(3);
		}
		slot = chaos_enter(s, r, write, me, write ? coord_lease_token(l) : 0);
		s->worker_entries++;
		if (!write) {
			/* the same lease again: a read under the handle's cached grant */
			s->worker_reads++;
			if (coord_lease_id(l) == last[r])
				s->cached_reads++;
			last[r] = coord_lease_id(l);
		}
		poll(NULL, 0, (int)(rand_r(&wseed) % 4)); /* the work done under the lease */
		chaos_leave(s, r, write, slot);
		rc = coord_release(l);
		if (rc < 0 && rc != COORD_EIO) {
			s->worker_errors++;
			fprintf(stderr, "chaos: worker %d: release of %s lease %llu on %s: %s\n", (int)me,
			        write ? "write" : "read", (unsigned long long)coord_lease_id(l), names[r],
			        coord_errname(rc));
		}
	}
}

static pid_t start_worker(void)
{
	unsigned wseed = rand_r(&seed);
	int cached = rand_r(&seed) % 2;
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork a worker: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		worker(wseed, cached);
	}
	return pid;
}

/* ---- coordctl run wrappers ---- */

static pid_t start_wrapper(void)
{
	const char *ctl = getenv("COORD_TEST_COORDCTL");
	int r = (int)(rand_r(&seed) % CHAOS_RESOURCES), write = rand_r(&seed) % 3 == 0;
	const char *cmd = commands[rand_r(&seed) % (sizeof commands / sizeof commands[0])];
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork a wrapper: %s", strerror(errno));
	if (pid == 0) {
		char owner[16];
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(owner, sizeof owner, "%d", (int)getpid());
		setenv("CHAOS_OWNER", owner, 1);
		dup2(wrapper_log, 1);
		dup2(wrapper_log, 2);
		execl(ctl, "coordctl", "run", write ? "--write" : "--read", names[r], "--", "sh", "-c",
		      cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* A wrapper ended: 0 (its command's status) or 137 (its command was
 * killed) say it ran; anything else is coordctl failing (see
 * wrappers.log). */
static void wrapper_ended(int status)
{
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (code == 0 || code == 128 + SIGKILL)
		tally.wrapper_runs++;
	else
		tally.wrapper_errors++;
}

/* The last size - 1 bytes of the broker's log, which the test's directory
 * takes with it when it is removed. */
static void log_tail(char *buf, size_t size)
{
	int fd = open(harness_path(&h, "broker.log"), O_RDONLY | O_CLOEXEC);
	off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
	ssize_t n = -1;
	if (end >= 0)
		n = pread(fd, buf, size - 1, end > (off_t)size - 1 ? end - (off_t)size + 1 : 0);
	buf[n > 0 ? n : 0] = 0;
	if (fd >= 0)
		close(fd);
}

/* Reaps whatever ended (a wrapper, a worker that failed, a survivor the
 * test adopted as subreaper) and starts wrappers and workers again.  The
 * broker is the harness's to reap: seeing it end here means it died on
 * its own. */
static void tend(void)
{
	for (;;) {
		siginfo_t si = { 0 };
		int status;
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
			break;
		if (si.si_pid == h.broker) {
			char tail[2048];
			waitpid(si.si_pid, &status, 0);
			h.broker = 0;
			log_tail(tail, sizeof tail);
			cr_assert_fail("coordd died on its own (wait status %#x); its log ends:\n%s",
			               (unsigned)status, tail);
		}
		waitpid(si.si_pid, &status, 0);
		for (int i = 0; i < WRAPPERS; i++) {
			if (wrappers[i] == si.si_pid) {
				wrapper_ended(status);
				wrappers[i] = start_wrapper();
			}
		}
		for (int i = 0; i < WORKERS; i++) {
			if (workers[i] == si.si_pid) {
				tally.worker_deaths++;
				workers[i] = start_worker();
			}
		}
	}
}

/* ---- kills ---- */

static void sigkill(pid_t pid)
{
	chaos_mark_killed(s, pid); /* before the signal: it may still look alive after */
	kill(pid, SIGKILL);
	chaos_clear(s, pid);
}

static void kill_worker(void)
{
	int k = (int)(rand_r(&seed) % WORKERS);
	sigkill(workers[k]);
	waitpid(workers[k], NULL, 0);
	workers[k] = start_worker();
	tally.workers++;
}

static void kill_wrapper(void)
{
	int k = (int)(rand_r(&seed) % WRAPPERS);
	int status;
	sigkill(wrappers[k]);
	waitpid(wrappers[k], &status, 0);
	wrappers[k] = start_wrapper();
	tally.wrappers++;
}

/* The first child of pid found in /proc, or 0. */
static pid_t child_of(pid_t pid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = 0;
	cr_assert(d, "cannot read /proc: %s", strerror(errno));
	while (!found && (e = readdir(d))) {
		pid_t p = (pid_t)atoi(e->d_name), parent = 0;
		char state = 0;
		if (p > 0 && chaos_stat(p, &state, &parent) && parent == pid && state != 'Z')
			found = p;
	}
	closedir(d);
	return found;
}

/* Kills the command (the shell) of a wrapper that runs one; returns 1 if
 * there was one. */
static int kill_command(void)
{
	int first = (int)(rand_r(&seed) % WRAPPERS);
	for (int i = 0; i < WRAPPERS; i++) {
		pid_t cmd = child_of(wrappers[(first + i) % WRAPPERS]);
		if (cmd) {
			sigkill(cmd);
			tally.commands++;
			return 1;
		}
	}
	return 0;
}

/* 1 if the started process e still runs (same pid, same start time). */
static int started_runs(const struct chaos_started *e)
{
	char state = 0;
	pid_t pid = e->pid;
	return pid > 0 && chaos_stat(pid, &state, NULL) == e->start && state != 'Z' && state != 'X';
}

/* Kills a running witness, one of the most recently started; returns 1
 * if there was one. */
static int kill_child(void)
{
	uint32_t n = s->nstarted < CHAOS_STARTED ? s->nstarted : CHAOS_STARTED;
	int found[64], count = 0;
	for (uint32_t i = n; i > 0 && i + 256 > n && count < 64; i--) {
		const struct chaos_started *e = &s->started[i - 1];
		if (e->kind == CHAOS_WITNESS && started_runs(e) && chaos_alive(s, e->pid))
			found[count++] = (int)(i - 1);
	}
	if (!count)
		return 0;
	sigkill(s->started[found[rand_r(&seed) % (unsigned)count]].pid);
	tally.children++;
	return 1;
}

struct writer_wait {
	int res;
};

static int writer_inside(void *p)
{
	tend();
	return chaos_writer_inside(s, ((struct writer_wait *)p)->res);
}

/* Kills the broker, while a writer is inside if one comes within a
 * second, so that a new broker's first grant would overlap it if the old
 * order were lost; and starts it again. */
static void kill_broker(void)
{
	struct writer_wait w = { (int)(rand_r(&seed) % CHAOS_RESOURCES) };
	harness_wait(writer_inside, &w, 1000);
	harness_kill_broker(&h);
	harness_start_broker(&h, NULL);
	tally.brokers++;
}

/* ---- progress and the end ---- */

static long entries(void)
{
	return s->worker_entries + s->witness_entries;
}

static int progressed(void *p)
{
	tend();
	return entries() >= *(long *)p;
}

/* The processes started under leases that still run, and the check that
 * each is still covered by its kernel lock; a survivor seen without it is
 * flagged.  Returns 1 once none runs. */
static int survivors_gone(void *unused)
{
	uint32_t n = s->nstarted < CHAOS_STARTED ? s->nstarted : CHAOS_STARTED;
	int running = 0;
	(void)unused;
	tend();
	for (uint32_t i = 0; i < n; i++) {
		struct chaos_started *e = &s->started[i];
		if (!started_runs(e))
			continue;
		running++;
		/* and still the same process after the look: its pid may have
		 * been reused by then */
		if (chaos_holds_flock(e->pid, e->write) == 0 && started_runs(e))
			e->flags |= CHAOS_UNCOVERED;
	}
	return running == 0;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Distinct values among n (sorted in place). */
static long distinct(uint64_t *v, long n)
{
	long d = 0;
	qsort(v, (size_t)n, sizeof *v, compare_u64);
	for (long i = 0; i < n; i++)
		if (i == 0 || v[i] != v[i - 1])
			d++;
	return d;
}

/* Orphans (distinct processes flagged) and, in *wrapper_leases, the
 * distinct wrappers whose command got to start a witness. */
static long count_orphans(long *wrapper_leases)
{
	uint32_t n = s->nstarted < CHAOS_STARTED ? s->nstarted : CHAOS_STARTED;
	uint64_t *orphans = calloc(n + 1, sizeof *orphans), *owners = calloc(n + 1, sizeof *owners);
	long no = 0, nw = 0, count;
	cr_assert(orphans && owners, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		const struct chaos_started *e = &s->started[i];
		if (e->flags)
			orphans[no++] = e->start << 22 | (uint32_t)e->pid;
		owners[nw++] = (uint32_t)e->owner;
	}
	count = distinct(orphans, no);
	*wrapper_leases = distinct(owners, nw);
	free(orphans);
	free(owners);
	return count;
}

/* Kills every wrapper and worker, then waits for what their commands
 * started to finish on its own; what still runs then is stuck, flagged
 * and killed. */
static void stop_everything(void)
{
	uint32_t n;
	for (int i = 0; i < WORKERS; i++) {
		sigkill(workers[i]);
		waitpid(workers[i], NULL, 0);
		workers[i] = 0;
	}
	for (int i = 0; i < WRAPPERS; i++) {
		int status;
		sigkill(wrappers[i]);
		waitpid(wrappers[i], &status, 0);
		wrappers[i] = 0;
	}
	if (harness_wait(survivors_gone, NULL, HOLD_MS * 10 + 10000))
		return;
	n = s->nstarted < CHAOS_STARTED ? s->nstarted : CHAOS_STARTED;
	for (uint32_t i = 0; i < n; i++) {
		struct chaos_started *e = &s->started[i];
		if (started_runs(e)) {
			e->flags |= CHAOS_STUCK;
			cr_log_error("pid %d (%s of coordctl run %d) still runs long after its lease",
			             (int)e->pid, e->kind == CHAOS_SHELL ? "a shell" : "a witness",
			             (int)e->owner);
			sigkill(e->pid);
		}
	}
	harness_wait(survivors_gone, NULL, 5000);
}

/* Says what the failed wrappers printed (the first few lines of
 * wrappers.log from coordctl).  A log line, not a failure: a wrapper
 * started as the broker is killed may fail to connect. */
static void report_wrapper_errors(void)
{
	FILE *f = fopen(harness_path(&h, "wrappers.log"), "r");
	char line[512];
	int shown = 0;
	cr_log_info("%ld coordctl run wrappers failed (of %ld that ran)", tally.wrapper_errors,
	            tally.wrapper_runs);
	while (f && shown < 6 && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		cr_log_info("  %s", line);
		shown++;
	}
	if (f)
		fclose(f);
}

static int env_int(const char *name, int dflt)
{
	const char *v = getenv(name);
	return v && *v ? atoi(v) : dflt;
}

static void setup_resources(void)
{
	static char canon[CHAOS_RESOURCES][COORD_NAME_MAX + 1];
	const char *given[CHAOS_RESOURCES] = { harness_path(&h, "chaos.db"), "key:chaos" };
	FILE *f = fopen(given[0], "w");
	cr_assert(f && fputs("chaos\n", f) >= 0 && fclose(f) == 0, "cannot create %s", given[0]);
	for (int r = 0; r < CHAOS_RESOURCES; r++) {
		int rc = coord_canonicalize(given[r], canon[r], sizeof canon[r]);
		cr_assert_gt(rc, 0, "canonicalize %s: %s", given[r], coord_strerror(rc));
		names[r] = canon[r];
		snprintf(s->resource[r], sizeof s->resource[r], "%s", canon[r]);
	}
}

Test(chaos, random_kills_of_every_holder_never_break_exclusion_or_leave_orphans)
{
	const char *witness = getenv("COORD_TEST_CHAOS_WITNESS");
	const char *shm = harness_path(&h, "chaos.shm");
	int rounds = env_int("COORD_CHAOS_ROUNDS", DEFAULT_ROUNDS);
	long orphans, wrapper_leases, kills;
	char hold[16];

	cr_assert(witness && *witness,
	          "COORD_TEST_CHAOS_WITNESS must name the chaos_witness binary (meson test sets it)");
	seed = (unsigned)env_int("COORD_CHAOS_SEED", (int)(time(NULL) ^ getpid()));
	printf("chaos: seed %u (COORD_CHAOS_SEED replays the same choices)\n", seed);
	s = chaos_map(shm, 1);
	cr_assert(s, "cannot map %s: %s", shm, strerror(errno));
	setup_resources();
	snprintf(hold, sizeof hold, "%d", HOLD_MS);
	setenv("CHAOS_SHM", shm, 1);
	setenv("CHAOS_W", witness, 1);
	setenv("CHAOS_HOLD_MS", hold, 1);
	wrapper_log = open(harness_path(&h, "wrappers.log"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	                   0600);
	cr_assert(wrapper_log >= 0, "cannot open wrappers.log: %s", strerror(errno));
	/* survivors whose shell was killed become the test's children */
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0, "PR_SET_CHILD_SUBREAPER: %s",
	             strerror(errno));

	for (int i = 0; i < WORKERS; i++)
		workers[i] = start_worker();
	for (int i = 0; i < WRAPPERS; i++)
		wrappers[i] = start_wrapper();
	for (int round = 0; round < rounds; round++) {
		long want = entries() + PROGRESS;
		cr_assert(harness_wait(progressed, &want, ROUND_MS),
		          "round %d: only %ld of %d entries in %d ms (a lease stuck?)", round,
		          entries() - (want - PROGRESS), PROGRESS, ROUND_MS);
		kill_worker();
		kill_wrapper();
		kill_command();
		kill_child();
		if (round % BROKER_EVERY == BROKER_EVERY - 1)
			kill_broker();
	}
	stop_everything();
	orphans = count_orphans(&wrapper_leases);
	kills = tally.workers + tally.wrappers + tally.commands + tally.children + tally.brokers;
	printf("chaos: %d rounds, %ld kills (%ld workers, %ld wrappers, %ld commands, %ld children, "
	       "%ld brokers), %ld leases, %ld violations, %ld orphans, %ld token regressions\n",
	       rounds, kills, tally.workers, tally.wrappers, tally.commands, tally.children,
	       tally.brokers, (long)s->worker_entries + wrapper_leases, (long)s->violations, orphans,
	       (long)s->token_regressions);
	printf("chaos: %ld of %ld worker reads were under a cached read grant\n",
	       (long)s->cached_reads, (long)s->worker_reads);
	fflush(stdout);
	if (tally.wrapper_errors)
		report_wrapper_errors();

	cr_assert_eq(s->violations, 0,
	             "exclusion was broken %ld times: a process entered the file or the key while a "
	             "live process of another holder was inside in a conflicting mode",
	             (long)s->violations);
	cr_assert_eq(orphans, 0,
	             "%ld processes started under a lease ran on with neither the lease nor its "
	             "kernel lock covering them",
	             orphans);
	cr_assert_eq(s->token_regressions, 0, "write tokens went backwards %ld times",
	             (long)s->token_regressions);
	cr_assert_eq(s->witness_errors, 0, "%ld witnesses could not do their job (see wrappers.log)",
	             (long)s->witness_errors);
	cr_assert_eq(s->slot_overflows, 0, "%ld entries found no free occupancy slot (checks lost)",
	             (long)s->slot_overflows);
	cr_assert_eq(s->worker_errors, 0, "%ld library calls failed in workers under chaos",
	             (long)s->worker_errors);
	cr_assert_eq(tally.worker_deaths, 0,
	             "%ld workers ended on their own (a connect or acquire that failed)",
	             tally.worker_deaths);
	cr_assert_gt(s->witness_entries, 0, "no witness ever ran under coordctl run");
	cr_assert_gt(s->worker_entries, 0, "no library worker ever took a lease");
	if (rounds >= 20)
		cr_assert_gt(s->cached_reads, 0, "no worker read was under a cached grant");
	if (rounds >= 20)
		cr_assert(tally.commands && tally.children && tally.brokers,
		          "every kind must be killed: %ld commands, %ld children, %ld brokers",
		          tally.commands, tally.children, tally.brokers);
	for (int r = 0; r < CHAOS_RESOURCES; r++) {
		cr_assert(harness_wait_count(&h, names[r], 0, 0, 0),
		          "%d leases on %s leaked after every holder was killed", harness_count(&h, names[r], 0, 0),
		          names[r]);
		cr_assert(harness_wait_count(&h, names[r], 0, 1, 0),
		          "%d waiters on %s leaked after every holder was killed", harness_count(&h, names[r], 0, 1),
		          names[r]);
	}
	close(wrapper_log);
}
