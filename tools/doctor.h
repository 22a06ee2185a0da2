/* coordctl doctor: what is wrong with a database file, in plain words.
 *
 * One function, doctor_run(), used by `coordctl doctor PATH` and by
 * tests/test_doctor.c.  It only reads: see the top of doctor.c. */
#ifndef COORD_DOCTOR_H
#define COORD_DOCTOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A lease the broker reports on the file. */
struct doctor_lease {
	const char *mode;    /* "read" or "write" */
	long pid;            /* the lease holder's process */
	const char *command; /* its command name, as the broker saw it */
	uint64_t token;      /* fencing token (0 for read leases) */
};

/* Inspects the database file `path` and its side files (SQLite -wal, -shm,
 * -journal; DuckDB .wal) and writes a report for an admin to `out`.
 *
 *   out        where the report goes (it is the only thing written).
 *   path       the database file, absolute or relative; symlinks are
 *              followed, as SQLite does.
 *   leases     the broker's leases on the file; may be NULL when nleases
 *              is 0.
 *   broker_up  1 if the broker could be asked (so "no leases" means none),
 *              0 if it is not running.
 *
 * It opens files O_RDONLY, never through SQLite or DuckDB, and changes,
 * creates, locks and deletes nothing.  Processes with the file open are
 * found in /proc; those of other users are only visible to root.
 *
 * Text that came from elsewhere (path and file names, process names from
 * /proc, the leases' command names) is written by text.c's human rule,
 * and paths in suggested commands quoted by text_shell_quote(), so the
 * report holds no control character; call text_init() first for a UTF-8
 * terminal to see non-ASCII names as they are.
 *
 * The report ends with a line "verdict: healthy", "verdict: N problem(s)"
 * or "verdict: cannot inspect".  Stable phrases in it, for scripts and
 * tests: "leftover WAL", "hot journal", "owner differs", "mode differs",
 * "not writable", "directory not writable", "deleted while open".
 *
 * Returns the exit status for coordctl: 0 healthy, 1 problems found,
 * 2 could not inspect (no such file, not a regular file, unreadable, out
 * of memory). */
int doctor_run(FILE *out, const char *path, const struct doctor_lease *leases, size_t nleases,
               int broker_up);

#endif
