/* coord_proto.h - what the broker, the client library and the tools share
 *
 * Built with coord, never installed: applications see only coord.h.  The
 * installed coord.h carries a copy of this file inside its implementation
 * section (the build pastes it there), so the single-header form still
 * works for people who copy coord.h alone.
 *
 * It holds, like seatd's include/protocol.h:
 *   1. the instance directory: its file names and the one resolver of it;
 *   2. the wire protocol: message types and structs;
 *   3. the shared region's layout;
 *   4. small pure helpers both sides need: error names, value names and
 *      the resource-kind detector.
 * Everything here is either a type, a constant or a `static inline`
 * function without state, so each program that includes it gets the same
 * code and no symbols. */
/* Outside the guard on purpose: when a file that defines
 * COORD_IMPLEMENTATION includes this header first, coord.h's
 * implementation includes it again and must find the whole of it. */
#include "coord.h"

#ifndef COORD_PROTO_H
#define COORD_PROTO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* 1. The instance directory                                                */
/* ------------------------------------------------------------------------ */

#define COORD_SOCKET_NAME "coordd.sock"  /* SOCK_SEQPACKET listening socket */
#define COORD_SHM_NAME "coordd.shm"      /* the shared region */
#define COORD_LOCK_NAME "coordd.lock"    /* flock(LOCK_EX) of the live broker */
#define COORD_LOG_NAME "coordd.log"      /* the event log in daemon mode */
#define COORD_STATE_NAME "state.mdb"     /* durable LMDB: tokens, policies */
#define COORD_LEASES_NAME "leases.mdb"   /* boot-scoped LMDB: held leases */

#define COORD_SYSTEM_DIR "/var/lib/coord" /* root's default; the shared system instance */
#define COORD_MARKER_NAME ".coord-instance" /* beside a database: the instance that
                                               coordinates the files of its directory */

/* 1 if a directory with this mode is a shared (group) instance: setgid and
 * group rwx, as `coordd --group` and `coordctl setup-shared` make it
 * (02770).  A broker started there without --group serves the directory's
 * group, and every user's default instance is COORD_SYSTEM_DIR when it is
 * one.  The mode is what marks it, because anyone can stat the
 * directory, members or not. */
static inline int coord_proto_dir_is_shared(unsigned long mode)
{
	return S_ISDIR(mode) && (mode & (S_ISGID | S_IRWXG)) == (S_ISGID | S_IRWXG);
}

/* The directory used when nothing names one: /var/lib/coord when it is a
 * shared instance, for every user (so that no one gets a private instance
 * beside the system's), and for root without $XDG_STATE_HOME; else
 * $XDG_STATE_HOME/coord, else $HOME/.local/state/coord.  Costs one stat().
 * Returns its length or COORD_EINVAL (no home, or size too small). */
static inline int coord_proto_default_dir(char *buf, size_t size)
{
	const char *state = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	struct stat st;
	int n;
	if (!buf)
		return COORD_EINVAL;
	if ((geteuid() == 0 && (!state || !*state)) ||
	    (stat(COORD_SYSTEM_DIR, &st) == 0 && coord_proto_dir_is_shared(st.st_mode)))
		n = snprintf(buf, size, "%s", COORD_SYSTEM_DIR);
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

/* The one resolver of the instance directory, used by coordd, the library
 * and coordctl alike: `dir` if it is non-empty (a --dir option or
 * coord_options_t.dir), else $COORD_DIR if non-empty, else the default
 * above.  This is the only place that reads $COORD_DIR.  Returns the
 * length, or COORD_EINVAL (too long for buf, or no default known). */
static inline int coord_proto_resolve_dir(const char *dir, char *buf, size_t size)
{
	int n;
	if (!dir || !*dir)
		dir = getenv("COORD_DIR");
	if (!dir || !*dir)
		return coord_proto_default_dir(buf, size);
	n = snprintf(buf, size, "%s", dir);
	return n < 0 || (size_t)n >= size ? COORD_EINVAL : n;
}

/* ------------------------------------------------------------------------ */
/* 2. Wire protocol                                                         */
/* ------------------------------------------------------------------------ */

/* Messages travel over a SOCK_SEQPACKET Unix socket, one message per
 * packet, in host byte order (both ends are on one machine).  Every message
 * starts with coord_msg_hdr.  A client numbers its requests from 1; every
 * reply carries its request's `seq`.  The broker may also send a message
 * nobody asked for, a notice, with seq 0: a client must accept one at any
 * time and ignore notice kinds it does not know.  Variable parts (names,
 * labels) follow the fixed part; their lengths are in the fixed part and
 * never include a NUL.  The broker checks every length and value; see
 * docs/design.md. */

#define COORD_PROTO_VERSION 7
/* The oldest HELLO version the broker still serves: programs built with
 * an older coord.h keep working across a broker upgrade.  What each
 * version added is marked "(protocol N)" below. */
#define COORD_PROTO_VERSION_MIN 6
#define COORD_MSG_MAX 8192
#define COORD_SEQ_NOTICE 0u

enum coord_msg_type {
	/* client -> broker */
	COORD_MSG_HELLO = 1,    /* coord_msg_hello */
	COORD_MSG_ACQUIRE,      /* coord_msg_acquire + name + label */
	COORD_MSG_RELEASE,      /* coord_msg_release */
	COORD_MSG_STATUS,       /* coord_msg_hdr */
	COORD_MSG_LIST,         /* coord_msg_hdr */
	COORD_MSG_SHOW,         /* coord_msg_resource + name */
	COORD_MSG_POLICY,       /* coord_msg_policy + name + command */
	COORD_MSG_CHECKPOINT,   /* coord_msg_resource + name */
	COORD_MSG_REVOKE,       /* coord_msg_revoke + name */
	COORD_MSG_ATTACH,       /* coord_msg_attach */
	COORD_MSG_LIMITS,       /* coord_msg_limits + name */
	COORD_MSG_CANCEL,       /* coord_msg_cancel: no answer of its own */
	COORD_MSG_NOTIFY,       /* coord_msg_hdr: answered with REPLY{0} and,
	                           in SCM_RIGHTS, the read end of a pipe the
	                           broker writes a byte to at every recall of
	                           this connection's leases */
	COORD_MSG_CACHE,        /* coord_msg_hdr (protocol 6): answered with
	                           REPLY{0} and, in SCM_RIGHTS, this
	                           connection's cache page (a sealed memfd of
	                           COORD_CACHE_PAGE_SIZE bytes, section 3) */
	COORD_MSG_METRICS = 15, /* coord_msg_metrics: flags 0, the metrics text
	                           (REPLY{0} carrying, in SCM_RIGHTS, a sealed
	                           memfd that holds it); COORD_METRICS_WATCH,
	                           REPLY{0}: wake this connection's process
	                           at new events of the event feed */
	COORD_MSG_KERNEL_WAIT,  /* coord_msg_kernel_wait (protocol 7): no
	                           answer */
	/* broker -> client */
	COORD_MSG_REPLY = 64,   /* coord_msg_reply: status only */
	COORD_MSG_WELCOME,      /* coord_msg_welcome */
	COORD_MSG_GRANT,        /* coord_msg_grant */
	COORD_MSG_STATUS_REPLY, /* coord_msg_status_reply + dir */
	COORD_MSG_LEASE_INFO,   /* coord_msg_lease_info + name + comm + label */
	COORD_MSG_RESOURCE_INFO,/* coord_msg_resource_info + name + policy cmd + message */
	COORD_MSG_END,          /* coord_msg_reply: end of a listing */
	COORD_MSG_NOTICE,       /* coord_msg_notice, seq 0: unsolicited */
	COORD_MSG_LEASE_INFOS,  /* coord_msg_lease_infos (protocol 7): several
	                           LEASE_INFO in one packet */
};

typedef struct coord_msg_hdr {
	uint32_t type;
	uint32_t seq;
} coord_msg_hdr;

typedef struct coord_msg_hello {
	coord_msg_hdr h;
	uint32_t version;
	uint32_t flags;
} coord_msg_hello;

typedef struct coord_msg_welcome {
	coord_msg_hdr h;
	int32_t status;
	uint32_t version;
	uint64_t client_id;
	uint64_t broker_pid;
} coord_msg_welcome;

typedef struct coord_msg_acquire {
	coord_msg_hdr h;
	uint32_t mode;
	int32_t timeout_ms;
	uint16_t name_len;
	uint16_t label_len;
	uint32_t reserved;
	/* char name[name_len]; char label[label_len]; */
} coord_msg_acquire;

typedef struct coord_msg_grant {
	coord_msg_hdr h;
	int32_t status;
	uint32_t mode;
	uint64_t lease_id;
	uint64_t token;
	uint64_t slot;          /* index into the shared region's slot array */
	uint64_t secret;        /* shown in ATTACH to take the lease back after
	                           a broker restart */
} coord_msg_grant;

/* After a broker restart, a reconnected client takes back each lease it
 * holds: the lease's id and secret, and the client_id of the connection
 * it was granted to (or last attached to).  Answered with GRANT (the
 * lease's slot, token and secret) or REPLY{COORD_ENOLEASE}.  Only the
 * process that held the lease can attach it.  Then lease_id 0 ("done")
 * gives back every lease of that old connection not attached, answered
 * with REPLY{0}. */
typedef struct coord_msg_attach {
	coord_msg_hdr h;
	uint64_t client_id;
	uint64_t lease_id;
	uint64_t secret;
} coord_msg_attach;

/* COORD_RELEASE_CACHE (protocol 6): the holder keeps the read lease as
 * a cached grant in entry `entry` of its cache page; with it, in
 * SCM_RIGHTS, may come the descriptor of the lease's kernel lock, which
 * the broker unlocks when it takes the grant back (docs/design.md,
 * "Cached read leases").  Refused quietly (a plain release) when the
 * lease, the entry or the descriptor do not qualify. */
enum { COORD_RELEASE_NO_REPLY = 1, COORD_RELEASE_CACHE = 2 };

typedef struct coord_msg_release {
	coord_msg_hdr h;
	uint64_t lease_id;
	uint32_t flags;         /* COORD_RELEASE_* */
	uint32_t entry;         /* COORD_RELEASE_CACHE: the cache page entry */
} coord_msg_release;

typedef struct coord_msg_reply {
	coord_msg_hdr h;
	int32_t status;
	uint32_t reserved;
} coord_msg_reply;

typedef struct coord_msg_status_reply {
	coord_msg_hdr h;
	int32_t status;
	uint32_t version;
	uint64_t broker_pid;
	uint64_t uptime_ms;
	uint64_t clients;
	uint64_t leases;
	uint64_t waiters;
	uint64_t resources;
	uint16_t dir_len;
	uint16_t reserved[3];
	/* char dir[dir_len]; */
} coord_msg_status_reply;

enum { COORD_INFO_HOLDER = 1, COORD_INFO_WAITER = 2 };
/* lease_info.flags: a restarted broker adopted it; a cached read grant
 * (COORD_INFO_CACHED), in use at the listing (COORD_INFO_IN_USE); its
 * library said it waits for the kernel lock (COORD_INFO_KERNEL_WAIT,
 * protocol 7); its library says so whenever it does, so no
 * COORD_INFO_KERNEL_WAIT means it does not wait (COORD_INFO_KERNEL_TOLD:
 * a protocol 7 connection, and not adopted, since a wait told to an
 * earlier broker is not known) */
enum {
	COORD_INFO_ADOPTED = 1,
	COORD_INFO_CACHED = 2,
	COORD_INFO_IN_USE = 4,
	COORD_INFO_KERNEL_WAIT = 8,
	COORD_INFO_KERNEL_TOLD = 16,
};

#define COORD_COMM_MAX 15       /* a process's comm, as in /proc/PID/stat */

typedef struct coord_msg_lease_info {
	coord_msg_hdr h;
	uint32_t kind;          /* COORD_INFO_HOLDER or COORD_INFO_WAITER */
	uint32_t mode;
	uint64_t lease_id;      /* 0 for waiters */
	uint64_t token;
	uint64_t pid;
	uint64_t uid;
	uint64_t age_ms;        /* held for, or waited for */
	int64_t recalled_ms;    /* holders: ms since the recall, -1 if none */
	uint16_t name_len;
	uint16_t comm_len;      /* at most COORD_COMM_MAX */
	uint16_t label_len;
	uint16_t flags;         /* COORD_INFO_ADOPTED, _CACHED, _IN_USE */
	/* char name[]; char comm[]; char label[]; */
} coord_msg_lease_info;

/* A listing's holders and waiters, packed (protocol 7): `count` records
 * follow, each a uint16_t length and a whole LEASE_INFO message of that
 * many bytes (its own header included), unaligned and back to back; the
 * packet is at most COORD_MSG_MAX bytes.  A record too long to share a
 * packet still comes as a LEASE_INFO of its own.  It saves a listing one
 * system call per lease on each side. */
typedef struct coord_msg_lease_infos {
	coord_msg_hdr h;
	uint32_t count;
	uint32_t reserved;
	/* { uint16_t len; char lease_info[len]; } [count] */
} coord_msg_lease_infos;

typedef struct coord_msg_resource {
	coord_msg_hdr h;
	uint16_t name_len;
	uint16_t reserved[3];
	/* char name[name_len]; */
} coord_msg_resource;

/* Exactly one of lease_id, pid and name (name_len > 0) selects what to
 * revoke.  Answered with REPLY once every selected lease is gone. */
typedef struct coord_msg_revoke {
	coord_msg_hdr h;
	uint64_t lease_id;
	uint64_t pid;
	uint32_t grace_ms;       /* per escalation step; 0: the default */
	uint16_t name_len;
	uint16_t reserved;
	/* char name[name_len]; */
} coord_msg_revoke;

typedef struct coord_msg_policy {
	coord_msg_hdr h;
	uint32_t policy;         /* COORD_POLICY_* */
	uint32_t sqlite_mode;    /* COORD_SQLITE_* */
	uint32_t timeout_ms;     /* 0: default */
	uint16_t name_len;
	uint16_t command_len;
	/* char name[name_len]; char command[command_len]; */
} coord_msg_policy;

/* Gives up the waiting ACQUIRE numbered acquire_seq: the broker drops it
 * from the queue and answers that ACQUIRE with REPLY{COORD_ECANCELED}.  If
 * its answer already went out (a GRANT, a timeout), nothing happens: the
 * client reads that answer instead. */
typedef struct coord_msg_cancel {
	coord_msg_hdr h;
	uint32_t acquire_seq;
	uint32_t reserved;
} coord_msg_cancel;

/* KERNEL_WAIT: the library holding lease_id waits for the lease's kernel
 * lock (waiting 1: flock() found the file held by a process outside the
 * broker's view, and it polls) or has it now (waiting 0, sent only after
 * a 1).  Nothing is sent while the lock comes at the first try, the
 * usual case.  It lets the broker show such a holder without anyone
 * reading /proc/locks (LEASE_INFO flags COORD_INFO_KERNEL_WAIT and
 * COORD_INFO_KERNEL_TOLD).  An unknown lease_id is ignored: it may have
 * just been revoked. */
typedef struct coord_msg_kernel_wait {
	coord_msg_hdr h;
	uint64_t lease_id;
	uint32_t waiting;       /* 0 or 1 */
	uint32_t reserved;      /* 0 */
} coord_msg_kernel_wait;

/* A resource's hold limits, 0: none (coord_set_limits()). */
typedef struct coord_msg_limits {
	coord_msg_hdr h;
	uint32_t max_hold_ms;
	uint32_t recall_grace_ms;
	uint16_t name_len;
	uint16_t reserved[3];
	/* char name[name_len]; */
} coord_msg_limits;

/* The longest hold limit the broker takes (coord.h's
 * COORD_LIMIT_MAX_SECONDS, 30 days). */
#define COORD_LIMIT_MAX_MS ((uint32_t)COORD_LIMIT_MAX_SECONDS * 1000u)

typedef struct coord_msg_resource_info {
	coord_msg_hdr h;
	int32_t status;
	uint32_t kind;           /* detected or forced kind */
	uint32_t policy;
	uint32_t sqlite_mode;
	uint32_t timeout_ms;
	uint32_t checkpoint_state; /* 0 idle, 1 running */
	uint64_t token;
	uint64_t holders;
	uint64_t waiters;
	uint64_t checkpoints;    /* how many have run */
	uint64_t last_at_ms;     /* wall clock (ms since epoch) of the last one, 0 if none */
	uint64_t last_duration_us;
	int32_t last_result;     /* 0 or a COORD_E* code */
	uint32_t duckdb_available;
	int64_t wal_before;      /* bytes, -1 unknown */
	int64_t wal_after;
	uint32_t max_hold_ms;    /* hold limits, 0: none */
	uint32_t recall_grace_ms;
	uint16_t name_len;
	uint16_t command_len;
	uint16_t message_len;    /* at most COORD_MESSAGE_MAX (public, coord.h) */
	uint16_t reserved;
	/* char name[]; char command[]; char message[]; */
} coord_msg_resource_info;

/* Notice kinds (coord_msg_notice.kind).  None is sent yet (recalls go
 * through the shared region's flags and the NOTIFY pipe, which need no
 * reading of the socket).  Clients ignore kinds they do not know. */
typedef struct coord_msg_notice {
	coord_msg_hdr h;         /* seq == COORD_SEQ_NOTICE */
	uint32_t kind;
	uint32_t reserved;
	uint64_t lease_id;       /* the lease it is about, or 0 */
} coord_msg_notice;

/* METRICS: the Prometheus text of the broker's counters (flags 0), or
 * (COORD_METRICS_WATCH) "this connection sleeps on the event feed": from
 * then on, until it closes, the broker does a FUTEX_WAKE on the feed's
 * wake word after each batch of events it published.  Other bits are
 * refused with COORD_EINVAL. */
enum { COORD_METRICS_WATCH = 1 };

typedef struct coord_msg_metrics {
	coord_msg_hdr h;
	uint32_t flags;
	uint32_t reserved;
} coord_msg_metrics;

/* ------------------------------------------------------------------------ */
/* 3. The shared region                                                     */
/* ------------------------------------------------------------------------ */

/* A file in the instance directory that the broker writes and clients map
 * read-only: a header, then slot_count slots.  Slot i belongs to the lease
 * whose id its `lease` word holds, or to nobody (0).  A lease is valid iff
 * its slot holds its id; ids are never reused, so a stale handle can never
 * look valid.  `flags` is for the broker to tell the holder something
 * without a message (COORD_SLOT_* bits); a client that does not know a bit
 * ignores it. */
#define COORD_SHM_MAGIC "COORDSH2"
#define COORD_SHM_HEADER_SIZE 4096

typedef struct coord_shm_header {
	char magic[8];          /* COORD_SHM_MAGIC */
	uint32_t version;       /* COORD_PROTO_VERSION */
	uint32_t header_size;   /* offset of the slot array */
	uint64_t slot_count;
	uint64_t broker_pid;
	uint64_t broker_epoch;  /* rises at every broker start */
	uint32_t slot_size;     /* sizeof(coord_shm_slot) */
	uint32_t reserved;
	uint64_t file_dev;      /* st_dev and st_ino of the file the broker */
	uint64_t file_ino;      /* writes; a client that finds other values in
	                           the file it opened has a copy, not the live
	                           region (0: an older broker, not checked) */
} coord_shm_header;

typedef struct coord_shm_slot {
	_Atomic uint64_t lease;  /* id of the lease in this slot, or 0 */
	_Atomic uint64_t flags;  /* COORD_SLOT_*; 0 today */
} coord_shm_slot;

/* Slot flags.  COORD_SLOT_RECALL: a conflicting request waits behind this
 * lease; let go when you can.  Set once, cleared when the slot is freed. */
enum { COORD_SLOT_RECALL = 1 };

/* A connection's cache page (COORD_MSG_CACHE): a memfd the broker makes,
 * sealed at this size, mapped read-write by the client and read-only by
 * the broker, and by nobody else.  Entry i describes the cached read
 * grant the client bound to it with RELEASE{COORD_RELEASE_CACHE, entry
 * i}: `lease` its id (the client writes it before the release, 0 when
 * free), `inside` nonzero while the client reads under it.  The broker
 * trusts neither: a wrong value can only keep the client's own grant
 * held, or let the client read unprotected, never stop anyone else's
 * lease from being exclusive.  Protocol and memory order: docs/design.md,
 * "Cached read leases". */
#define COORD_CACHE_PAGE_SIZE 4096

typedef struct coord_cache_entry {
	_Atomic uint64_t lease;
	_Atomic uint64_t inside;
} coord_cache_entry;

#define COORD_CACHE_ENTRIES (COORD_CACHE_PAGE_SIZE / sizeof(coord_cache_entry))
/* The descriptors (kernel locks) the broker keeps for one connection's
 * cached grants; it refuses to cache more, and the library does not ask. */
#define COORD_CACHE_FDS_PER_CONN 32
/* ---- the event feed: coordd.events ----
 *
 * A ring of fixed-size records the broker appends to, one per event
 * (grant, wait, recall, release, ...), that readers (`coordctl watch`)
 * map read-only, like the region: written only by the broker, mode 0644
 * (0640 of the group in a shared instance).  Record number `seq` (from 1)
 * lives at index seq % record_count; `head` is the seq of the next record,
 * so records head - record_count .. head - 1 are published.  The broker
 * writes a record as a seqlock: its seq word 0, a release fence, the
 * body, then its seq with a release store; a reader copies the body
 * between two loads of the seq word and keeps the copy only if both are
 * the seq it wanted, else it was lapped.  `head` and then `wake` (its low
 * 32 bits, the futex word) are stored once per batch of events; the
 * broker does a FUTEX_WAKE on `wake` only while a connection asked for
 * it (COORD_METRICS_WATCH), and never waits for a reader.  The file is
 * reused across broker restarts and its seq goes on (a restarted broker
 * starts at the old head); each broker's first record is
 * COORD_EVENT_START with its epoch. */
#define COORD_EVENTS_NAME "coordd.events"
#define COORD_EVENTS_MAGIC "COORDEV1"
#define COORD_EVENTS_HEADER_SIZE 4096
#define COORD_EVENTS_RECORD_SIZE 1024
#define COORD_EVENTS_COUNT 4096

typedef struct coord_events_header {
	char magic[8];           /* COORD_EVENTS_MAGIC */
	uint32_t version;        /* 1 */
	uint32_t header_size;    /* offset of record 0 */
	uint32_t record_size;    /* COORD_EVENTS_RECORD_SIZE */
	uint32_t record_count;
	_Atomic uint64_t head;   /* seq of the next record */
	_Atomic uint32_t wake;   /* (uint32_t)head, stored after it: the futex */
	uint32_t reserved;
	_Atomic uint64_t broker_pid;   /* 0 once a broker stopped cleanly */
	_Atomic uint64_t broker_epoch; /* coordd.shm's epoch of that broker */
	uint64_t file_dev, file_ino;   /* the file the broker writes */
} coord_events_header;

typedef struct coord_events_record {
	_Atomic uint64_t seq;    /* 0 while written */
	uint32_t type;           /* COORD_EVENT_* (coord.h) */
	uint32_t mode;           /* COORD_READ, COORD_WRITE or 0 */
	int64_t wall_ms;         /* when, ms since the epoch */
	uint64_t epoch;          /* the broker's */
	uint64_t lease_id, token, pid, uid;
	int64_t duration_us;     /* held, waited, or the checkpoint took */
	int32_t code;            /* 0 or a COORD_E* code */
	uint32_t kind;           /* checkpoints: COORD_KIND_* */
	int64_t wal_before, wal_after; /* checkpoints: bytes, -1 unknown */
	uint16_t name_len, comm_len, label_len, reason_len;
	uint32_t flags;          /* COORD_EVENT_F_* (coord.h) */
	uint32_t reserved;
	char text[COORD_EVENTS_RECORD_SIZE - 112]; /* name, comm, label, reason */
} coord_events_record;

_Static_assert(sizeof(coord_events_record) == COORD_EVENTS_RECORD_SIZE, "event record size");
_Static_assert(sizeof(coord_events_header) <= COORD_EVENTS_HEADER_SIZE, "event header size");

/* ------------------------------------------------------------------------ */
/* 4. Pure helpers                                                          */
/* ------------------------------------------------------------------------ */

/* "COORD_ETIMEDOUT", or "COORD_E?" for a code not in COORD_ERRORS. */
static inline const char *coord_proto_errname(int err)
{
	switch (err) {
#define COORD__PROTO_ERRNAME(name, value, text) case value: return "COORD_" #name;
		COORD_ERRORS(COORD__PROTO_ERRNAME)
#undef COORD__PROTO_ERRNAME
	}
	return "COORD_E?";
}

/* Lower-case names of kinds, policies and SQLite modes; "?" out of range. */
static inline const char *coord_proto_kind_name(int kind)
{
	static const char *const names[] = { "plain", "sqlite", "duckdb" };
	return kind >= 0 && kind <= COORD_KIND_DUCKDB ? names[kind] : "?";
}

static inline const char *coord_proto_policy_name(int policy)
{
	static const char *const names[] = { "auto", "none", "sqlite", "duckdb", "exec" };
	return policy >= 0 && policy <= COORD_POLICY_EXEC ? names[policy] : "?";
}

static inline const char *coord_proto_sqlite_mode_name(int mode)
{
	static const char *const names[] = { "passive", "full", "restart", "truncate" };
	return mode >= 0 && mode <= COORD_SQLITE_TRUNCATE ? names[mode] : "?";
}

/* The one resource-kind detector, shared by the broker (checkpoints) and
 * the doctor: classifies the first `n` bytes of a file.  SQLite files
 * start with the 16 bytes "SQLite format 3\0"; DuckDB files have "DUCK" at
 * byte 8.  Anything else, or too few bytes, is plain. */
static inline int coord_proto_kind(const void *head, size_t n)
{
	const unsigned char *h = (const unsigned char *)head;
	if (n >= 16 && !memcmp(h, "SQLite format 3", 16))
		return COORD_KIND_SQLITE;
	if (n >= 12 && !memcmp(h + 8, "DUCK", 4))
		return COORD_KIND_DUCKDB;
	return COORD_KIND_PLAIN;
}

/* 1 if a filesystem of this statfs(2) f_type emulates flock(2) with POSIX
 * byte-range locks (NFS, SMB/CIFS), which would interfere with the
 * database's own locks: no kernel lock is taken there (the library) and
 * the doctor says so. */
static inline int coord_proto_flock_emulated(unsigned long f_type)
{
	switch (f_type) {
	case 0x6969UL:     /* NFS */
	case 0x517BUL:     /* SMB */
	case 0xFF534D42UL: /* CIFS */
	case 0xFE534D42UL: /* SMB2 */
		return 1;
	}
	return 0;
}

/* 1 for filesystems whose flock(2) and close(2) never wait for anyone
 * outside the kernel (statfs f_type): where the library passes a cached
 * grant's kernel lock to the broker, which makes both calls on it.  The
 * broker checks the same by name (broker/ufd.c). */
static inline int coord_proto_fs_local(unsigned long f_type)
{
	switch (f_type) {
	case 0xEF53UL:     /* ext2, ext3, ext4 */
	case 0x58465342UL: /* XFS */
	case 0x9123683EUL: /* Btrfs */
	case 0x01021994UL: /* tmpfs */
	case 0xF2F52010UL: /* F2FS */
	case 0xCA451A4EUL: /* bcachefs */
	case 0x3153464AUL: /* JFS */
	case 0x2FC12FC1UL: /* ZFS */
	case 0x858458F6UL: /* ramfs */
	case 0x794C7630UL: /* overlay */
		return 1;
	}
	return 0;
}

/* The length of the valid UTF-8 sequence at s (n > 0 bytes left: no
 * overlong form, no surrogate, nothing above U+10FFFF), or 0.  The
 * broker's metrics and coordctl's output (tools/text.c) escape by it. */
static inline size_t coord_proto_utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

#endif /* COORD_PROTO_H */
