/* One connection shared by many threads, as coord.h allows: calls are
 * serialised inside the connection, lease handles may be used and
 * released from any thread, and coord_lease_valid() takes no lock.  Run
 * under ThreadSanitizer too (scripts/test.sh, suite 'tsan', through the
 * driver in tests/tsan/ because Criterion cannot start under TSan), so a
 * data race in the library fails the build rather than a user's program.
 * Keep to the Criterion macros that driver provides. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

HARNESS_SUITE(threads, 120);

/* One resource per worker: leases belong to the connection, so two
 * threads of one connection asking for one resource would be one owner
 * deadlocking with itself (COORD_EDEADLK). */
#define WORKERS 8
#define ROUNDS 200

struct shared {
	coord_t *c;
	coord_resource_t *res[WORKERS];
	_Atomic(coord_lease_t *) current[WORKERS];
	int handles_only;          /* c may be disconnected under the workers */
	int until_done;            /* workers go on past ROUNDS until done */
	_Atomic int done;
	_Atomic long errors, valid_reads, rounds;
};

static void *worker(void *arg)
{
	struct shared *s = arg;
	static _Atomic int next;
	int me = atomic_fetch_add(&next, 1) % WORKERS;
	for (int i = 0; i < ROUNDS || (s->until_done && !atomic_load(&s->done)); i++) {
		coord_lease_t *l;
		atomic_fetch_add(&s->rounds, 1);
		int rc = i % 2 || s->handles_only
		                 ? coord_resource_acquire(s->res[me], COORD_WRITE, 5000, "thread", &l)
		                 : coord_acquire(s->c, coord_resource_name(s->res[me]), COORD_READ, 5000,
		                                 "thread", &l);
		if (rc < 0) {
			atomic_fetch_add(&s->errors, 1);
			continue;
		}
		atomic_store(&s->current[me], l);
		if (!coord_lease_valid(l) || (coord_lease_token(l) == 0 && i % 2))
			atomic_fetch_add(&s->errors, 1);
		if (coord_release(l) < 0 || coord_release(l) != COORD_ENOLEASE)
			atomic_fetch_add(&s->errors, 1);
		atomic_store(&s->current[me], NULL);
	}
	return NULL;
}

/* Reads handles other threads are using and releasing: every answer must
 * be a value or a clean "stale", never a crash or a race. */
static void *observer(void *arg)
{
	struct shared *s = arg;
	while (!atomic_load(&s->done)) {
		for (int i = 0; i < WORKERS; i++) {
			coord_lease_t *l = atomic_load(&s->current[i]);
			if (l) {
				(void)coord_lease_valid(l);
				(void)coord_lease_id(l);
				(void)coord_lease_recalled(l);
				atomic_fetch_add(&s->valid_reads, 1);
			}
		}
	}
	return NULL;
}

Test(threads, many_threads_share_one_connection)
{
	static struct shared s;
	pthread_t w[WORKERS], obs;
	int rc = coord_connect(&s.c, NULL);
	cr_assert_eq(rc, 0, "coord_connect: %s", coord_strerror(rc));
	for (int i = 0; i < WORKERS; i++) {
		char name[64];
		snprintf(name, sizeof name, "key:thread-key-%d", i);
		cr_assert_eq(coord_resource_open(s.c, name, &s.res[i]), 0, "resource %d", i);
	}
	pthread_create(&obs, NULL, observer, &s);
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&w[i], NULL, worker, &s);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	atomic_store(&s.done, 1);
	pthread_join(obs, NULL);
	cr_assert_eq(atomic_load(&s.errors), 0,
	             "%ld calls failed or gave a wrong answer with threads sharing one connection",
	             atomic_load(&s.errors));
	cr_assert_eq(harness_count(&h, "key:thread-key-0", 0, 0), 0, "every lease must be released");
	for (int i = 0; i < WORKERS; i++)
		coord_resource_close(s.res[i]);
	coord_disconnect(s.c);
}

/* A disconnect from one thread while others still call through handles
 * of the connection: they get clean errors, never freed memory.  (The
 * coord_t pointer itself is gone after coord_disconnect(); only handles
 * may outlive it.) */
Test(threads, disconnect_while_other_threads_use_the_connection)
{
	static struct shared s;
	pthread_t w[WORKERS];
	int rc = coord_connect(&s.c, NULL);
	s.handles_only = 1;
	cr_assert_eq(rc, 0, "coord_connect: %s", coord_strerror(rc));
	for (int i = 0; i < WORKERS; i++) {
		char name[64];
		snprintf(name, sizeof name, "key:gone-key-%d", i);
		cr_assert_eq(coord_resource_open(s.c, name, &s.res[i]), 0, "resource %d", i);
	}
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&w[i], NULL, worker, &s);
	coord_disconnect(s.c);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	for (int i = 0; i < WORKERS; i++) {
		coord_lease_t *l;
		cr_assert_eq(coord_resource_acquire(s.res[i], COORD_READ, 0, NULL, &l), COORD_EIO,
		             "a resource handle of a closed connection must say COORD_EIO");
		coord_resource_close(s.res[i]);
	}
}

/* What a child forked from the test checks, as coord.h's fork() section
 * promises: the inherited connection answers COORD_EFORKED and every
 * lease handle the parent's workers held at the fork is stale (the parent
 * still holds those leases).  It answers with its exit status, since it
 * must not report through the test's runner: 0, or 4 if no worker held a
 * lease at the fork, or the number of the check that failed. */
static int child_sees_a_forked_connection(struct shared *s)
{
	coord_lease_t *l;
	int handles = 0;
	if (coord_acquire(s->c, "key:thread-fork-child", COORD_READ, 0, NULL, &l) != COORD_EFORKED)
		return 1;
	if (coord_resource_acquire(s->res[0], COORD_READ, 0, NULL, &l) != COORD_EFORKED)
		return 2;
	for (int i = 0; i < WORKERS; i++) {
		coord_lease_t *held = atomic_load(&s->current[i]);
		if (held && coord_lease_valid(held))
			return 3;
		handles += held != NULL;
	}
	return handles ? 0 : 4;
}

/* fork() while other threads call through the connection: the library's
 * fork handler takes its locks among theirs, without a deadlock (or, under
 * TSan, a lock-order inversion), the parent's threads carry on untouched,
 * and each child finds the connection refused and the handles stale. */
/* Forks until FORKS_CAUGHT of them caught a worker holding a lease (the
 * window is short: most of a worker's time goes to waiting for the
 * broker), or FORKS_MAX forks. */
#define FORKS_CAUGHT 4
#define FORKS_MAX 20000
Test(threads, fork_while_other_threads_use_the_connection)
{
	static struct shared s;
	pthread_t w[WORKERS];
	int checked = 0, rc = coord_connect(&s.c, NULL);
	cr_assert_eq(rc, 0, "coord_connect: %s", coord_strerror(rc));
	s.until_done = 1;
	for (int i = 0; i < WORKERS; i++) {
		char name[64];
		snprintf(name, sizeof name, "key:fork-key-%d", i);
		cr_assert_eq(coord_resource_open(s.c, name, &s.res[i]), 0, "resource %d", i);
	}
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&w[i], NULL, worker, &s);
	cr_assert(harness_wait_at_least(&s.rounds, WORKERS, 10000),
	          "the workers did not get going within 10 s");
	for (int k = 0; k < FORKS_MAX && checked < FORKS_CAUGHT; k++) {
		int st;
		pid_t pid = fork();
		cr_assert(pid >= 0, "fork failed");
		if (pid == 0)
			_exit(child_sees_a_forked_connection(&s));
		cr_assert_eq(waitpid(pid, &st, 0), pid, "cannot wait for fork child %d", k);
		cr_assert(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 4),
		          "fork child %d: check %d failed (1, 2: a call on the inherited connection did "
		          "not return COORD_EFORKED; 3: a lease handle was valid in the child; "
		          "status %#x)",
		          k, WIFEXITED(st) ? WEXITSTATUS(st) : -1, st);
		checked += WEXITSTATUS(st) == 0;
	}
	cr_assert_eq(checked, FORKS_CAUGHT, "only %d of %d forks caught a worker holding a lease",
	             checked, FORKS_MAX);
	atomic_store(&s.done, 1);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	cr_assert_eq(atomic_load(&s.errors), 0,
	             "%ld calls of the parent's threads failed or gave a wrong answer around fork()",
	             atomic_load(&s.errors));
	cr_assert_eq(harness_count(&h, "key:fork-key-0", 0, 0), 0, "every lease must be released");
	for (int i = 0; i < WORKERS; i++)
		coord_resource_close(s.res[i]);
	coord_disconnect(s.c);
}
