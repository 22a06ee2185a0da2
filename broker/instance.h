/* The instance directory under a running broker: the one-broker lock,
 * taken at start, and the upkeep of what is in the directory while the
 * broker runs (a directory removed, files removed or replaced, a region
 * truncated).  See docs/design.md, "Bad states". */
#ifndef COORD_INSTANCE_H
#define COORD_INSTANCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct broker;

/* How often the directory is looked at, and how soon again after a
 * restore could not be finished. */
#define INSTANCE_CHECK_MS 1000
#define INSTANCE_RETRY_MS 50

/* mkdir -p: the directories made are 0700.  Returns 0 or -1 (errno). */
int instance_make_dirs(const char *dir);

/* Makes this process the one broker of dir (which exists): an exclusive
 * flock on DIR/coordd.lock, and the instance's name in the abstract
 * socket namespace, which no removal of the directory can take away.
 * Writes our pid into the lock file.  Returns 0; COORD_EBUSY when another
 * broker serves dir (also when its directory was removed under it and it
 * has not put it back yet), with its pid in err; or COORD_ESYS with the
 * reason in err. */
int instance_lock(const char *dir, char *err, size_t errsize);
/* Drops the lock (at exit). */
void instance_unlock(void);

/* The listening socket systemd passes (socket activation, sd_listen_fds(3)). */
#define INSTANCE_LISTEN_FD 3

/* The socket systemd passed for dir (canonical), read from LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES, which are then unset: one listening
 * SOCK_SEQPACKET unix socket bound at DIR/coordd.sock, made non-blocking
 * and close-on-exec, in *fd.  Touches nothing else, so it may be called
 * before the lock is taken.  Returns 1 (passed), 0 (none for this
 * process), or COORD_EINVAL (another kind of socket, another path, or
 * several: the reason, naming the coordd.socket line to write, in err)
 * or COORD_ESYS. */
int instance_passed_socket(const char *dir, int *fd, char *err, size_t errsize);
/* 0 if a connect() to DIR/coordd.sock finds no listening socket there
 * (none, or a killed broker's): a passed socket then cannot be the one
 * at that path.  1 otherwise.  The test connection is left in the
 * listening socket's queue, and is a client that hangs up at once. */
int instance_socket_answers(const char *dir);
/* Refuses the connections queued on listening socket fd and closes it. */
void instance_drop_socket(int fd);

/* When the next look at the directory is due (monotonic ms). */
int64_t instance_next_deadline(void);
/* If due: puts back what was removed or replaced under the broker, the
 * directory, the lock (taken again), the socket (bound again), the
 * region and the LMDB files (written from what the broker has open),
 * and logs event=instance-restored once for each time it had to; logs
 * event=instance-unwritable once when the broker can no longer create
 * files in the directory, and keeps serving. */
void instance_expire(struct broker *b, int64_t now);

#endif
