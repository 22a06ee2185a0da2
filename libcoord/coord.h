/* coord.h - v0.2 - leases on shared database files, client library
 *
 * coord stops processes on one machine from hurting the database files they
 * share.  A broker, coordd, grants leases on named resources (usually SQLite
 * or DuckDB files): one writer or any number of readers, in fair FIFO order.
 * When a holder dies the broker takes its leases back at once.  This header
 * is the whole client library: it needs only libc and pthreads.
 *
 * USAGE
 *
 *   Either link the built library (`pkg-config --cflags --libs coord`, which
 *   gives libcoord.so or, with --static, libcoord.a) and include coord.h
 *   plainly, or copy the installed coord.h into your tree and, in exactly
 *   ONE C file of your program, define COORD_IMPLEMENTATION before
 *   including it:
 *
 *       #define COORD_IMPLEMENTATION
 *       #include "coord.h"
 *
 *   Every other file includes it plainly.  Link with -pthread.  It needs C11
 *   and POSIX.1-2008; with -std=c11, include coord.h first in the
 *   implementing file (it then asks for _XOPEN_SOURCE 700 itself).
 *
 *       coord_t *c;
 *       coord_lease_t *l;
 *       int rc = coord_connect(&c, NULL);          // starts coordd if needed
 *       if (rc == 0)
 *           rc = coord_acquire(c, "app.db", COORD_WRITE, 5000, "nightly", &l);
 *       if (rc == 0) {
 *           ... write app.db, passing coord_lease_token(l) along ...
 *           coord_release(l);
 *       }
 *       if (rc < 0)
 *           fprintf(stderr, "app.db: %s\n", coord_strerror(rc));
 *       coord_disconnect(c);
 *
 *   A program that takes the same lease again and again opens the resource
 *   once (coord_resource_open()) and acquires through the handle, which
 *   skips resolving the path every time.
 *
 * CONTENTS
 *
 *   1. Error codes ............ COORD_E*, coord_strerror(), coord_errname()
 *   2. Options ................ coord_options_t, environment variables
 *   3. Connections ............ coord_connect(), coord_disconnect(), coord_dir()
 *   4. Resources and leases ... coord_resource_open(), coord_resource_acquire(),
 *                               coord_acquire(), coord_release(),
 *                               coord_lease_token(), coord_lease_valid(), ...
 *   5. Administration ......... coord_status(), coord_list(), coord_show(),
 *                               coord_checkpoint(), coord_set_policy(),
 *                               coord_policy_parse(), coord_free()
 *   6. Names .................. coord_canonicalize(), coord_instance_dir(),
 *                               coord_default_dir()
 *   7. Threads, fork(), broker restarts and broker notices
 *   8. Implementation ......... only with COORD_IMPLEMENTATION
 *
 * COMPILE-TIME OPTIONS
 *
 *   COORD_IMPLEMENTATION   emit the implementation in this translation unit.
 *   COORD_API              storage class of the public functions (default
 *                          extern; define as `static` to keep everything
 *                          private to one file).
 *
 * ENVIRONMENT (read only by coord_connect() and coord_instance_dir())
 *
 *   COORD_DIR              instance directory (see coord_instance_dir()).
 *   COORD_NO_AUTOSTART=1   never start a broker; fail with COORD_ENOBROKER.
 *   COORD_BROKER           path of the coordd binary to autostart
 *                          (default: "coordd" looked up on PATH).
 */
/* The implementation needs C11 and POSIX.1-2008 with XSI.  In a strict
 * mode (-std=c11) it asks for them here when coord.h is the first header of
 * the translation unit; otherwise the program must (see the #error below). */
#if defined(COORD_IMPLEMENTATION) && defined(__STRICT_ANSI__) && !defined(_FEATURES_H) &&       \
        !defined(_XOPEN_SOURCE) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) &&        \
        !defined(_DEFAULT_SOURCE)
#define _XOPEN_SOURCE 700
#endif

#ifndef COORD_H
#define COORD_H

#include <stddef.h>
#include <stdint.h>

#ifndef COORD_API
#define COORD_API extern
#endif

#define COORD_VERSION_MAJOR 0
#define COORD_VERSION_MINOR 2

/* ------------------------------------------------------------------------ */
/* 1. Error codes                                                           */
/* ------------------------------------------------------------------------ */

/* Every function that can fail returns 0 (or a positive count) on success
 * and one of these negative codes on failure.  They sit in a reserved range
 * (-7001 .. -7099) so they are never confused with -errno values.
 * coord_strerror() messages start with the code's name. */
#define COORD_ERRORS(X)                                                          \
	X(EINVAL,     -7001, "invalid argument")                                      \
	X(ENAME,      -7002, "bad resource name (empty, too long, or malformed)")     \
	X(ENOBROKER,  -7003, "no broker reachable and none could be started")         \
	X(EBUSY,      -7004, "resource is held in a conflicting mode (timeout 0)")    \
	X(ETIMEDOUT,  -7005, "the lease was not granted before the timeout")          \
	X(EDEADLK,    -7006, "this connection already holds the resource; waiting would deadlock") \
	X(ENOLEASE,   -7007, "no such lease (already released, reclaimed or revoked)") \
	X(EPROTO,     -7008, "protocol error or version mismatch with the broker")    \
	X(EIO,        -7009, "connection to the broker lost")                         \
	X(ENOMEM,     -7010, "out of memory")                                         \
	X(EPERM,      -7011, "permission denied")                                     \
	X(ELIMIT,     -7012, "a broker limit was reached (leases, clients or waiters)") \
	X(EFORKED,    -7013, "connection used in a child process after fork()")       \
	X(ESYS,       -7014, "a system call failed (see errno)")                      \
	X(ENOTSUP,    -7015, "operation not supported for this resource or broker")   \
	X(ECHECKPOINT, -7016, "checkpoint failed (see the broker log and coordctl show)") \
	X(EBUSYCONN,  -7017, "this connection already has a request waiting")          \
	X(ENOENT,     -7018, "no such resource or file")

enum {
#define COORD__ERRENUM(name, value, text) COORD_##name = (value),
	COORD_ERRORS(COORD__ERRENUM)
#undef COORD__ERRENUM
};

/* Returns a static message for a COORD_E* code, starting with its name,
 * e.g. "COORD_ETIMEDOUT: the lease was not granted before the timeout".
 * Unknown codes give "COORD_E?: unknown error". Never returns NULL. */
COORD_API const char *coord_strerror(int err);

/* Returns the bare name ("COORD_ETIMEDOUT") or "COORD_E?". */
COORD_API const char *coord_errname(int err);

/* ------------------------------------------------------------------------ */
/* 2. Options                                                               */
/* ------------------------------------------------------------------------ */

/* Log levels passed to coord_options_t.log. */
enum { COORD_LOG_ERROR = 0, COORD_LOG_WARN = 1, COORD_LOG_INFO = 2, COORD_LOG_DEBUG = 3 };

/* Options for coord_connect().  A zeroed struct (or NULL) means "all
 * defaults"; every field documents what zero means. */
typedef struct coord_options {
	const char *dir;        /* instance directory; NULL: see
	                           coord_instance_dir() */
	const char *broker;     /* coordd binary for autostart; NULL: $COORD_BROKER,
	                           else "coordd" on PATH */
	int no_autostart;       /* 0: autostart unless COORD_NO_AUTOSTART=1;
	                           1: never start a broker */
	int connect_timeout_ms; /* how long to wait for a starting broker;
	                           0: 5000 ms */
	/* Optional logger.  The library never prints; it reports what it does
	 * (autostart, lost connection) here.  NULL: silent. */
	void (*log)(void *userdata, int level, const char *message);
	void *log_userdata;
} coord_options_t;

/* ------------------------------------------------------------------------ */
/* 3. Connections                                                           */
/* ------------------------------------------------------------------------ */

typedef struct coord coord_t;

/* Connects to the broker of the instance directory, starting one if none is
 * running (unless autostart is off).  Two processes that start a broker at
 * the same moment still end up with exactly one.
 *
 *   out   receives the connection; untouched on failure.
 *   opts  NULL or options (see coord_options_t).
 *
 * Returns 0, or:
 *   COORD_EINVAL     out is NULL, or the directory path is too long.
 *   COORD_ENOBROKER  nothing listens on the socket and autostart is off,
 *                    failed, or timed out.
 *   COORD_EPERM      the socket exists but we may not connect to it.
 *   COORD_EPROTO     the broker speaks another protocol version.
 *   COORD_ENOMEM, COORD_ESYS. */
COORD_API int coord_connect(coord_t **out, const coord_options_t *opts);

/* Closes the connection.  The broker releases every lease still held on it
 * at once (exactly as if the process had died).  Lease handles obtained
 * from `c` become stale: coord_release() on one returns COORD_ENOLEASE and
 * coord_lease_valid() 0.  Resource handles of `c` can then only be closed.
 * NULL is a no-op. */
COORD_API void coord_disconnect(coord_t *c);

/* The instance directory this connection uses.  Valid until disconnect. */
COORD_API const char *coord_dir(const coord_t *c);

/* ------------------------------------------------------------------------ */
/* 4. Resources and leases                                                  */
/* ------------------------------------------------------------------------ */

enum { COORD_READ = 1, COORD_WRITE = 2 };

/* Longest canonical resource name, in bytes, without the final NUL. */
#define COORD_NAME_MAX 511
/* Longest lease label, in bytes, without the final NUL (longer is cut). */
#define COORD_LABEL_MAX 127

typedef struct coord_resource coord_resource_t;
typedef struct coord_lease coord_lease_t;

/* Opens a handle on a resource of connection `c`, resolving its name once.
 *
 *   name  a file path (it contains '/' or names an existing file) is
 *         canonicalised with coord_canonicalize(), so every spelling of one
 *         file is one resource; anything else is an opaque key.
 *   out   receives the handle; untouched on failure.
 *
 * The handle remembers the canonical name, so coord_resource_acquire()
 * does no path work at all.  Close it with coord_resource_close().
 *
 * Returns 0, or COORD_EINVAL (NULL argument), COORD_ENAME (see
 * coord_canonicalize()), COORD_EFORKED, COORD_ENOMEM. */
COORD_API int coord_resource_open(coord_t *c, const char *name, coord_resource_t **out);

/* Frees the handle.  Leases acquired through it stay held.  NULL is a
 * no-op. */
COORD_API void coord_resource_close(coord_resource_t *r);

/* The canonical name.  Valid until the handle is closed. */
COORD_API const char *coord_resource_name(const coord_resource_t *r);

/* Acquires a lease on the resource of handle `r`.
 *
 *   mode        COORD_READ (shared) or COORD_WRITE (exclusive).
 *   timeout_ms  0: try once; -1: wait forever; >0: wait at most this long.
 *   label       NULL or a short text shown by `coordctl list` (e.g. the job).
 *   out         receives the lease handle; untouched on failure.
 *
 * Requests are served in FIFO order.  Consecutive readers at the head of the
 * queue are granted together; once a writer waits, later readers queue
 * behind it.  Each write grant carries a fencing token larger than any token
 * granted before on this resource (coord_lease_token()).
 *
 * Returns 0, or:
 *   COORD_EINVAL     bad mode, timeout < -1, NULL argument.
 *   COORD_EBUSY      timeout_ms == 0 and the resource is held in a
 *                    conflicting mode or has waiters.
 *   COORD_ETIMEDOUT  not granted within timeout_ms; the request has left the
 *                    queue and nothing is held.
 *   COORD_EDEADLK    this connection already holds the resource in write
 *                    mode, or holds it for read and asks for write.
 *                    (A second read on a held read is granted at once.)
 *   COORD_ELIMIT     the broker's lease or waiter table is full.
 *   COORD_EIO        the broker connection broke, or was closed; reconnect.
 *   COORD_EFORKED    called in a child after fork() (see section 7).
 *   COORD_ENOMEM, COORD_EPROTO. */
COORD_API int coord_resource_acquire(coord_resource_t *r, int mode, int timeout_ms,
                                     const char *label, coord_lease_t **out);

/* The convenience form: coord_resource_open(), coord_resource_acquire()
 * and coord_resource_close() in one call.  Returns what they return. */
COORD_API int coord_acquire(coord_t *c, const char *resource, int mode, int timeout_ms,
                            const char *label, coord_lease_t **out);

/* Releases the lease.  A lease handle is a checked value, not a pointer
 * to memory the caller owns: after the release it is stale, and every call
 * with a stale handle is safe: coord_release() returns COORD_ENOLEASE
 * (a double release, or a release after coord_disconnect()),
 * coord_lease_valid() returns 0 and the other accessors 0 or NULL.
 *
 * It returns as soon as the request is sent, without waiting for the
 * broker: the broker handles one connection's requests in order, so a
 * later call on the same connection already sees the lease released, and
 * other processes are granted as soon as the broker reads it (micro-
 * seconds).  Stop using the resource before calling it.
 *
 * Returns 0, or:
 *   COORD_ENOLEASE   the handle is stale, or the broker had already taken
 *                    the lease back (the holder was revoked or the broker
 *                    restarted).  Anything written under it must be treated
 *                    as unfenced.
 *   COORD_EIO        the connection broke; the broker releases the lease
 *                    itself when it notices.
 *   COORD_EFORKED    called in a child after fork(); the handle is stale
 *                    in the child from then on.
 *   COORD_EINVAL     lease is NULL. */
COORD_API int coord_release(coord_lease_t *lease);

/* The fencing token of the lease.  For write leases it rises at every write
 * grant of the resource and never goes backwards, even across broker
 * restarts and reboots; pass it to whatever you write so late writes from a
 * stale holder can be refused.  Read leases carry the token of the last
 * write grant.  0 for a stale handle. */
COORD_API uint64_t coord_lease_token(const coord_lease_t *lease);

/* The broker-wide unique id of the lease (as shown by `coordctl list`);
 * 0 for a stale handle. */
COORD_API uint64_t coord_lease_id(const coord_lease_t *lease);

/* COORD_READ or COORD_WRITE; 0 for a stale handle. */
COORD_API int coord_lease_mode(const coord_lease_t *lease);

/* The canonical resource name; NULL for a stale handle.  Valid until the
 * lease is released. */
COORD_API const char *coord_lease_resource(const coord_lease_t *lease);

/* 1 if the broker still counts the lease as held, 0 if it was released,
 * reclaimed or revoked, or the handle is stale.  Costs no system call: it
 * reads one word of the shared region the broker maps into every client,
 * so it is cheap enough to call before every write.  Safe from any
 * thread. */
COORD_API int coord_lease_valid(const coord_lease_t *lease);

/* ------------------------------------------------------------------------ */
/* 5. Administration                                                        */
/* ------------------------------------------------------------------------ */

/* What a resource is, from its file's first bytes (redone before every
 * checkpoint, since a lease may be taken before the file exists). */
enum { COORD_KIND_PLAIN = 0, COORD_KIND_SQLITE = 1, COORD_KIND_DUCKDB = 2 };

/* Checkpoint policies (see docs/design.md, "Checkpoints"). */
enum {
	COORD_POLICY_AUTO = 0,   /* checkpoint by detected kind */
	COORD_POLICY_NONE = 1,   /* never checkpoint */
	COORD_POLICY_SQLITE = 2, /* SQLite checkpoint, mode in sqlite_mode */
	COORD_POLICY_DUCKDB = 3, /* DuckDB CHECKPOINT */
	COORD_POLICY_EXEC = 4,   /* run a command with the file path */
};

/* SQLite checkpoint modes, as sqlite3_wal_checkpoint_v2() names them.
 * COORD_SQLITE_DEFAULT is the mode of COORD_POLICY_AUTO and of a bare
 * "sqlite" policy. */
enum {
	COORD_SQLITE_PASSIVE = 0,
	COORD_SQLITE_FULL = 1,
	COORD_SQLITE_RESTART = 2,
	COORD_SQLITE_TRUNCATE = 3,
	COORD_SQLITE_DEFAULT = COORD_SQLITE_FULL,
};

/* Longest exec: checkpoint command, without the final NUL. */
#define COORD_COMMAND_MAX 1023
/* Longest checkpoint message, without the final NUL. */
#define COORD_MESSAGE_MAX 1023
/* Longest instance directory path, without the final NUL. */
#define COORD_DIR_MAX 4095
/* Longest process command name reported by the broker. */
#define COORD_COMMAND_NAME_MAX 15

/* A resource's checkpoint policy. */
typedef struct coord_policy {
	int policy;              /* COORD_POLICY_* */
	int sqlite_mode;         /* COORD_SQLITE_*; used with COORD_POLICY_SQLITE */
	uint32_t timeout_ms;     /* time limit of one checkpoint; 0: the
	                            broker's default (coordd --checkpoint-timeout) */
	char command[COORD_COMMAND_MAX + 1]; /* COORD_POLICY_EXEC: run as
	                            `sh -c COMMAND coord-checkpoint PATH` */
} coord_policy_t;

/* The broker, as coord_status() reports it. */
typedef struct coord_status {
	uint32_t protocol;       /* the broker's protocol version */
	uint64_t broker_pid;
	uint64_t uptime_ms;
	uint64_t clients;        /* connected, including the caller */
	uint64_t leases;         /* held */
	uint64_t waiters;        /* queued requests */
	uint64_t resources;      /* known to the broker (held, waited for, or
	                            with a stored policy or token) */
	char dir[COORD_DIR_MAX + 1]; /* the instance directory, as the broker
	                            resolved it */
} coord_status_t;

/* One holder or waiter, as coord_list() and coord_show() report it. */
typedef struct coord_lease_info {
	int waiting;             /* 0: holds the lease; 1: waits for it */
	int mode;                /* COORD_READ or COORD_WRITE */
	uint64_t lease_id;       /* 0 for waiters */
	uint64_t token;          /* fencing token; 0 for waiters */
	uint64_t pid, uid;       /* of the process that connected */
	uint64_t age_ms;         /* held for, or waited for */
	char resource[COORD_NAME_MAX + 1];
	char command[COORD_COMMAND_NAME_MAX + 1]; /* the process's comm */
	char label[COORD_LABEL_MAX + 1];          /* "checkpoint" for a queued
	                                             coord_checkpoint() */
} coord_lease_info_t;

/* A resource, as coord_show() and coord_checkpoint() report it. */
typedef struct coord_resource_info {
	char name[COORD_NAME_MAX + 1];
	int kind;                /* COORD_KIND_*, detected now (or forced by the
	                            policy, for a checkpoint) */
	coord_policy_t policy;   /* timeout_ms is the limit in force */
	uint64_t token;          /* the last write token granted */
	uint64_t holders, waiters;
	int checkpoint_running;  /* 1 while a checkpoint runs */
	int duckdb_available;    /* 0: the broker cannot load libduckdb.so, and
	                            message says why */
	uint64_t checkpoints;    /* how many have run, ever */
	uint64_t last_at_ms;     /* wall clock (ms since the epoch) of the last
	                            one; 0 if none */
	uint64_t last_duration_us;
	int last_result;         /* 0 or a COORD_E* code */
	int64_t wal_before, wal_after; /* WAL bytes around the last one; -1:
	                            none or unknown */
	char message[COORD_MESSAGE_MAX + 1]; /* what the last checkpoint did, or
	                            why it failed */
} coord_resource_info_t;

/* Asks the broker how it is.  Returns 0 with *out filled, or COORD_EINVAL,
 * COORD_EIO, COORD_EFORKED, COORD_EPROTO. */
COORD_API int coord_status(coord_t *c, coord_status_t *out);

/* Every holder and waiter of every resource.  On success *out is an array
 * of *count entries (holders of a resource before its waiters, waiters in
 * queue order) allocated for the caller, to be freed with coord_free(); it
 * is NULL when *count is 0.
 *
 * Returns 0, or COORD_EINVAL, COORD_EIO, COORD_EFORKED, COORD_EPROTO,
 * COORD_ENOMEM. */
COORD_API int coord_list(coord_t *c, coord_lease_info_t **out, size_t *count);

/* One resource: its kind, policy, token, last checkpoint, and (if leases
 * is not NULL) its holders and waiters as coord_list() gives them.  A
 * resource the broker has never seen is reported with its defaults.
 *
 * Returns 0, or COORD_ENAME (see coord_canonicalize()), COORD_EINVAL,
 * COORD_EIO, COORD_EFORKED, COORD_EPROTO, COORD_ENOMEM. */
COORD_API int coord_show(coord_t *c, const char *resource, coord_resource_info_t *info,
                         coord_lease_info_t **leases, size_t *nleases);

/* Checkpoints a database file now.  The request waits its FIFO turn like a
 * writer, without a time limit of its own, and runs once nobody holds the
 * resource; the broker's time limit for checkpoints applies.  *info (may
 * be NULL) receives the resource as it is after the checkpoint, with the
 * result in last_result and message.
 *
 * Returns 0, or:
 *   COORD_ENOTSUP      not a file, a plain file under policy auto, policy
 *                      none, or DuckDB without libduckdb.so (message says).
 *   COORD_ECHECKPOINT  the engine or the command failed (message says).
 *   COORD_ENOENT       the file does not exist.
 *   COORD_EPERM        the broker cannot open the file for writing.
 *   COORD_EBUSYCONN, COORD_ENAME, COORD_EINVAL, COORD_EIO, COORD_EFORKED,
 *   COORD_EPROTO. */
COORD_API int coord_checkpoint(coord_t *c, const char *resource, coord_resource_info_t *info);

/* Sets the checkpoint policy of a resource, durably (it survives broker
 * restarts and reboots).  Returns 0, or COORD_EINVAL (a value out of range,
 * an exec policy without a command or a command without exec, a time limit
 * over 24 h), COORD_ENAME, COORD_EIO, COORD_EFORKED, COORD_EPROTO, or what
 * the broker's store failed with. */
COORD_API int coord_set_policy(coord_t *c, const char *resource, const coord_policy_t *policy);

/* Parses "auto", "none", "sqlite", "sqlite:passive|full|restart|truncate",
 * "duckdb" or "exec:COMMAND" (exact, lower case) into *out, with
 * sqlite_mode COORD_SQLITE_DEFAULT unless one is named and timeout_ms 0.
 * Returns 0, or COORD_EINVAL for anything else (including NULL, "exec:",
 * "sqlite:" and a command longer than COORD_COMMAND_MAX), leaving *out
 * untouched. */
COORD_API int coord_policy_parse(const char *text, coord_policy_t *out);

/* Static lower-case names ("auto", "sqlite", "full", ...); "?" for a value
 * out of range.  Never NULL. */
COORD_API const char *coord_policy_name(int policy);
COORD_API const char *coord_kind_name(int kind);
COORD_API const char *coord_sqlite_mode_name(int mode);

/* Frees what coord_list() and coord_show() allocated.  NULL is a no-op. */
COORD_API void coord_free(void *p);

/* ------------------------------------------------------------------------ */
/* 6. Names                                                                 */
/* ------------------------------------------------------------------------ */

/* Canonicalises a resource name into `buf` (size `size`).
 *
 * A name that contains '/' or names an existing file is a path: it becomes
 * absolute, with symlinks, "." and ".." resolved (the file itself need not
 * exist, its directory must).  Any other name is an opaque key, kept as is;
 * keys therefore never contain '/', and paths always start with it.
 *
 * Returns the length of the canonical name, or:
 *   COORD_ENAME   empty, longer than COORD_NAME_MAX, or a path whose
 *                 directory does not exist.
 *   COORD_EINVAL  NULL argument or buffer too small. */
COORD_API int coord_canonicalize(const char *name, char *buf, size_t size);

/* Writes the instance directory that coord_connect() with opts.dir == dir
 * would use, and that coordd --dir would serve: `dir` if it is not NULL or
 * empty, else $COORD_DIR if set and not empty, else coord_default_dir().
 * Returns its length, or COORD_EINVAL if `size` is too small or no home
 * directory is known. */
COORD_API int coord_instance_dir(const char *dir, char *buf, size_t size);

/* Writes the instance directory used when neither opts.dir nor $COORD_DIR
 * is set: $XDG_STATE_HOME/coord, else $HOME/.local/state/coord, or
 * /var/lib/coord for root.  The directory is persistent on purpose: it
 * keeps fencing tokens and per-resource policies across reboots.
 * Returns its length, or COORD_EINVAL if `size` is too small or no home
 * directory is known. */
COORD_API int coord_default_dir(char *buf, size_t size);

/* ------------------------------------------------------------------------ */
/* 7. Threads, fork(), broker restarts and broker notices                  */
/* ------------------------------------------------------------------------
 *
 * Threads.  Calls on one coord_t are serialised by a mutex inside it, so
 * sharing a connection between threads is safe; but a thread blocked in
 * an acquire holds that mutex until it returns, and leases belong to the
 * connection, not the thread.  Give each thread that waits for leases its
 * own connection.  coord_lease_valid(), coord_lease_token() and the other
 * accessors take no lock, and a lease handle may be released from any
 * thread.  A resource handle must not be closed while another thread
 * acquires through it.
 *
 * fork().  Leases belong to the process that connected.  In a child, every
 * call on an inherited connection, resource handle or lease returns
 * COORD_EFORKED; the child's copy of the socket is closed in the child so
 * it cannot keep the parent's leases alive.  Connect again in the child.
 * The socket is close-on-exec.
 *
 * Broker restarts.  If the broker dies, nobody can be granted a conflicting
 * lease until a new broker starts, and a new broker clears every lease of
 * the old one from the shared region before it grants anything; so
 * coord_lease_valid() stays truthful.  Calls on the old connection return
 * COORD_EIO; reconnect.  Fencing tokens keep rising across the restart.
 *
 * Broker notices.  The broker may send a connection messages nobody asked
 * for (the wire protocol's seq 0).  The library reads them whenever it
 * reads the socket and keeps what it knows about; none is defined yet
 * (recall notices will be the first).
 */

#endif /* COORD_H */

/* ------------------------------------------------------------------------ */
/* 8. Implementation                                                        */
/* ------------------------------------------------------------------------ */

#if defined(COORD_IMPLEMENTATION) && !defined(COORD__IMPLEMENTED)
#define COORD__IMPLEMENTED

#if defined(__STRICT_ANSI__) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) &&              \
        !defined(_DEFAULT_SOURCE)
#error "coord.h's implementation needs POSIX.1-2008/XSI: include coord.h first in this file, define _XOPEN_SOURCE 700 before every #include, or compile with -std=gnu11"
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coord_proto.h"

struct coord {
	pthread_mutex_t lock;
	int fd;
	pid_t pid;              /* process that connected */
	uint32_t seq;
	int broken;             /* connection lost */
	const coord_shm_slot *slots;
	uint64_t slot_count;
	void *map;
	size_t map_size;
	uint64_t client_id;
	void (*log)(void *, int, const char *);
	void *log_userdata;
	struct coord *next_conn; /* all connections, for the fork handler */
	struct coord_lease *leases; /* handles not yet released */
	char dir[PATH_MAX];
};

struct coord_lease {
	coord_t *conn;          /* NULL once the connection is closed */
	struct coord_lease *next, *prev;
	uint64_t id;
	uint64_t token;
	uint64_t slot;
	int mode;
	char resource[COORD_NAME_MAX + 1];
};

COORD_API const char *coord_strerror(int err)
{
	switch (err) {
#define COORD__ERRSTR(name, value, text) case value: return "COORD_" #name ": " text;
		COORD_ERRORS(COORD__ERRSTR)
#undef COORD__ERRSTR
	}
	return "COORD_E?: unknown error";
}

COORD_API const char *coord_errname(int err)
{
	switch (err) {
#define COORD__ERRNAME(name, value, text) case value: return "COORD_" #name;
		COORD_ERRORS(COORD__ERRNAME)
#undef COORD__ERRNAME
	}
	return "COORD_E?";
}

static void coord__log(const coord_t *c, int level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	if (!c || !c->log)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	c->log(c->log_userdata, level, buf);
}

/* ---- fork handling: children close inherited connections ---- */

static pthread_mutex_t coord__conns_lock = PTHREAD_MUTEX_INITIALIZER;
static coord_t *coord__conns;
static pthread_once_t coord__atfork_once = PTHREAD_ONCE_INIT;

static void coord__atfork_child(void)
{
	/* Only this thread exists in the child; the list lock may have been
	 * held by another thread of the parent, so do not take it. */
	for (coord_t *c = coord__conns; c; c = c->next_conn) {
		if (c->fd >= 0 && c->pid != getpid()) {
			close(c->fd);
			c->fd = -1;
		}
	}
	pthread_mutex_init(&coord__conns_lock, NULL);
}

static void coord__atfork_register(void)
{
	pthread_atfork(NULL, NULL, coord__atfork_child);
}

static void coord__conns_add(coord_t *c)
{
	pthread_once(&coord__atfork_once, coord__atfork_register);
	pthread_mutex_lock(&coord__conns_lock);
	c->next_conn = coord__conns;
	coord__conns = c;
	pthread_mutex_unlock(&coord__conns_lock);
}

static void coord__conns_remove(coord_t *c)
{
	pthread_mutex_lock(&coord__conns_lock);
	for (coord_t **p = &coord__conns; *p; p = &(*p)->next_conn) {
		if (*p == c) {
			*p = c->next_conn;
			break;
		}
	}
	pthread_mutex_unlock(&coord__conns_lock);
}

/* ---- names ---- */

COORD_API int coord_default_dir(char *buf, size_t size)
{
	const char *state = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	int n;
	if (!buf)
		return COORD_EINVAL;
	if (geteuid() == 0 && (!state || !*state))
		n = snprintf(buf, size, "/var/lib/coord");
	else if (state && state[0] == '/')
		n = snprintf(buf, size, "%s/coord", state);
	else if (home && home[0] == '/')
		n = snprintf(buf, size, "%s/.local/state/coord", home);
	else
		return COORD_EINVAL;
	if (n < 0 || (size_t)n >= size)
		return COORD_EINVAL;
	return n;
}

COORD_API int coord_canonicalize(const char *name, char *buf, size_t size)
{
	char dir[PATH_MAX], real[PATH_MAX];
	struct stat st;
	size_t len;
	const char *base, *slash;
	int n;

	if (!name || !buf || size == 0)
		return COORD_EINVAL;
	len = strlen(name);
	if (len == 0 || len > COORD_NAME_MAX)
		return COORD_ENAME;
	if (!strchr(name, '/') && lstat(name, &st) != 0) {
		/* an opaque key */
		if (len + 1 > size)
			return COORD_EINVAL;
		memcpy(buf, name, len + 1);
		return (int)len;
	}
	/* A path.  If it exists, realpath() resolves it whole (symlinks in the
	 * last component too).  Otherwise resolve the directory and append the
	 * last component, so a database file can be leased before it exists. */
	if (realpath(name, real)) {
		n = snprintf(buf, size, "%s", real);
	} else {
		slash = strrchr(name, '/');
		if (slash) {
			size_t dl = (size_t)(slash - name);
			if (dl >= sizeof dir)
				return COORD_ENAME;
			memcpy(dir, name, dl);
			dir[dl] = 0;
			if (dl == 0)
				strcpy(dir, "/");
			base = slash + 1;
		} else {
			strcpy(dir, ".");
			base = name;
		}
		if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
			return COORD_ENAME;
		if (!realpath(dir, real))
			return COORD_ENAME;
		n = snprintf(buf, size, "%s%s%s", real, strcmp(real, "/") ? "/" : "", base);
	}
	if (n < 0 || (size_t)n >= size)
		return COORD_EINVAL;
	if ((size_t)n > COORD_NAME_MAX)
		return COORD_ENAME;
	return n;
}

/* ---- messaging ---- */

static int coord__send(coord_t *c, const void *msg, size_t len)
{
	ssize_t n;
	do
		n = send(c->fd, msg, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len) {
		c->broken = 1;
		return COORD_EIO;
	}
	return 0;
}

static int64_t coord__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Receives the reply to `seq` into buf.  Messages for other seqs are
 * stale replies to abandoned requests and are dropped.  timeout_ms < 0
 * waits forever.  Returns the length or a COORD_E* code. */
static int coord__recv(coord_t *c, uint32_t seq, void *buf, size_t size, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : coord__now_ms() + timeout_ms;
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int wait = -1;
		ssize_t n;
		if (deadline >= 0) {
			int64_t left = deadline - coord__now_ms();
			wait = left < 0 ? 0 : (int)left;
		}
		n = poll(&pfd, 1, wait);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			c->broken = 1;
			return COORD_EIO;
		}
		if (n == 0)
			return COORD_ETIMEDOUT;
		n = recv(c->fd, buf, size, MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			c->broken = 1;
			return COORD_EIO;
		}
		if ((size_t)n > size || (size_t)n < sizeof(coord_msg_hdr)) {
			c->broken = 1;
			return COORD_EPROTO;
		}
		if (((coord_msg_hdr *)buf)->seq != seq)
			continue;
		return (int)n;
	}
}

static int coord__check(coord_t *c)
{
	if (!c)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED;
	if (c->broken || c->fd < 0)
		return COORD_EIO;
	return 0;
}

/* ---- connect, with autostart ---- */

static int coord__dial(const char *dir, int *fd_out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, COORD_SOCKET_NAME) >=
	    sizeof sa.sun_path)
		return COORD_EINVAL;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return COORD_ESYS;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		*fd_out = fd;
		return 0;
	}
	rc = (errno == EACCES || errno == EPERM) ? COORD_EPERM : COORD_ENOBROKER;
	close(fd);
	return rc;
}

/* In a child about to exec the broker: close every descriptor above 2 the
 * application left without close-on-exec, so the daemon cannot keep the
 * application's pipes or files open for its whole life. */
static void coord__close_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int keep;
	if (!d)
		return;
	keep = dirfd(d);
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (fd > 2 && fd != keep)
			close(fd);
	}
	closedir(d);
}

/* Starts `coordd --daemon --dir DIR` and waits for the launcher to exit;
 * the daemon itself signals readiness before its launcher exits.  Exit
 * status 0 (started) and 3 (another broker holds the directory) both mean
 * a broker is there. */
static int coord__spawn_broker(coord_t *c, const char *broker, const char *dir)
{
	pid_t pid;
	int status;
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		sigset_t none;
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		coord__close_inherited();
		for (int s = 1; s < 65; s++) /* every signal number Linux has */
			signal(s, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execlp(broker, broker, "--daemon", "--dir", dir, (char *)NULL);
		_exit(127);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		return COORD_ESYS;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return COORD_ESYS;
	}
	if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3)) {
		coord__log(c, COORD_LOG_INFO, "started broker %s for %s", broker, dir);
		return 0;
	}
	coord__log(c, COORD_LOG_ERROR, "broker %s --daemon --dir %s failed (status 0x%x)", broker,
	           dir, status);
	return COORD_ENOBROKER;
}

static int coord__map_region(coord_t *c)
{
	char path[PATH_MAX + 32];
	struct stat st;
	const coord_shm_header *h;
	int fd, rc = COORD_EPROTO;

	snprintf(path, sizeof path, "%s/%s", c->dir, COORD_SHM_NAME);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == EACCES ? COORD_EPERM : COORD_EPROTO;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < COORD_SHM_HEADER_SIZE)
		goto out;
	c->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (c->map == MAP_FAILED) {
		c->map = NULL;
		rc = COORD_ESYS;
		goto out;
	}
	c->map_size = (size_t)st.st_size;
	h = c->map;
	if (memcmp(h->magic, COORD_SHM_MAGIC, 8) != 0 || h->header_size != COORD_SHM_HEADER_SIZE ||
	    h->slot_size != sizeof(coord_shm_slot) ||
	    h->slot_count > (c->map_size - COORD_SHM_HEADER_SIZE) / sizeof(coord_shm_slot))
		goto out;
	c->slots = (const coord_shm_slot *)((const char *)c->map + h->header_size);
	c->slot_count = h->slot_count;
	rc = 0;
out:
	close(fd);
	return rc;
}

COORD_API int coord_connect(coord_t **out, const coord_options_t *opts)
{
	coord_options_t none = { 0 };
	coord_t *c = NULL;
	const char *env;
	const char *broker;
	int rc, autostart, timeout_ms, started = 0;
	int64_t deadline;
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	union {
		coord_msg_welcome w;
		char raw[COORD_MSG_MAX];
	} reply;

	if (!out)
		return COORD_EINVAL;
	if (!opts)
		opts = &none;
	c = calloc(1, sizeof *c);
	if (!c)
		return COORD_ENOMEM;
	c->fd = -1;
	c->log = opts->log;
	c->log_userdata = opts->log_userdata;
	pthread_mutex_init(&c->lock, NULL);

	/* All environment variables are read here and nowhere else. */
	if (opts->dir && *opts->dir) {
		rc = snprintf(c->dir, sizeof c->dir, "%s", opts->dir) < (int)sizeof c->dir ? 0 : COORD_EINVAL;
	} else if ((env = getenv("COORD_DIR")) && *env) {
		rc = snprintf(c->dir, sizeof c->dir, "%s", env) < (int)sizeof c->dir ? 0 : COORD_EINVAL;
	} else {
		rc = coord_default_dir(c->dir, sizeof c->dir);
		rc = rc < 0 ? rc : 0;
	}
	if (rc < 0)
		goto fail;
	env = getenv("COORD_NO_AUTOSTART");
	autostart = !opts->no_autostart && !(env && !strcmp(env, "1"));
	broker = opts->broker ? opts->broker : getenv("COORD_BROKER");
	if (!broker || !*broker)
		broker = "coordd";
	timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;

	deadline = coord__now_ms() + timeout_ms;
	for (;;) {
		rc = coord__dial(c->dir, &c->fd);
		if (rc != COORD_ENOBROKER || !autostart)
			break;
		if (!started) {
			rc = coord__spawn_broker(c, broker, c->dir);
			if (rc < 0)
				break;
			started = 1;
			continue;
		}
		if (coord__now_ms() >= deadline)
			break;
		/* The broker said it was ready (or another one was starting);
		 * give its socket a moment to accept. */
		poll(NULL, 0, 5);
	}
	if (rc < 0)
		goto fail;

	c->pid = getpid();
	rc = coord__send(c, &hello, sizeof hello);
	if (rc < 0)
		goto fail;
	c->seq = 1;
	rc = coord__recv(c, 1, &reply, sizeof reply, timeout_ms);
	if (rc < 0)
		goto fail;
	if ((size_t)rc < sizeof reply.w || reply.w.h.type != COORD_MSG_WELCOME) {
		rc = COORD_EPROTO;
		goto fail;
	}
	if (reply.w.status < 0) {
		rc = reply.w.status;
		goto fail;
	}
	c->client_id = reply.w.client_id;
	rc = coord__map_region(c);
	if (rc < 0)
		goto fail;
	coord__conns_add(c);
	*out = c;
	return 0;
fail:
	if (c->fd >= 0)
		close(c->fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return rc;
}

COORD_API void coord_disconnect(coord_t *c)
{
	if (!c)
		return;
	coord__conns_remove(c);
	pthread_mutex_lock(&c->lock);
	for (coord_lease_t *l = c->leases; l; l = l->next)
		l->conn = NULL;
	pthread_mutex_unlock(&c->lock);
	if (c->fd >= 0)
		close(c->fd);
	if (c->map)
		munmap(c->map, c->map_size);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

COORD_API const char *coord_dir(const coord_t *c)
{
	return c ? c->dir : NULL;
}

/* ---- leases ---- */

COORD_API int coord_acquire(coord_t *c, const char *resource, int mode, int timeout_ms,
                            const char *label, coord_lease_t **out)
{
	char name[COORD_NAME_MAX + 1];
	union {
		coord_msg_acquire a;
		char raw[COORD_MSG_MAX];
	} req;
	union {
		coord_msg_grant g;
		coord_msg_reply r;
		char raw[COORD_MSG_MAX];
	} rep;
	coord_lease_t *l = NULL;
	size_t label_len = 0;
	int rc, name_len, wait;

	if (!c || !resource || !out || (mode != COORD_READ && mode != COORD_WRITE) || timeout_ms < -1)
		return COORD_EINVAL;
	if (c->pid != getpid())
		return COORD_EFORKED; /* before locking: the lock may be a copy held by a dead thread */
	name_len = coord_canonicalize(resource, name, sizeof name);
	if (name_len < 0)
		return name_len;
	if (label) {
		label_len = strnlen(label, COORD_LABEL_MAX);
	}
	l = calloc(1, sizeof *l);
	if (!l)
		return COORD_ENOMEM;

	pthread_mutex_lock(&c->lock);
	rc = coord__check(c);
	if (rc < 0)
		goto out;
	memset(&req.a, 0, sizeof req.a);
	req.a.h.type = COORD_MSG_ACQUIRE;
	req.a.h.seq = ++c->seq;
	req.a.mode = (uint32_t)mode;
	req.a.timeout_ms = timeout_ms;
	req.a.name_len = (uint16_t)name_len;
	req.a.label_len = (uint16_t)label_len;
	memcpy(req.raw + sizeof req.a, name, (size_t)name_len);
	if (label_len)
		memcpy(req.raw + sizeof req.a + name_len, label, label_len);
	rc = coord__send(c, &req, sizeof req.a + (size_t)name_len + label_len);
	if (rc < 0)
		goto out;
	/* The broker enforces the timeout and always answers; wait for it
	 * without a deadline of our own (a dead broker hangs up). */
	wait = -1;
	rc = coord__recv(c, req.a.h.seq, &rep, sizeof rep, wait);
	if (rc < 0)
		goto out;
	if (rep.r.h.type == COORD_MSG_REPLY && (size_t)rc >= sizeof rep.r) {
		rc = rep.r.status < 0 ? rep.r.status : COORD_EPROTO;
		goto out;
	}
	if (rep.g.h.type != COORD_MSG_GRANT || (size_t)rc < sizeof rep.g) {
		c->broken = 1;
		rc = COORD_EPROTO;
		goto out;
	}
	if (rep.g.status < 0) {
		rc = rep.g.status;
		goto out;
	}
	if (rep.g.slot >= c->slot_count) {
		c->broken = 1;
		rc = COORD_EPROTO;
		goto out;
	}
	l->conn = c;
	l->id = rep.g.lease_id;
	l->token = rep.g.token;
	l->slot = rep.g.slot;
	l->mode = mode;
	memcpy(l->resource, name, (size_t)name_len + 1);
	l->next = c->leases;
	if (c->leases)
		c->leases->prev = l;
	c->leases = l;
	*out = l;
	l = NULL;
	rc = 0;
out:
	pthread_mutex_unlock(&c->lock);
	free(l);
	return rc;
}

COORD_API int coord_release(coord_lease_t *l)
{
	coord_t *c;
	coord_msg_release req;
	int rc, valid;

	if (!l)
		return COORD_EINVAL;
	c = l->conn;
	if (!c) {
		free(l);
		return COORD_EIO;
	}
	if (c->pid != getpid()) {
		free(l);
		return COORD_EFORKED;
	}
	pthread_mutex_lock(&c->lock);
	if (l->prev)
		l->prev->next = l->next;
	else
		c->leases = l->next;
	if (l->next)
		l->next->prev = l->prev;
	rc = coord__check(c);
	if (rc < 0)
		goto out;
	/* The release needs no answer: the broker handles a connection's
	 * requests in order, and whether the lease was still held is in the
	 * shared region.  One send, no round trip. */
	valid = coord_lease_valid(l);
	memset(&req, 0, sizeof req);
	req.h.type = COORD_MSG_RELEASE;
	req.h.seq = ++c->seq;
	req.lease_id = l->id;
	req.flags = COORD_RELEASE_NO_REPLY;
	rc = coord__send(c, &req, sizeof req);
	if (rc == 0 && !valid)
		rc = COORD_ENOLEASE;
out:
	pthread_mutex_unlock(&c->lock);
	free(l);
	return rc;
}

COORD_API uint64_t coord_lease_token(const coord_lease_t *l)
{
	return l ? l->token : 0;
}

COORD_API uint64_t coord_lease_id(const coord_lease_t *l)
{
	return l ? l->id : 0;
}

COORD_API int coord_lease_mode(const coord_lease_t *l)
{
	return l ? l->mode : 0;
}

COORD_API const char *coord_lease_resource(const coord_lease_t *l)
{
	return l ? l->resource : NULL;
}

COORD_API int coord_lease_valid(const coord_lease_t *l)
{
	if (!l || !l->conn || !l->conn->slots || l->slot >= l->conn->slot_count)
		return 0;
	return atomic_load_explicit(&l->conn->slots[l->slot].lease, memory_order_acquire) == l->id;
}

#endif /* COORD_IMPLEMENTATION */
