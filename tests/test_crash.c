/* Crash tests: holders, waiters and `coordctl run` are SIGKILLed at each
 * protocol step, and a churn of workers is killed at random while they
 * take write and read leases.  After every kill: no lease leaks, waiters
 * are granted, and mutual exclusion was never broken; after a broker
 * restart the table is empty and tokens keep rising. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

HARNESS_SUITE(crash, 120);

static void wait_count(const char *res, int mode, int waiters, int want, const char *why)
{
	cr_assert(harness_wait_count(&h, res, mode, waiters, want), "%s: expected %d %s, have %d",
	          why, want, waiters ? "waiters" : "holders", harness_count(&h, res, mode, waiters));
}

/* The victim takes a write lease and the next writer queues behind it. */
static void victim_holds_next_queues(struct actor *victim, struct actor *next, const char *res)
{
	actor_send(victim, "acquire write -1 %s", res);
	cr_assert_str_eq(actor_reply(victim, 5000), "ok 1", "victim must hold");
	actor_send(next, "acquire write -1 %s", res);
	wait_count(res, COORD_WRITE, 1, 1, "the next writer must queue");
}

/* The protocol steps at which a client is killed. */
enum step { HOLDING, WAITING, REQUEST_IN_FLIGHT, RELEASE_IN_FLIGHT };

ParameterizedTestParameters(crash, kill_at_step)
{
	static enum step steps[] = { HOLDING, WAITING, REQUEST_IN_FLIGHT, RELEASE_IN_FLIGHT };
	return cr_make_param_array(enum step, steps, sizeof steps / sizeof steps[0]);
}

ParameterizedTest(enum step *step, crash, kill_at_step)
{
	struct actor holder, victim, next;
	const char *res = harness_path(&h, "step.db");
	actor_start(&holder, &h);
	actor_start(&victim, &h);
	actor_start(&next, &h);

	switch (*step) {
	case HOLDING:
		victim_holds_next_queues(&victim, &next, res);
		actor_kill(&victim);
		cr_assert_str_eq(actor_reply(&next, 5000), "ok 2",
		                 "the waiter must be granted when the holder is killed");
		break;
	case WAITING:
		actor_send(&holder, "acquire write -1 %s", res);
		cr_assert_str_eq(actor_reply(&holder, 5000), "ok 1", "holder must hold");
		actor_send(&victim, "acquire write -1 %s", res);
		actor_send(&next, "acquire read -1 %s", res);
		wait_count(res, 0, 1, 2, "two waiters must queue");
		actor_kill(&victim);
		wait_count(res, 0, 1, 1, "the killed waiter must leave the queue");
		actor_send(&holder, "release");
		actor_reply(&holder, 5000);
		cr_assert_str_eq(actor_reply(&next, 5000), "ok 1",
		                 "the reader behind the killed writer must be granted");
		break;
	case REQUEST_IN_FLIGHT:
		/* killed right after sending the request: granted or not, the
		 * lease must not outlive the process */
		actor_send(&victim, "acquire write -1 %s", res);
		actor_kill(&victim);
		actor_send(&next, "acquire write 5000 %s", res);
		cr_assert_eq(strncmp(actor_reply(&next, 6000), "ok", 2), 0,
		             "a request in flight from a dead client must not keep the resource");
		break;
	case RELEASE_IN_FLIGHT:
		victim_holds_next_queues(&victim, &next, res);
		actor_send(&victim, "release");
		actor_kill(&victim);
		cr_assert_str_eq(actor_reply(&next, 5000), "ok 2",
		                 "a release cut short by SIGKILL must still free the resource");
		break;
	}
	actor_stop(&next);
	actor_stop(&holder);
	wait_count(res, 0, 0, 0, "no lease may leak after the kill");
	wait_count(res, 0, 1, 0, "no waiter may leak after the kill");
}

/* ---- random kills under churn ---- */

struct shared {
	_Atomic int violations;
	_Atomic long entries;
	_Atomic uint64_t last_token;
	_Atomic int token_regressions;
	_Atomic long reconnects;
	int writer_hold_ms;        /* 0: a short spin */
};

/* Pids the test has SIGKILLed: a killed process runs no more user code,
 * but it can close its socket (so the broker rightly reclaims) a moment
 * before it turns into a zombie, so /proc alone would still call it
 * alive. */
static _Atomic pid_t *killed;
static _Atomic int *nkilled;

static int alive(pid_t pid)
{
	if (killed) {
		for (int i = 0; i < *nkilled && i < 256; i++)
			if (killed[i] == pid)
				return 0;
	}
	char buf[256], *p;
	if (harness_read_proc(pid, "stat", buf, sizeof buf) < 0)
		return 0;
	p = strrchr(buf, ')'); /* "pid (comm) state ...": the state follows the last ')' */
	return p && p[1] && p[2] != 'Z';
}

/* Each worker loops over write and read leases.  It records itself in the
 * shared counters while it holds; a killed worker leaves its count behind,
 * so the counters hold pids and entrants check whether the recorded
 * occupant still lives. */
struct occupancy {
	_Atomic pid_t writer;
	_Atomic pid_t readers[64];
};

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

static void worker(struct shared *s, struct occupancy *o, const char *res, unsigned seed)
{
	coord_t *c = worker_connect();
	pid_t me = getpid();
	for (;;) {
		coord_lease_t *l;
		int mode = rand_r(&seed) % 3 == 0 ? COORD_WRITE : COORD_READ;
		int rc = coord_acquire(c, res, mode, -1, "churn", &l);
		if (rc == COORD_EIO || rc == COORD_EPROTO) {
			/* the broker was killed: what it granted is void, but a file's
			 * kernel lock is not, so exclusion must hold all the same */
			coord_disconnect(c);
			c = worker_connect();
			s->reconnects++;
			continue;
		}
		if (rc < 0)
			_exit(3);
		s->entries++;
		if (mode == COORD_WRITE) {
			pid_t w = o->writer;
			if (w && w != me && alive(w))
				s->violations++;
			for (int i = 0; i < 64; i++) {
				pid_t r = o->readers[i];
				if (r && r != me && alive(r))
					s->violations++;
			}
			uint64_t t = coord_lease_token(l), prev = s->last_token;
			if (t <= prev)
				s->token_regressions++;
			s->last_token = t;
			o->writer = me;
			if (s->writer_hold_ms)
				poll(NULL, 0, s->writer_hold_ms); /* long enough to outlast a restart */
			else
				for (volatile int spin = 0; spin < 20000; spin++)
					;
			o->writer = 0;
		} else {
			pid_t w = o->writer;
			if (w && alive(w))
				s->violations++;
			int slot = -1;
			for (int i = 0; i < 64 && slot < 0; i++) {
				pid_t zero = 0;
				if (atomic_compare_exchange_strong(&o->readers[i], &zero, me))
					slot = i;
			}
			for (volatile int spin = 0; spin < 20000; spin++)
				;
			if (slot >= 0)
				o->readers[slot] = 0;
		}
		coord_release(l);
	}
}

static int writer_holds(void *p)
{
	return ((struct occupancy *)p)->writer != 0;
}

/* Random SIGKILLs of workers, and with broker_every > 0 of the broker
 * itself every that many rounds, while a writer holds.  A restarted broker
 * adopts the leases of live holders, and a lease on a file (`file`) or a
 * key is also a kernel lock, so exclusion survives the restart on either
 * (not only on files).  tests/test_chaos.c kills the broker under holders
 * of a file and of a key, among other kills, and scripts/chaos.sh repeats
 * that test for a long run. */
struct churn_case {
	int rounds;
	int broker_every;
	int file;
	int writer_hold_ms;
	int progress;              /* leases taken between two kills */
};

ParameterizedTestParameters(crash, random_kills_never_break_exclusion)
{
	static struct churn_case cases[] = {
		{ 60, 0, 0, 0, 20 },  /* workers only, on a name that is no file */
		{ 30, 3, 1, 150, 6 }, /* workers, and the broker while a writer holds, on a file */
	};
	return cr_make_param_array(struct churn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct churn_case *cc, crash, random_kills_never_break_exclusion)
{
	struct shared *s = mmap(NULL, sizeof *s + sizeof(struct occupancy), PROT_READ | PROT_WRITE,
	                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct occupancy *o = (struct occupancy *)(s + 1);
	const char *res = harness_path(&h, "churn.db");
	int rounds = cc->rounds, broker_kills = 0;
	FILE *f;
	if (cc->file) {
		f = fopen(res, "w");
		cr_assert(f, "cannot create %s", res);
		fclose(f);
	}
	killed = mmap(NULL, 256 * sizeof *killed + sizeof *nkilled, PROT_READ | PROT_WRITE,
	              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(killed != MAP_FAILED, "mmap failed");
	nkilled = (_Atomic int *)(killed + 256);
	pid_t kids[6];
	unsigned seed = 42;
	cr_assert(s != MAP_FAILED, "mmap failed");
	memset(s, 0, sizeof *s + sizeof *o);
	s->writer_hold_ms = cc->writer_hold_ms;
	for (int i = 0; i < 6; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			worker(s, o, res, (unsigned)i + 1);
		}
	}
	for (int round = 0; round < rounds; round++) {
		long before = s->entries;
		/* let the workers make progress, then kill one at random */
		harness_wait_at_least(&s->entries, before + cc->progress, 3000);
		cr_assert_gt(s->entries, before, "round %d: no worker made progress (stuck lease?)", round);
		if (cc->broker_every && round % cc->broker_every == cc->broker_every - 1) {
			/* kill it under a writer, so the new broker's first writer
			 * would overlap it if nothing but the broker kept order */
			harness_wait(writer_holds, o, 3000);
			harness_kill_broker(&h);
			harness_start_broker(&h, NULL);
			broker_kills++;
			continue;
		}
		int k = rand_r(&seed) % 6;
		/* recorded before the kill: once it is sent, no user code runs */
		killed[*nkilled % 256] = kids[k];
		(*nkilled)++;
		kill(kids[k], SIGKILL);
		waitpid(kids[k], NULL, 0);
		/* clear what the dead worker may have left in the occupancy */
		if (o->writer == kids[k])
			o->writer = 0;
		for (int i = 0; i < 64; i++)
			if (o->readers[i] == kids[k])
				o->readers[i] = 0;
		kids[k] = fork();
		if (kids[k] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			worker(s, o, res, (unsigned)round + 100);
		}
	}
	for (int i = 0; i < 6; i++) {
		kill(kids[i], SIGKILL);
		waitpid(kids[i], NULL, 0);
	}
	printf("crash: %d rounds, %d workers and %d brokers SIGKILLed, %ld leases taken, %ld "
	       "reconnects, %d exclusion violations\n",
	       rounds, *nkilled, broker_kills, (long)s->entries, (long)s->reconnects, s->violations);
	cr_assert_eq(s->violations, 0, "mutual exclusion was broken %d times (%d broker kills)",
	             s->violations, broker_kills);
	cr_assert_eq(s->token_regressions, 0, "write tokens went backwards %d times",
	             s->token_regressions);
	wait_count(res, 0, 0, 0, "leases leaked after all workers were killed");
	wait_count(res, 0, 1, 0, "waiters leaked after all workers were killed");

	/* the table must be consistent across a broker restart */
	uint64_t last = s->last_token;
	harness_stop_broker(&h);
	harness_start_broker(&h, NULL);
	cr_assert_eq(harness_count(&h, res, 0, 0), 0, "a restarted broker shows stale leases");
	struct actor a;
	actor_start(&a, &h);
	actor_send(&a, "acquire write -1 %s", res);
	const char *r = actor_reply(&a, 5000);
	cr_assert(!strncmp(r, "ok ", 3) && strtoull(r + 3, NULL, 10) > last,
	          "after restart the token must exceed %llu, got '%s'", (unsigned long long)last, r);
	actor_stop(&a);
	munmap(s, sizeof *s + sizeof *o);
}

/* ---- coordctl run killed ---- */

static int gone(void *p)
{
	return !alive((pid_t)(intptr_t)p);
}

Test(crash, killed_coordctl_run_takes_its_command_along)
{
	const char *res = harness_path(&h, "run.db");
	const char *pidfile = harness_path(&h, "cmd.pid");
	char script[600];
	pid_t ctl;
	int cmd_pid;
	/* the test becomes the subreaper so the orphaned command is ours to see */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	snprintf(script, sizeof script, "echo $$ > %s; exec sleep 300", pidfile);
	ctl = fork();
	if (ctl == 0) {
		execl(getenv("COORD_TEST_COORDCTL"), "coordctl", "run", "--write", res, "--", "/bin/sh",
		      "-c", script, (char *)NULL);
		_exit(127);
	}
	cmd_pid = harness_wait(harness_pid_in_file, (void *)pidfile, 5000);
	cr_assert_gt(cmd_pid, 0, "the command under coordctl run never started");
	wait_count(res, COORD_WRITE, 0, 1, "coordctl run must hold the lease while the command runs");
	kill(ctl, SIGKILL);
	waitpid(ctl, NULL, 0);
	cr_assert(harness_wait(gone, (void *)(intptr_t)cmd_pid, 5000),
	          "the command (pid %d) kept running after coordctl run was killed", cmd_pid);
	waitpid(cmd_pid, NULL, WNOHANG);
	wait_count(res, 0, 0, 0, "the lease of the killed coordctl run leaked");
}
