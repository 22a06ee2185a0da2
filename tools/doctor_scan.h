/* coordctl doctor, private: what doctor.c (the report) and doctor_scan.c
 * (reading the files and /proc) share.  Not installed, not for other tools;
 * the public entry point is doctor_run() in doctor.h. */
#ifndef COORD_DOCTOR_SCAN_H
#define COORD_DOCTOR_SCAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

enum side_id { SIDE_WAL, SIDE_SHM, SIDE_JOURNAL, SIDE_DUCKDB_WAL, NSIDES };
#define FILE_DATABASE (-1)

struct side {
	char *path;   /* canonical database path + suffix */
	char *quoted; /* the same, quoted for a shell */
	int present;
	int listed;   /* shown: expected for the kind, or present */
	struct stat st;
};

/* What the SQLite -wal holds, as SQLite's own recovery would see it. */
enum wal_state { WAL_UNREAD, WAL_EMPTY, WAL_NO_HEADER, WAL_VALID };
struct wal_info {
	enum wal_state state;
	int read_errno;   /* WAL_UNREAD: why */
	uint32_t commits; /* committed transactions */
	uint32_t frames;  /* frames up to the last commit */
	int copied;       /* the -shm says all of them are in the database */
};

struct holder {
	long pid;
	int fd;
	int file;    /* FILE_DATABASE or an enum side_id */
	int deleted; /* the fd is on a file deleted since it was opened */
	char comm[32];
};

/* One run of doctor_run(): what was found, and the report being written. */
struct doctor {
	FILE *out;
	char *canon, *quoted, *dir, *quoted_dir;
	struct stat st;
	int kind, wal_mode, writable, journal_hot;
	int flock_emulated;  /* a network filesystem (coord_proto_flock_emulated) */
	char me[64], owner[140], user[64], group[64];
	char as_owner[100]; /* "as its owner alice (or as root)" */
	struct side side[NSIDES];
	struct wal_info wal;
	struct holder *holders;
	size_t nholders, unseen;
	FILE *problems, *fixes; /* numbered items, printed at the end */
	char *problems_text, *fixes_text;
	size_t problems_len, fixes_len;
	int nproblems, nfixes;
};

/* Sets d->kind (a COORD_KIND_*) and d->wal_mode from the first bytes of
 * d->canon.  Returns 0, or -1 with errno set when it cannot be read. */
int doctor_scan_header(struct doctor *d);

/* Fills d->wal from the SQLite -wal (and its -shm): the committed
 * transactions SQLite's recovery would replay, and whether the -shm says
 * they are already in the database.  Needs d->side[] named and stat()ed,
 * with the -wal present.  Returns 0, or -1 only when out of memory. */
int doctor_scan_wal(struct doctor *d);

/* Sets d->journal_hot from the SQLite -journal (present): 1 hot, 0 empty
 * or header zeroed, -1 unreadable. */
void doctor_scan_journal(struct doctor *d);

/* Fills d->holders with every process that has the database or a side
 * file open, from /proc/PID/fd; counts in d->unseen the processes it may
 * not look at.  Needs d->side[] named and stat()ed.  Returns 0, or -1
 * when out of memory. */
int doctor_scan_proc(struct doctor *d);

#endif
