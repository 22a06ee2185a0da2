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
	_Atomic int done;
	_Atomic long errors, valid_reads;
};

static void *worker(void *arg)
{
	struct shared *s = arg;
	static _Atomic int next;
	int me = atomic_fetch_add(&next, 1) % WORKERS;
	for (int i = 0; i < ROUNDS; i++) {
		coord_lease_t *l;
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
		atomic_store(&s->current[me], NULL);
		if (coord_release(l) < 0 || coord_release(l) != COORD_ENOLEASE)
			atomic_fetch_add(&s->errors, 1);
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
