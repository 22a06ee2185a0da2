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
 *                               coord_resource_read_cached(),
 *                               coord_lease_token(), coord_lease_valid(),
 *                               coord_acquire_start(), coord_pending_wait(),
 *                               coord_pending_cancel(), coord_pending_fd(),
 *                               coord_lease_recalled(), coord_recall_fd(),
 *                               coord_recall_clear(), coord_lease_fd(), ...
 *   5. Administration ......... coord_status(), coord_list(), coord_show(),
 *                               coord_checkpoint(), coord_set_policy(),
 *                               coord_set_limits(), coord_revoke(),
 *                               coord_policy_parse(), coord_free(),
 *                               coord_metrics(), coord_feed_open(),
 *                               coord_feed_next(), coord_feed_close()
 *   6. Names .................. coord_canonicalize(), coord_instance_dir(),
 *                               coord_default_dir(), coord_file_instance()
 *   7. Threads, fork(), broker restarts, kernel locks, shared instances,
 *      broker notices
 *   8. Implementation ......... only with COORD_IMPLEMENTATION (in the
 *                               installed coord.h; libcoord/libcoord.c in
 *                               the source tree)
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
 *   COORD_NO_CACHE=1       no cached read grants (coord_resource_acquire()).
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
	X(EDEADLK,    -7006, "waiting would deadlock: this connection already holds the resource, or a connection in the way waits (directly or through others) for a lease this connection holds") \
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
	X(ENOENT,     -7018, "no such resource or file")                              \
	X(ELOST,      -7019, "the lease was lost: the broker restarted and did not give it back") \
	X(EINSTANCE,  -7020, "another instance coordinates this file (see its directory's .coord-instance)") \
	X(EFULL,      -7021, "the broker's database (state.mdb) is full: restart coordd with a larger --map-size (held leases are kept)") \
	X(ENOSPC,     -7022, "no space left in the instance directory: free space on its filesystem; held leases are kept and grants resume by themselves") \
	X(EREGION,    -7023, "the shared region coordd.shm is not the broker's (truncated, copied or replaced): the broker restores it within a second; try again") \
	X(ECANCELED,  -7024, "the request was given up (coord_pending_cancel())")

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
	int no_cache;           /* 1: no cached read grants: every read through a
	                           resource handle asks the broker (also with
	                           COORD_NO_CACHE=1); see coord_resource_acquire() */
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
 *   COORD_EPERM      the socket exists but we may not connect to it: the
 *                    directory is another user's, or a shared instance
 *                    (coordd --group) whose group the caller is not in
 *                    (the broker also refuses such a caller itself, and
 *                    logs event=refuse-client reason=not-in-group).
 *   COORD_EPROTO     the broker speaks another protocol version.
 *   COORD_ELIMIT     the broker is at its --max-clients or out of file
 *                    descriptors, and refused the connection (its log
 *                    says which, once a second).
 *   COORD_EREGION    the shared region file is not the broker's (someone
 *                    truncated, copied or replaced it) and the broker did
 *                    not put its own back within the connect timeout.
 *   COORD_ENOMEM, COORD_ESYS. */
COORD_API int coord_connect(coord_t **out, const coord_options_t *opts);

/* Closes the connection.  The broker releases every lease still held on it
 * at once (exactly as if the process had died).  Lease handles obtained
 * from `c` become stale: coord_release() on one returns COORD_ENOLEASE and
 * coord_lease_valid() 0.  Resource handles of `c` can then only be closed.
 * If the broker restarted since the connection's last call and leases are
 * still held, it reconnects first (see "Broker restarts"), so that the
 * broker that adopted them gives them up now rather than at exit.
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
 *   name  "key:NAME" is a key; every other name is a file path, relative
 *         to the current directory or absolute, whether the file exists or
 *         not.  Both are canonicalised with coord_canonicalize() (see there
 *         for the rule), so every spelling of one file is one resource,
 *         before the file is created and after.
 *   out   receives the handle; untouched on failure.
 *
 * The handle remembers the canonical name, so coord_resource_acquire()
 * does no path work at all: a relative name keeps meaning the file it
 * meant at open, even if the program changes directory later.  Resolving
 * a path reads the mount table (on the project's test VM about 15 us with
 * 20 mounts, and 0.5 us more per mount: 110 us with 220), which a program
 * that acquires one resource in a loop saves by keeping the handle.  Close it with coord_resource_close().
 *
 * One instance per file.  A path's directory may hold a file
 * `.coord-instance` (written by `coordctl share`) naming the instance
 * directory that coordinates the files in it.  If it names another
 * instance than c's (both canonicalised), the open fails with
 * COORD_EINSTANCE, so that a process of another instance cannot take a
 * second write lease beside the first: connect with opts.dir, or set
 * COORD_DIR, to the directory named there.  Cost: one failed open() per
 * coord_resource_open() of a path when there is no marker (and
 * coord_acquire() opens a resource each call); keys are never checked.
 *
 * Returns 0, or COORD_EINVAL (NULL argument), COORD_ENAME (see
 * coord_canonicalize()), COORD_EINSTANCE (above), COORD_EPERM (the marker
 * exists but cannot be read), COORD_EFORKED, COORD_ENOMEM. */
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
 * Cached reads.  When a read lease acquired through a handle is released,
 * the library keeps it as the handle's cached grant (the broker still
 * counts it held; `coordctl list` shows it "cached, idle").  The handle's
 * next read is then taken and released in shared memory: no message, no
 * system call, the same lease id and token, and label ignored.  As soon as
 * someone conflicting asks for the resource, the broker takes an idle
 * grant back itself (its kernel lock too), and a read under way finishes
 * first: a writer is never granted while a cached read is in progress,
 * and no new one starts once a writer waits.  One cached read at a time
 * per handle (a second one at once, from another thread, asks the broker).
 * A write acquire on a connection first gives up that connection's cached
 * grants on the resource.  coord_acquire() never caches; neither does a
 * connection made with coord_options_t.no_cache (or COORD_NO_CACHE=1).
 *
 * Returns 0, or:
 *   COORD_EINVAL     bad mode, timeout < -1, NULL argument.
 *   COORD_EBUSY      timeout_ms == 0 and the resource is held in a
 *                    conflicting mode or has waiters.
 *   COORD_ETIMEDOUT  not granted within timeout_ms; the request has left the
 *                    queue and nothing is held.
 *   COORD_EDEADLK    waiting would deadlock, so the request failed at once
 *                    and nothing changed: this connection already holds
 *                    the resource in write mode, or holds it for read and
 *                    asks for write (a second read on a held read is
 *                    granted at once); or the request would wait for a
 *                    connection that waits, directly or through others,
 *                    for a lease this connection holds (a wait-for cycle;
 *                    the broker logs it as event=deadlock).  Release what
 *                    you hold and retry, or take leases in a fixed order.
 *                    Readers sharing a resource never form a cycle; waits
 *                    outside coord are not seen.
 *   COORD_ELIMIT     the broker's lease or waiter table is full.
 *   COORD_EFULL      the broker's state.mdb is full (one write grant in
 *                    4096 records a new token ceiling there): held leases are
 *                    kept; restart coordd with a larger --map-size.
 *   COORD_ENOSPC     the instance directory's filesystem is full: held
 *                    leases are kept, and grants resume once space is
 *                    freed.
 *   COORD_EIO        the broker connection broke, or was closed; reconnect.
 *   COORD_EFORKED    called in a child after fork() (see section 7).
 *   COORD_ENOMEM, COORD_EPROTO. */
COORD_API int coord_resource_acquire(coord_resource_t *r, int mode, int timeout_ms,
                                     const char *label, coord_lease_t **out);

/* A read under r's cached grant, if it has one that can serve now (see
 * "Cached reads" above): returns 1 with *out, as coord_resource_acquire()
 * would; 0 when it cannot (no grant cached, one read under it already,
 * recalled, or taken back), having sent nothing: then acquire as usual.
 * No message and no system call either way; for bindings that put costly
 * work around a blocking acquire (a signal handler, say) and skip it for
 * the common case.  COORD_EINVAL, COORD_ELIMIT, COORD_ENOMEM. */
COORD_API int coord_resource_read_cached(coord_resource_t *r, coord_lease_t **out);

/* The convenience form: coord_resource_open(), coord_resource_acquire()
 * and coord_resource_close() in one call.  Returns what they return. */
COORD_API int coord_acquire(coord_t *c, const char *resource, int mode, int timeout_ms,
                            const char *label, coord_lease_t **out);

/* Waiting without blocking: for event loops (asyncio), and for callers
 * that must react to a signal while they wait (Python's Ctrl+C).
 *
 * coord_acquire_start() sends the request and returns at once: 1 with
 * *lease when the grant is back already (nothing is pending), 0 with
 * *pending while the answer is to come (it may wait in the broker's
 * queue, or be on its way), or an error as
 * coord_resource_acquire() returns it.  timeout_ms is the request's own
 * limit, as there.  r must stay open until the request ends.
 *
 * While it is pending, the connection serves other calls (releases,
 * coord_list(), ...) from any thread, but a second acquire on it, blocking
 * or not, gets COORD_EBUSYCONN: one waiting request per connection (use a
 * connection per thread to wait for several resources at once).  A broker
 * restart meanwhile costs the request its place in the queue, not the
 * request: the library sends it again with what is left of its time.
 *
 * The request ends when coord_pending_wait() returns 1 (granted: *lease
 * set) or an error (COORD_ETIMEDOUT, COORD_EDEADLK, ... as
 * coord_resource_acquire()); later calls of coord_pending_wait() return
 * the same again.  Every handle is freed by exactly one
 * coord_pending_cancel(), ended or not, after which it must not be used:
 * so a caller that lost a return value (a signal handler that raised
 * right after the call) can always finish cleanly by cancelling. */
typedef struct coord_pending coord_pending_t;

COORD_API int coord_acquire_start(coord_resource_t *r, int mode, int timeout_ms,
                                  const char *label, coord_lease_t **lease,
                                  coord_pending_t **pending);

/* Waits up to wait_ms for the answer (0: only looks; -1: until it comes)
 * and returns 1 with *lease (granted), 0 (not yet: still pending; also
 * when a signal interrupted the wait, so the caller can act on it at
 * once), or a COORD_E* code (the request failed; nothing is held).  A
 * granted lease on a file also takes its kernel lock here: if an outside
 * holder keeps it (coord.h section 7), the request stays pending until the
 * lock comes or its timeout ends, and the descriptor below does not turn
 * readable for that, so keep waiting in slices (50 ms, say) rather than
 * only on the descriptor.  COORD_EFORKED in a child. */
COORD_API int coord_pending_wait(coord_pending_t *p, int wait_ms, coord_lease_t **lease);

/* Frees p.  A request still pending is given up first: the broker drops
 * it from its queue at once (it logs event=cancel), and a grant that
 * crossed the cancel on the way is released, so nothing is held
 * afterwards and the queue is as if the request had never been made.  A
 * request that ended granted keeps its lease: release it as usual.
 * Returns 0, or COORD_EINVAL, COORD_EFORKED (a child leaves its parent's
 * request alone). */
COORD_API int coord_pending_cancel(coord_pending_t *p);

/* A descriptor that turns readable when the broker may have answered:
 * then call coord_pending_wait(p, 0, ...).  It is the same for every
 * request of the connection and stays the same across reconnects; the
 * library's: do not read or close it (coord_disconnect() does).  Returns
 * it (>= 0), or COORD_EINVAL, COORD_EFORKED, COORD_EIO, COORD_ESYS. */
COORD_API int coord_pending_fd(coord_pending_t *p);

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
 * If the connection to the broker was lost (a broker restart), the
 * release reconnects, and the broker that adopted the lease gives it back;
 * if no broker can be reached now, it is given back at the next reconnect
 * or when the process exits.  Either way the handle is stale afterwards.
 *
 * Returns 0, or:
 *   COORD_ENOLEASE   the handle is stale, or the broker had already taken
 *                    the lease back (the holder was revoked).  Anything
 *                    written under it must be treated as unfenced.
 *   COORD_ELOST      the broker restarted and did not give the lease back
 *                    (its records were lost); the same holds.
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

/* 1 if the broker has recalled the lease: a request that conflicts with it
 * now waits behind it, so let go at your next safe point (a dashboard
 * holding a DuckDB file open between page views, say).  0 if not, and for
 * a stale handle.  Costs no system call: one load from the shared region,
 * like coord_lease_valid().  A recall is a request, not a revocation: the
 * lease stays valid until it is released, unless the resource has hold
 * limits (coord_set_limits()). */
COORD_API int coord_lease_recalled(const coord_lease_t *lease);

/* A descriptor for event loops (poll, select, epoll, asyncio's
 * add_reader) that turns readable when the broker recalls a lease of c.
 * Wait for it to be readable, call coord_recall_clear(), then look at
 * your leases with coord_lease_recalled() and release the recalled ones
 * at your next safe point.  Made at the first call (one request to the
 * broker); later calls return the same descriptor, which stays the same
 * for the connection's life, across broker restarts too (the library
 * renews what is behind it when it reconnects).  It is the library's: do
 * not read it or close it; coord_disconnect() closes it.  It may wake
 * with nothing recalled (a recall of a lease released meanwhile, a
 * reconnect): coord_recall_clear() tells.  A forked child closes its copy
 * and gets COORD_EFORKED.
 *
 * Returns the descriptor (>= 0), or COORD_EINVAL, COORD_EIO,
 * COORD_EFORKED, COORD_ELIMIT (the broker is out of descriptors),
 * COORD_ESYS, COORD_EPROTO. */
COORD_API int coord_recall_fd(coord_t *c);

/* Makes the descriptor of coord_recall_fd() quiet again, without
 * blocking, and returns how many leases of c are recalled now (0 or
 * more), or COORD_EINVAL, COORD_EFORKED.  Safe to call from any thread,
 * also while another thread waits in coord_acquire().  When the broker
 * went away (the descriptor woke for that), it reconnects first, as any
 * call does (up to the connect timeout; coord.h section 7), unless
 * another thread's call on c is under way and reconnects instead; a
 * failed reconnect returns its error (COORD_ENOBROKER, COORD_EIO, ...) and
 * the descriptor stays quiet until a later call reconnects. */
COORD_API int coord_recall_clear(coord_t *c);

/* The descriptor of the kernel lock behind the lease, or -1 if there is
 * none (see "Kernel locks" in section 7): a file that did not exist when
 * the lease was granted, a network filesystem, or a stale handle.
 * It is the library's: do not close it, and do not flock() it yourself.
 * It is close-on-exec; a program that hands the lease to a command it
 * runs (as `coordctl run` does) clears that flag in the child, so the
 * command and everything it starts keep the file locked. */
COORD_API int coord_lease_fd(const coord_lease_t *lease);

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
	int64_t recalled_ms;     /* holders: ms since the broker recalled the
	                            lease (someone conflicting waits); -1 if it
	                            was not recalled, and for waiters */
	char resource[COORD_NAME_MAX + 1];
	char command[COORD_COMMAND_NAME_MAX + 1]; /* the process's comm */
	char label[COORD_LABEL_MAX + 1];          /* "checkpoint" for a queued
	                                             coord_checkpoint() */
	int adopted;             /* holders: 1 if a restarted broker took the
	                            lease over from the one that granted it */
	int cached;              /* holders: 0 a lease its program holds;
	                            COORD_CACHED_IDLE a cached read grant (the
	                            program released the read, its library kept
	                            it: coord_resource_acquire()) nobody reads
	                            under now; COORD_CACHED_IN_USE one a read is
	                            under right now */
	int kernel_wait;         /* holders: COORD_KERNEL_WAITING if its library
	                            said it waits for the file's kernel lock,
	                            which a process outside the broker's view
	                            holds (its acquire has not returned);
	                            COORD_KERNEL_NOT_WAITING if it does not; 0
	                            not known (a library older than this one, a
	                            lease adopted after a restart), and for
	                            waiters */
} coord_lease_info_t;

enum { COORD_CACHED_IDLE = 1, COORD_CACHED_IN_USE = 2 };
enum { COORD_KERNEL_NOT_WAITING = 1, COORD_KERNEL_WAITING = 2 };

/* A resource's hold limits (coord_set_limits()); 0 turns one off.  Both
 * at most COORD_LIMIT_MAX_SECONDS (30 days). */
#define COORD_LIMIT_MAX_SECONDS (30 * 24 * 3600)
typedef struct coord_limits {
	uint32_t max_hold_ms;    /* a lease held this long is revoked, whether
	                            anyone waits or not: for hung holders */
	uint32_t recall_grace_ms; /* a lease still held this long after its
	                            recall (someone conflicting waits) is
	                            revoked: for idle holders that do not let
	                            go; also the wait of each revoke step that
	                            a limit starts (0: 5000 ms) */
} coord_limits_t;

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
	coord_limits_t limits;   /* its hold limits */
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

/* coord_list() without the array: calls fn(lease, ud) for each holder and
 * waiter, in coord_list()'s order, as the broker's answer arrives, so
 * memory stays at one entry however many leases there are (a listing of
 * 10,000 leases takes 7 MB as an array).  *lease is good during the call
 * only.  fn returns 0 to go on; any other value stops the calls (the rest
 * of the answer is read and dropped) and is what coord_list_each()
 * returns, so a fn that returns a COORD_E* code (COORD_ENOMEM, say) has it
 * returned like the library's own.  fn runs with c in use: it must not
 * call coord_* on c.
 *
 * Returns 0, fn's value, or COORD_EINVAL, COORD_EIO, COORD_EFORKED,
 * COORD_EPROTO, or what the broker refused the listing with:
 * COORD_ENOMEM, COORD_ELIMIT (listings being sent hold too much of its
 * memory), COORD_EBUSYCONN (a listing on c is being sent). */
typedef int coord_lease_fn(const coord_lease_info_t *lease, void *ud);
COORD_API int coord_list_each(coord_t *c, coord_lease_fn *fn, void *ud);

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
 *   COORD_EDEADLK      this connection holds the resource, or the
 *                      checkpoint's wait would close a wait-for cycle.
 *   COORD_EBUSYCONN, COORD_ENAME, COORD_EINVAL, COORD_EIO, COORD_EFORKED,
 *   COORD_EPROTO. */
COORD_API int coord_checkpoint(coord_t *c, const char *resource, coord_resource_info_t *info);

/* Sets the checkpoint policy of a resource, durably (it survives broker
 * restarts and reboots).  Returns 0, or COORD_EINVAL (a value out of range,
 * an exec policy without a command or a command without exec, a time limit
 * over 24 h), COORD_ENAME, COORD_EIO, COORD_EFORKED, COORD_EPROTO, or what
 * the broker's store failed with. */
COORD_API int coord_set_policy(coord_t *c, const char *resource, const coord_policy_t *policy);

/* Sets the hold limits of a resource, durably (they survive broker
 * restarts and reboots), and applies them at once to its holders: a lease
 * held max_hold_ms since its grant, or recall_grace_ms since its recall,
 * is revoked as coord_revoke() would (recall, wait, SIGTERM, wait,
 * SIGKILL; each wait recall_grace_ms, or 5000 ms), taken back only once
 * its holder released it or exited, so a limit can never make two
 * writers.  Each step is logged (event=revoke reason=max-hold or
 * reason=recall-grace).  A holder the broker may not signal (another
 * user, and the broker is not root) keeps its lease, and the log says so.
 * Because limits signal processes, only root, the broker's own user and
 * its admin group may set them.
 *
 * Returns 0, or COORD_EPERM (not allowed), COORD_EINVAL (over 30 days),
 * COORD_ENAME, COORD_EIO, COORD_EFORKED, COORD_EPROTO, COORD_ENOMEM, or
 * what the broker's store failed with. */
COORD_API int coord_set_limits(coord_t *c, const char *resource, const coord_limits_t *limits);

/* What coord_revoke() takes back: set exactly one of lease_id, pid and
 * resource. */
typedef struct coord_revoke {
	uint64_t lease_id;       /* one lease, as coordctl list shows it */
	long pid;                /* every lease held by this process */
	const char *resource;    /* every holder of this resource (a name as
	                            coord_acquire() takes it) */
	int grace_ms;            /* how long each step waits for the holder to
	                            let go; 0: 5000 ms */
} coord_revoke_t;

/* Revokes leases, by escalation: the broker recalls each selected lease
 * (coord_lease_recalled()), waits grace_ms for its release, sends the
 * holder SIGTERM, waits grace_ms again, then sends SIGKILL.  A lease is
 * taken back only by its release or by the holder's exit, never from a
 * living process, so a revoke cannot make two writers.  Only the holders'
 * own user, root, or a member of the broker's admin group (coordd
 * --admin-group) may revoke.  Returns once every selected lease is
 * gone (up to about 2 * grace_ms), or:
 *   COORD_ENOLEASE  nothing matches.
 *   COORD_EPERM     the caller may not revoke a selected lease, or the
 *                   broker may not signal its holder (another user, and
 *                   the broker is neither root nor has CAP_KILL): the
 *                   lease is still held.
 *   COORD_ELIMIT    more than 1024 leases selected.
 *   COORD_EINVAL, COORD_ENAME, COORD_EIO, COORD_EFORKED, COORD_EPROTO. */
COORD_API int coord_revoke(coord_t *c, const coord_revoke_t *what);

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

/* ---- metrics and the event feed ---- */

/* The broker's metrics in the Prometheus text format (version 0.0.4), as
 * `coordctl metrics` prints them and `coordd --metrics-listen` serves
 * them: leases and waiters per mode, counters of grants, releases,
 * reclaims, recalls and timeouts, wait and checkpoint histograms, the
 * longest current wait and hold, WAL bytes of the database files the
 * broker knows, and the broker's uptime, clients and memory.  Resource
 * names in label values are escaped by the text format's rules, after
 * this mapping that keeps them apart and valid UTF-8: a backslash is
 * "\\", a byte that is not part of valid UTF-8 or is a control
 * character is "\xHH".  On success *text is a NUL-terminated string for
 * coord_free().
 *
 * Returns 0, or COORD_EINVAL, COORD_EIO, COORD_EFORKED, COORD_EPROTO,
 * COORD_ENOMEM, COORD_ESYS (the broker could not make the text). */
COORD_API int coord_metrics(coord_t *c, char **text);

/* What happened in the broker, one record per event, as the event feed
 * (coord_feed_next()) reports it. */
enum {
	COORD_EVENT_START = 1,   /* a broker started (pid, epoch) */
	COORD_EVENT_STOP,        /* the broker stops cleanly */
	COORD_EVENT_GRANT,       /* lease granted (waited: duration_us) */
	COORD_EVENT_WAIT,        /* request queued behind a conflicting lease */
	COORD_EVENT_RECALL,      /* holder asked to let go (held: duration_us) */
	COORD_EVENT_RELEASE,     /* released by its holder */
	COORD_EVENT_RECLAIM,     /* taken back: reason exit, hangup, revoke, ... */
	COORD_EVENT_TIMEOUT,     /* a waiter's timeout passed (code) */
	COORD_EVENT_CANCEL,      /* a waiter gave up or went (reason) */
	COORD_EVENT_CHECKPOINT_START, /* a checkpoint began (kind, pid: its child) */
	COORD_EVENT_CHECKPOINT,  /* a checkpoint ended: code, duration, WAL */
	COORD_EVENT_LOST,        /* not the broker's: this reader missed
	                            `lost` events (lapped, or a new file); call
	                            coord_list() to see where things stand */
};
/* coord_event_t.flags */
enum { COORD_EVENT_F_WAITED = 1 /* GRANT: to a request that had been queued */ };

typedef struct coord_event {
	uint64_t seq;            /* the feed's record number; rises by one per
	                            event, across broker restarts too */
	int type;                /* COORD_EVENT_* */
	int mode;                /* COORD_READ, COORD_WRITE, or 0 */
	int64_t wall_ms;         /* when, ms since the epoch */
	uint64_t epoch;          /* of the broker that wrote it */
	uint64_t lease_id, token;
	uint64_t pid, uid;       /* the holder or waiter (CHECKPOINT_START:
	                            the checkpoint child; START: the broker) */
	int64_t duration_us;     /* GRANT: waited; RECALL, RELEASE, RECLAIM:
	                            held; TIMEOUT, CANCEL: waited; CHECKPOINT:
	                            ran */
	int code;                /* TIMEOUT, CHECKPOINT: 0 or a COORD_E* code */
	int kind;                /* checkpoints: COORD_KIND_* */
	int64_t wal_before, wal_after; /* CHECKPOINT: WAL bytes, -1 unknown */
	unsigned flags;          /* COORD_EVENT_F_* */
	uint64_t lost;           /* LOST: how many (0: unknown) */
	char resource[COORD_NAME_MAX + 1];
	char command[COORD_COMMAND_NAME_MAX + 1]; /* the process's comm */
	char label[COORD_LABEL_MAX + 1];
	char reason[32];         /* RECLAIM, CANCEL: why */
} coord_event_t;

/* A reader of the broker's event feed. */
typedef struct coord_feed coord_feed_t;

/* Opens the event feed of c's instance directory (the file coordd.events,
 * mapped read-only: a reader can never slow the broker down, and a reader
 * that falls more than 4096 events behind is told so with
 * COORD_EVENT_LOST) and asks c's broker to wake this process when events
 * come.  The feed starts at the next event: call coord_list() after this
 * call for where things stand.  It outlives broker restarts (c reconnects
 * and asks again when a new broker's START comes).  One thread at a time
 * may use a feed; c must outlive it.
 *
 * Returns 0 with *out set, or COORD_ENOENT (no broker ever ran there, or
 * an older one), COORD_EPERM, COORD_EPROTO (not a feed this library
 * reads), COORD_ENOMEM, COORD_ESYS, or what the request to the broker
 * failed with: COORD_ELIMIT (256 connections watch already),
 * COORD_ENOTSUP (the broker could not open its feed, and says why in its
 * log), COORD_EIO, COORD_EFORKED. */
COORD_API int coord_feed_open(coord_t *c, coord_feed_t **out);

/* Waits up to timeout_ms (< 0: forever) for the next event into *ev.
 * Returns 1 with *ev filled, 0 when the time passed without one, or
 * COORD_EINVAL, COORD_ESYS.  Sleeps on a futex in the mapping (woken by
 * the broker) and looks once a second whether the file was replaced. */
COORD_API int coord_feed_next(coord_feed_t *f, coord_event_t *ev, int timeout_ms);

/* Lower-case name of an event type ("grant", "checkpoint-start", ...), or
 * "?".  Never NULL. */
COORD_API const char *coord_event_name(int type);

/* Unmaps and frees the feed.  NULL is a no-op. */
COORD_API void coord_feed_close(coord_feed_t *f);

/* ------------------------------------------------------------------------ */
/* 6. Names                                                                 */
/* ------------------------------------------------------------------------ */

/* Canonicalises a resource name into `buf` (size `size`).  One file is one
 * resource, whoever names it and whenever: the rule depends only on how the
 * name is written, never on whether the file exists yet.
 *
 * Keys.  A name written "key:NAME" is a key (lower-case "key:", NAME not
 * empty and without '/'); its canonical form is "key:NAME" itself.  A key
 * is an opaque name, nothing on disk (its kernel lock is a file of the
 * instance directory, see section 7).
 *
 * Paths.  Every other name is a path, relative to the current directory
 * or absolute: "app.db" is the file app.db in the cwd even before it
 * exists.  (A file whose name starts with "key:" is reached as
 * "./key:...".)  Its canonical form is absolute, with ".", ".." and every
 * symlink resolved:
 *   - a file that exists: its realpath();
 *   - a file that does not exist yet: the realpath() of its directory,
 *     which must exist, and the last component.  When that component is a
 *     dangling symlink (or a chain of them) it is followed, a relative
 *     target from the link's directory, so a symlink made before its
 *     target names the target;
 *   - a file reached through a bind mount (or a filesystem mounted twice)
 *     is named through one mount of its filesystem, the same for every
 *     spelling: the mount of the whole filesystem (root "/") when this
 *     process sees one, else the one with the shortest root, then the
 *     shortest mount point (then byte order), among those that reach the
 *     same inode.  The mount table is /proc/self/mountinfo,
 *     read on every call (nothing is cached); where it cannot be read the
 *     path is kept as resolved.
 * Paths therefore always start with '/', and keys never contain it.
 *
 * Processes in different mount namespaces (containers) that see one file
 * at different places may still give it different names; on an existing
 * file the kernel lock (section 7) keeps them apart all the same.
 *
 * Returns the length of the canonical name, or:
 *   COORD_ENAME   empty, or longer than COORD_NAME_MAX (the name or its
 *                 canonical form); "key:" alone or a key with '/'; a path
 *                 whose directory does not exist or is not a directory,
 *                 whose last component is empty, "." or ".." while the
 *                 file does not exist, or that goes through more than 40
 *                 symlinks (a loop).
 *   COORD_EINVAL  NULL argument or buffer too small. */
COORD_API int coord_canonicalize(const char *name, char *buf, size_t size);

/* Writes the instance directory that coord_connect() with opts.dir == dir
 * would use, and that coordd --dir would serve: `dir` if it is not NULL or
 * empty, else $COORD_DIR if set and not empty, else coord_default_dir().
 * Returns its length, or COORD_EINVAL if `size` is too small or no home
 * directory is known. */
COORD_API int coord_instance_dir(const char *dir, char *buf, size_t size);

/* Writes the instance directory used when neither opts.dir nor $COORD_DIR
 * is set: /var/lib/coord if it is a shared instance (setgid and group
 * rwx, as `coordctl setup-shared` makes it), for every user, so that
 * nobody silently gets a private instance beside the system's; else
 * $XDG_STATE_HOME/coord, else $HOME/.local/state/coord, or /var/lib/coord
 * for root.  Costs one stat().  The directory is persistent on purpose: it
 * keeps fencing tokens and per-resource policies across reboots.
 * Returns its length, or COORD_EINVAL if `size` is too small or no home
 * directory is known. */
COORD_API int coord_default_dir(char *buf, size_t size);

/* Writes the instance directory that coordinates `path`, as named by the
 * file `.coord-instance` in its directory (path itself if it is a
 * directory), which `coordctl share` writes; trailing white space is
 * dropped.  coord_resource_open() refuses a file whose marker names
 * another instance than the connection's (COORD_EINSTANCE): connect with
 * this directory instead.  Costs one open(), which fails when there is no
 * marker.
 *
 * Returns the length (0: an empty marker, which names no instance), or:
 *   COORD_ENOENT  no marker: any instance may coordinate the file.
 *   COORD_EPERM   the marker exists but cannot be read.
 *   COORD_EINVAL  NULL argument, size < 2, or the path is too long. */
COORD_API int coord_file_instance(const char *path, char *buf, size_t size);

/* ------------------------------------------------------------------------ */
/* 7. Threads, fork(), restarts, kernel locks, sharing, broker notices     */
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
 * COORD_EFORKED, and coord_lease_valid() returns 0 there; the child's copy
 * of the socket is closed in the child so it cannot keep the parent's
 * leases alive.  Connect again in the child.  The socket is close-on-exec.
 * (The kernel locks below are another matter: see there.)
 *
 * Broker restarts.  A broker that is killed, crashes or is stopped for an
 * upgrade keeps every lease: nobody can be granted anything until a new
 * broker starts, and the new one adopts the leases of every holder still
 * alive, so they stay valid and exclusive, with the same tokens; those of
 * dead holders are reclaimed.  The library notices the lost connection on
 * the connection's next call and reconnects by itself (starting a broker
 * if autostart is allowed, else waiting up to connect_timeout_ms for one),
 * takes its leases back with a secret only this process knows, and then
 * carries on with the call: an acquire that was waiting is queued again
 * with what is left of its timeout.  Your code sees no error unless a
 * lease really was lost (the broker's lease records were lost): then
 * coord_lease_valid() turns 0 and coord_release() returns COORD_ELOST.
 * A connection that is never used again keeps its leases until its
 * process releases them or exits.  Fencing tokens keep rising.  The
 * kernel locks below outlive the broker, so even a lost lease keeps
 * conflicting holders out of its file until it is released.
 *
 * Kernel locks.  Every lease on an existing regular file (and every lease
 * on a key, see below) is also held as flock(2) on the file itself,
 * shared for a read lease and exclusive for a
 * write lease, taken after the broker grants and dropped before the broker
 * hears of the release.  Normally it never waits, since the broker has
 * already ordered the holders.  It waits, within the acquire's timeout,
 * only for a holder the broker cannot see: one whose lease a restarted
 * broker lost, one of another instance, or a child process that outlived its
 * parent with a copy of the descriptor (like flock(1), a fork()ed child
 * that does not exec keeps the file locked until the parent releases or
 * the child exits).  So a broker restart can never let a second writer
 * into a file while the first one still holds it.
 *   - The library never closes a descriptor of a file it locked (one per
 *     connection and file while the connection lives; after
 *     coord_disconnect() it is unlocked and kept for the next connection
 *     on that file), because closing any descriptor of a file drops every
 *     POSIX lock the process holds on it, SQLite's and DuckDB's included.
 *     So connections may come and go (one per thread, say) while the
 *     process keeps its databases open.  A forked child closes its copies
 *     of the kept ones.
 *   - A key's kernel lock is a file of its own under the instance
 *     directory, DIR/keys/k-NAME for the key "key:NAME" (named without the
 *     prefix, so no ':' reaches a file name; created on first use, never
 *     removed), so keys are kept as safe as files, for every process that
 *     uses the same instance directory.  Files that do not exist yet when
 *     the lease is granted have no kernel lock: only the broker orders
 *     them, which is safe because a path names the same resource before
 *     and after the file is created (coord_canonicalize()).
 *   - On NFS and SMB, where flock(2) is emulated with POSIX locks that
 *     would interfere with the database's own, no kernel lock is taken.
 *   - flock(2) and the POSIX locks of SQLite and DuckDB never interact on
 *     Linux's local filesystems.
 *
 * Recall.  When a request that conflicts with a held lease is queued
 * behind it, the broker recalls the lease: coord_lease_recalled() turns 1
 * at once (a flag in the shared region; no message, no system call).
 * Check it at your safe points (a dashboard: at the start of each page
 * view), or wait on coord_recall_fd() in an event loop.  A recalled lease
 * that is not released stays valid, unless the resource has hold limits
 * (coord_set_limits()): then the broker revokes it after its grace.
 *
 * Shared instances.  A broker started with --group (or in a directory that
 * is setgid and group-writable, such as /var/lib/coord made by `coordctl
 * setup-shared`) serves root, its own user and the group's members; others
 * get COORD_EPERM from coord_connect().  /var/lib/coord, once shared, is
 * every user's default instance (coord_default_dir()).  A file whose
 * directory has a .coord-instance marker is refused to connections of
 * other instances (COORD_EINSTANCE, see coord_resource_open()).  Clients
 * in other PID namespaces that share the instance directory are served and
 * reclaimed like any other.
 *
 * Broker notices.  The broker may send a connection messages nobody asked
 * for (the wire protocol's seq 0).  The library reads them whenever it
 * reads the socket and keeps what it knows about; none is defined yet.
 */

#endif /* COORD_H */
