/* Test harness: private instance directories, a real coordd started and
 * stopped by the test, child processes that hold leases on command, a
 * coordctl runner, and condition waits with deadlines (never sleeps). */
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

/* Makes a private temporary directory (mkdtemp, under $TMPDIR or /tmp)
 * into buf, and removes one with everything in it (nftw, symlinks not
 * followed). */
void harness_tmpdir(char *buf, size_t size, const char *prefix);
void harness_rmtree(const char *dir);

/* "DIR/NAME" in one of 8 rotating static buffers: valid until 8 more
 * calls. */
const char *harness_file(const char *dir, const char *name);

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
/* The same without waiting for it to accept a connection: nothing
 * reaches the broker until the test connects (or a holder does). */
void harness_start_broker_undialed(struct harness *h, ...);
/* The same, with the broker's RLIMIT_NOFILE (soft and hard) set to
 * nofile. */
void harness_start_broker_nofile(struct harness *h, unsigned long nofile, ...);
/* SIGTERM and wait; returns the exit status. */
int harness_stop_broker(struct harness *h);
/* SIGKILL and wait. */
void harness_kill_broker(struct harness *h);

/* Path of a file in the test directory (see harness_file()). */
const char *harness_path(struct harness *h, const char *name);

/* Reads /proc/PID/NAME into buf (size bytes, always terminated).  Returns
 * the bytes read, or -1 when there is no such process or it shows
 * nothing. */
ssize_t harness_read_proc(long pid, const char *name, char *buf, size_t size);

/* The pid written in the file at path (a char *), or 0 while there is
 * none: a harness_wait() condition for "the command has started". */
int harness_pid_in_file(void *path);

/* Waits (polling with a short backoff) until fn(arg) returns non-zero or
 * deadline_ms passes; returns the last value of fn. */
int harness_wait(int (*fn)(void *), void *arg, int deadline_ms);

/* Waits (as harness_wait()) until *counter, raised by other processes
 * through shared memory, is at least want; returns 1 if it got there. */
int harness_wait_at_least(_Atomic long *counter, long want, int deadline_ms);

/* Reading broker log lines (key=value, see broker/log.c): the number after
 * " KEY=" in line, or -1; and the line's ts= time in milliseconds since
 * the epoch (asserts it has one). */
long long harness_log_field(const char *line, const char *key);
int64_t harness_log_ms(const char *line);

/* A plain SOCK_SEQPACKET connection to the broker socket of dir, without
 * a HELLO: the fd, or -1 with errno set. */
int harness_dial(const char *dir);

/* Counts holders (mode 0: any) or waiters (waiters 1) of a resource, from
 * coord_list() on a fresh connection.  Returns the count or a COORD_E*
 * code. */
int harness_count(struct harness *h, const char *resource, int mode, int waiters);
/* Waits up to 5 s until harness_count() is `want`; returns 1 if it got
 * there, else 0. */
int harness_wait_count(struct harness *h, const char *resource, int mode, int waiters, int want);

/* Runs `$COORD_TEST_COORDCTL ARGS` through the shell, ARGS being fmt
 * formatted (quote arguments for the shell).  Its stdout and stderr go to
 * out (size bytes, always terminated) or, with out NULL, nowhere.
 * Returns its exit status, or 128 + the signal that killed it. */
int harness_coordctl(char *out, size_t size, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* The same, run as `user` (its uid, gid and groups, with setpriv(1));
 * NULL: as the test itself. */
int harness_coordctl_as(const char *user, char *out, size_t size, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Makes the calling process `user`: its groups (initgroups), gid and uid.
 * Returns 0, or -1 with errno set (no such user, or not root). */
int harness_become(const char *user);

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
 *   "recalled"                          -> "1" or "0" (last lease)
 *   "ignore-term"                       -> "ok" (SIGTERM ignored from now)
 *   "exit"                              -> exits 0 */
void actor_start(struct actor *a, struct harness *h);
/* The same, with the actor running as `user` (harness_become()). */
void actor_start_as(struct actor *a, struct harness *h, const char *user);
void actor_send(struct actor *a, const char *fmt, ...);
/* Reads one reply line (waits at most timeout_ms; "" on timeout). */
const char *actor_reply(struct actor *a, int timeout_ms);
/* 1 if a reply is ready to read now. */
int actor_has_reply(struct actor *a);
/* Starts actors w and r: w takes a write lease on resource, the first of
 * the resource (token 1), then r asks for a read lease; returns once the
 * broker has queued r behind w.  Asserts each step. */
void actor_writer_then_reader(struct harness *h, struct actor *w, struct actor *r,
                              const char *resource);
void actor_kill(struct actor *a);
/* Ends the actor politely ("exit") and reaps it. */
void actor_stop(struct actor *a);

#endif
