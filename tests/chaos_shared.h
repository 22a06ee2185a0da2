/* The chaos test's shared file: what the test (tests/test_chaos.c), its
 * library workers and every witness (tests/chaos_witness.c) see of each
 * other.  It is one file in the test directory, mapped MAP_SHARED by all of
 * them, so processes that share nothing else (a witness two shells below a
 * `coordctl run` that has been SIGKILLed) still meet in it.
 *
 * It holds, per resource, an occupancy: who says it is inside the resource
 * right now, as writer or reader.  An occupant is a pid and its owner, the
 * process the broker knows as the holder (a library worker owns itself; a
 * witness is owned by its `coordctl run`), so that the several witnesses
 * under one write lease are one writer.  A slot left behind by a killed
 * occupant is harmless: occupants are checked for liveness by pid and start
 * time, a zombie and a process the test has SIGKILLed count as dead.
 *
 * Nothing here talks to the broker; it only records and checks. */
#ifndef COORD_TEST_CHAOS_SHARED_H
#define COORD_TEST_CHAOS_SHARED_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "coord.h"

#define CHAOS_MAGIC 0x63686173u      /* "chas" */
#define CHAOS_RESOURCES 2            /* a file and a key */
#define CHAOS_WRITER_SLOTS 16        /* the witnesses of one write lease */
#define CHAOS_READER_SLOTS 128
#define CHAOS_KILLED 4096            /* a ring: the most recent kills */
#define CHAOS_STARTED 32768          /* every process started under a lease */

/* Kinds of started processes. */
enum { CHAOS_WITNESS = 1, CHAOS_SHELL = 2 };

/* Flags of a started process, set once. */
enum {
	CHAOS_UNCOVERED = 1,  /* seen running with no kernel lock left: an orphan */
	CHAOS_STUCK = 2,      /* still running long after its lease was gone: an orphan */
};

/* An occupant: (uint64_t)owner << 32 | pid, 0 for a free slot. */
struct chaos_occupancy {
	_Atomic uint64_t writers[CHAOS_WRITER_SLOTS];
	_Atomic uint64_t readers[CHAOS_READER_SLOTS];
	_Atomic uint64_t last_token;     /* the newest write token seen inside */
	_Atomic uint64_t last_owner;     /* whose it was */
};

/* One process started under a lease, written by the witness (for itself
 * and for its parent shell): pid is stored last, so a reader that sees it
 * sees the rest. */
struct chaos_started {
	_Atomic int32_t pid;
	int32_t kind;
	int32_t owner;                   /* the coordctl run it ran under */
	int32_t write;                   /* under a write lease, else a read lease */
	_Atomic int32_t flags;
	uint64_t start;                  /* /proc/PID/stat start time */
};

struct chaos_shared {
	uint32_t magic;
	uint32_t size;
	char resource[CHAOS_RESOURCES][COORD_NAME_MAX + 1]; /* canonical names */
	_Atomic long violations;          /* someone entered beside a conflicting occupant */
	_Atomic long token_regressions;   /* a write token at or below an earlier writer's */
	_Atomic long worker_entries;
	_Atomic long witness_entries;
	_Atomic long witness_errors;      /* a witness could not do its job */
	_Atomic long slot_overflows;      /* no free occupancy slot: a check was lost */
	_Atomic long worker_errors;       /* a library call that failed under chaos */
	_Atomic uint32_t nkilled;
	_Atomic uint64_t killed[CHAOS_KILLED];  /* start << 22 | pid */
	_Atomic uint32_t nstarted;
	struct chaos_started started[CHAOS_STARTED];
	struct chaos_occupancy occ[CHAOS_RESOURCES];
	_Atomic long cached_reads;        /* worker reads under a cached grant */
	_Atomic long worker_reads;
};

/* Maps the shared file at path: made and zeroed with create, else opened
 * (and checked for the magic).  Returns the mapping or NULL with errno
 * set. */
struct chaos_shared *chaos_map(const char *path, int create);

/* /proc/PID/stat: the process's start time, with its state letter in
 * *state and its parent in *ppid (either may be NULL); 0 if there is no
 * such process. */
uint64_t chaos_stat(pid_t pid, char *state, pid_t *ppid);

/* 1 if pid runs and is not (the process with that start time) one the
 * test SIGKILLed; a zombie is dead. */
int chaos_alive(struct chaos_shared *s, pid_t pid);

/* Records pid as killed, before the test sends SIGKILL: a killed process
 * runs no more of its code, but /proc shows it running a moment longer. */
void chaos_mark_killed(struct chaos_shared *s, pid_t pid);

/* Enters resource res as a writer or a reader for owner, with the lease's
 * token (writers only; 0: none), and checks, after its slot is published,
 * that no live occupant of another owner conflicts: each one found is a
 * violation.  Returns the slot to pass to chaos_leave(), or -1 if none was
 * free (counted in slot_overflows; the check is still made). */
int chaos_enter(struct chaos_shared *s, int res, int write, pid_t owner, uint64_t token);
void chaos_leave(struct chaos_shared *s, int res, int write, int slot);

/* Clears every slot of pid (the test, once it has killed pid). */
void chaos_clear(struct chaos_shared *s, pid_t pid);

/* 1 if some occupant of res is a live writer (a broker kill waits for
 * one). */
int chaos_writer_inside(struct chaos_shared *s, int res);

/* Records a started process; returns its index or -1 if the table is
 * full. */
int chaos_record_started(struct chaos_shared *s, pid_t pid, uint64_t start, int kind,
                         pid_t owner, int write);

/* Whether pid holds a flock through one of its descriptors: 1 yes (of the
 * kind wanted: exclusive with write, shared otherwise), 0 no, -1 cannot
 * tell (the process is gone or going). */
int chaos_holds_flock(pid_t pid, int write);

#endif
