/* Test harness: private instance directories, a real coordd started and
 * stopped by the test, child processes that hold leases on command, and
 * condition waits with deadlines (never sleeps). */
#ifndef COORD_TEST_HARNESS_H
#define COORD_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "coord_proto.h"

struct harness {
	char dir[256];
	pid_t broker;
};

/* Makes a private temporary directory (mkdtemp) into buf, and removes one. */
void harness_tmpdir(char *buf, size_t size, const char *prefix);
void harness_rmtree(const char *dir);

/* Declares `h` and a suite whose fixture starts a real broker in a private
 * directory before each test and stops it after. */
#define HARNESS_SUITE(suite, seconds)                                        \
	static struct harness h;                                             \
	static void suite##_setup(void)                                      \
	{                                                                    \
		harness_init(&h);                                            \
		harness_start_broker(&h, NULL);                              \
	}                                                                    \
	static void suite##_teardown(void)                                   \
	{                                                                    \
		harness_fini(&h);                                            \
	}                                                                    \
	TestSuite(suite, .init = suite##_setup, .fini = suite##_teardown, .timeout = (seconds))

/* mkdtemp a private directory; sets COORD_DIR and COORD_BROKER for the
 * library and turns autostart off (tests start the broker themselves). */
void harness_init(struct harness *h);
/* Stops the broker if running and removes the directory. */
void harness_fini(struct harness *h);

/* Starts `coordd --dir DIR` in the foreground as a child and waits until
 * it accepts connections.  Extra arguments may follow (NULL-terminated). */
void harness_start_broker(struct harness *h, ...);
/* SIGTERM and wait; returns the exit status. */
int harness_stop_broker(struct harness *h);
/* SIGKILL and wait. */
void harness_kill_broker(struct harness *h);

/* Path of a file in the test directory. */
const char *harness_path(struct harness *h, const char *name);

/* Waits (polling with a short backoff) until fn(arg) returns non-zero or
 * deadline_ms passes; returns the last value of fn. */
int harness_wait(int (*fn)(void *), void *arg, int deadline_ms);

/* One holder or waiter in the broker's table, as `coordctl list` sees it. */
struct harness_entry {
	int waiter;
	int mode;
	uint64_t pid;
	uint64_t token;
	uint64_t lease_id;
	char name[COORD_NAME_MAX + 1];
	char label[COORD_LABEL_MAX + 1];
};

/* Fetches the broker's whole table through a fresh connection.  Returns
 * the number of entries (at most max) or a COORD_E* code. */
int harness_list(struct harness *h, struct harness_entry *out, int max);
/* Counts holders (mode 0: any) and waiters of a resource. */
int harness_count(struct harness *h, const char *resource, int mode, int waiters);

/* A child process that acts on commands sent through a pipe.  It writes
 * one status line back for each. */
struct actor {
	pid_t pid;
	int cmd_fd;      /* write commands here */
	int reply_fd;    /* read replies here */
};

/* Forks an actor connected to the broker of h's directory.  Commands:
 *   "acquire MODE TIMEOUT_MS RESOURCE"  -> "ok TOKEN" or "err CODE"
 *                                           (sent when the call returns)
 *   "release"                           -> "ok" or "err CODE" (last lease)
 *   "valid"                             -> "1" or "0"
 *   "exit"                              -> exits 0 */
void actor_start(struct actor *a, struct harness *h);
void actor_send(struct actor *a, const char *fmt, ...);
/* Reads one reply line (waits at most timeout_ms; "" on timeout). */
const char *actor_reply(struct actor *a, int timeout_ms);
/* 1 if a reply is ready to read now. */
int actor_has_reply(struct actor *a);
void actor_kill(struct actor *a);
/* Ends the actor politely ("exit") and reaps it. */
void actor_stop(struct actor *a);

#endif
