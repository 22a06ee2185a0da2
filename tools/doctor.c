/* coordctl doctor: a read-only look at a database file and its side files.
 *
 * It answers the questions an admin has when an app says "database is
 * locked", "disk I/O error" or "Failure while replaying WAL file": what
 * kind of file is this, which side files exist and who owns them, can the
 * current user write them, is a WAL left over with nobody holding the
 * file, and who has it open (from /proc) or leased (from the broker).
 *
 * It must never change anything: files are opened O_RDONLY, nothing is
 * created, deleted, locked or opened through SQLite or DuckDB (opening
 * them would replay or checkpoint the WAL). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COORD_WANT_PROTOCOL
#include "coord.h"
#include "doctor.h"

#define MAX_ADVICE 12

struct report {
	FILE *out;
	int problems;
	char advice[MAX_ADVICE][512];
	int nadvice;
};

static void problem(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct report *r, const char *fmt, ...)
{
	va_list ap;
	fprintf(r->out, "  PROBLEM: ");
	va_start(ap, fmt);
	vfprintf(r->out, fmt, ap);
	va_end(ap);
	fputc('\n', r->out);
	r->problems++;
}

static void advise(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void advise(struct report *r, const char *fmt, ...)
{
	va_list ap;
	if (r->nadvice >= MAX_ADVICE)
		return;
	va_start(ap, fmt);
	vsnprintf(r->advice[r->nadvice++], sizeof r->advice[0], fmt, ap);
	va_end(ap);
}

static const char *user_name(uid_t uid, char *buf, size_t size)
{
	struct passwd *pw = getpwuid(uid);
	if (pw)
		snprintf(buf, size, "%s", pw->pw_name);
	else
		snprintf(buf, size, "%u", (unsigned)uid);
	return buf;
}

static const char *group_name(gid_t gid, char *buf, size_t size)
{
	struct group *gr = getgrgid(gid);
	if (gr)
		snprintf(buf, size, "%s", gr->gr_name);
	else
		snprintf(buf, size, "%u", (unsigned)gid);
	return buf;
}

static void describe(FILE *out, const char *label, const char *path, const struct stat *st)
{
	char u[64], g[64];
	fprintf(out, "  %-9s %s\n            %lld bytes, owner %s:%s, mode %04o\n", label, path,
	        (long long)st->st_size, user_name(st->st_uid, u, sizeof u),
	        group_name(st->st_gid, g, sizeof g), (unsigned)(st->st_mode & 07777));
}

/* ---- /proc ---- */

struct opener {
	long pid;
	char comm[32];
	char file[16];   /* "database", "-wal", ... */
};

static void read_comm(long pid, char *buf, size_t size)
{
	char path[64];
	FILE *f;
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	snprintf(buf, size, "?");
	f = fopen(path, "re");
	if (!f)
		return;
	if (fgets(buf, (int)size, f))
		buf[strcspn(buf, "\n")] = 0;
	fclose(f);
}

/* Finds processes with any of files[] open; returns how many it found. */
static size_t scan_openers(const char *const *files, const char *const *labels, size_t nfiles,
                           struct opener *out, size_t max)
{
	DIR *proc = opendir("/proc");
	struct dirent *p;
	size_t n = 0;
	long self = (long)getpid();
	if (!proc)
		return 0;
	while ((p = readdir(proc)) && n < max) {
		char fddir[64];
		DIR *fds;
		struct dirent *f;
		char *end;
		long pid = strtol(p->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		snprintf(fddir, sizeof fddir, "/proc/%ld/fd", pid);
		fds = opendir(fddir);
		if (!fds)
			continue; /* not ours to look at, or gone */
		while ((f = readdir(fds)) && n < max) {
			char link[PATH_MAX], lpath[600];
			ssize_t len;
			if (f->d_name[0] == '.')
				continue;
			snprintf(lpath, sizeof lpath, "%s/%s", fddir, f->d_name);
			len = readlink(lpath, link, sizeof link - 1);
			if (len <= 0)
				continue;
			link[len] = 0;
			for (size_t i = 0; i < nfiles; i++) {
				if (strcmp(link, files[i]))
					continue;
				int dup = 0;
				for (size_t j = 0; j < n; j++)
					if (out[j].pid == pid && !strcmp(out[j].file, labels[i]))
						dup = 1;
				if (dup)
					break;
				out[n].pid = pid;
				read_comm(pid, out[n].comm, sizeof out[n].comm);
				snprintf(out[n].file, sizeof out[n].file, "%s", labels[i]);
				n++;
				break;
			}
		}
		closedir(fds);
	}
	closedir(proc);
	return n;
}

/* ---- the report ---- */

static int detect(const char *path, int *wal_mode)
{
	unsigned char head[20];
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	int kind = COORD_KIND_PLAIN;
	struct stat st;
	*wal_mode = 0;
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && pread(fd, head, sizeof head, 0) == 20) {
		if (!memcmp(head, "SQLite format 3", 16)) {
			kind = COORD_KIND_SQLITE;
			*wal_mode = head[18] == 2 && head[19] == 2;
		} else if (!memcmp(head + 8, "DUCK", 4)) {
			kind = COORD_KIND_DUCKDB;
		}
	}
	close(fd);
	return kind;
}

int doctor_run(FILE *out, const char *path, const struct doctor_lease *leases, size_t nleases,
               int broker_up)
{
	static const char *const sqlite_sides[] = { "-wal", "-shm", "-journal" };
	static const char *const duckdb_sides[] = { ".wal" };
	const char *const *sides;
	size_t nsides, nopen;
	struct report r = { .out = out };
	struct stat db, st;
	struct opener openers[64];
	char side[8][PATH_MAX + 16];
	const char *files[8], *labels[8];
	int kind, wal_mode, have_wal = 0;
	long long wal_size = 0;
	char u[64];

	if (stat(path, &db) < 0) {
		fprintf(out, "doctor: cannot inspect %s: %s\n", path, strerror(errno));
		if (errno == ENOENT)
			fprintf(out, "  There is no such file; check the path the application uses.\n");
		return 2;
	}
	kind = detect(path, &wal_mode);
	if (kind < 0) {
		fprintf(out, "doctor: cannot read %s: %s\n", path, strerror(errno));
		fprintf(out, "  Run doctor as a user who can read the file, e.g. its owner or root.\n");
		return 2;
	}
	fprintf(out, "%s\n", path);
	fprintf(out, "  kind:     %s%s\n", kind == COORD_KIND_SQLITE ? "SQLite" : kind == COORD_KIND_DUCKDB ? "DuckDB" : "plain file (not SQLite or DuckDB)",
	        kind == COORD_KIND_SQLITE ? (wal_mode ? ", WAL mode" : ", rollback journal mode") : "");
	describe(out, "database:", path, &db);

	if (kind == COORD_KIND_DUCKDB) {
		sides = duckdb_sides;
		nsides = 1;
	} else {
		sides = sqlite_sides;
		nsides = kind == COORD_KIND_SQLITE ? 3 : 0;
	}
	files[0] = path;
	labels[0] = "database";

	fprintf(out, "\nside files\n");
	if (!nsides)
		fprintf(out, "  (none expected for a plain file)\n");
	for (size_t i = 0; i < nsides; i++) {
		snprintf(side[i], sizeof side[i], "%s%s", path, sides[i]);
		files[i + 1] = side[i];
		labels[i + 1] = sides[i];
		if (stat(side[i], &st) < 0) {
			fprintf(out, "  %-9s absent\n", sides[i]);
			continue;
		}
		describe(out, sides[i], side[i], &st);
		if (!strcmp(sides[i], "-wal") || !strcmp(sides[i], ".wal")) {
			have_wal = 1;
			wal_size = (long long)st.st_size;
		}
		if (st.st_uid != db.st_uid || st.st_gid != db.st_gid) {
			char dbu[64], dbg[64], g[64];
			problem(&r, "%s owner differs from the database (%s:%s, database %s:%s)", sides[i],
			        user_name(st.st_uid, u, sizeof u), group_name(st.st_gid, g, sizeof g),
			        user_name(db.st_uid, dbu, sizeof dbu), group_name(db.st_gid, dbg, sizeof dbg));
			advise(&r,
			       "Give %s the database's owner, or apps running as %s get \"disk I/O error\" "
			       "or \"Permission denied\":\n      chown %s:%s '%s'",
			       sides[i], dbu, dbu, dbg, side[i]);
		}
		if ((st.st_mode & 0777) != (db.st_mode & 0777)) {
			problem(&r, "%s mode %04o differs from the database's %04o", sides[i],
			        (unsigned)(st.st_mode & 0777), (unsigned)(db.st_mode & 0777));
			advise(&r, "Give %s the database's permissions:\n      chmod %04o '%s'", sides[i],
			       (unsigned)(db.st_mode & 0777), side[i]);
		}
		if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0 &&
		    faccessat(AT_FDCWD, side[i], W_OK, AT_EACCESS) != 0) {
			problem(&r, "%s is not writable by you (%s) although the database is", sides[i],
			        user_name(geteuid(), u, sizeof u));
			advise(&r, "Make %s writable by every user that writes the database (same owner "
			           "and mode as the database).", side[i]);
		}
	}

	nopen = scan_openers(files, labels, nsides + 1, openers, 64);
	fprintf(out, "\nprocesses with the file open\n");
	if (!nopen)
		fprintf(out, "  none (that this user may see)\n");
	for (size_t i = 0; i < nopen; i++)
		fprintf(out, "  pid %-7ld %-16s %s\n", openers[i].pid, openers[i].comm, openers[i].file);

	fprintf(out, "\nleases from the broker\n");
	if (!broker_up)
		fprintf(out, "  broker not running: no leases\n");
	else if (!nleases)
		fprintf(out, "  none\n");
	for (size_t i = 0; i < nleases; i++)
		fprintf(out, "  %-5s pid %-7ld %-16s token %llu\n", leases[i].mode, leases[i].pid,
		        leases[i].command, (unsigned long long)leases[i].token);

	fprintf(out, "\nfindings\n");
	if (have_wal && wal_size > 0 && !nopen && !nleases) {
		problem(&r, "leftover WAL: %s%s holds %lld bytes and no process has the database open",
		        path, kind == COORD_KIND_DUCKDB ? ".wal" : "-wal", wal_size);
		advise(&r,
		       "Do NOT delete the WAL: it holds committed transactions that are not in the "
		       "database file yet. Let %s replay it: `coordctl checkpoint '%s'` (or open the "
		       "database once with %s).",
		       kind == COORD_KIND_DUCKDB ? "DuckDB" : "SQLite", path,
		       kind == COORD_KIND_DUCKDB ? "duckdb" : "sqlite3");
	}
	if (kind == COORD_KIND_SQLITE) {
		snprintf(side[7], sizeof side[7], "%s-journal", path);
		if (stat(side[7], &st) == 0 && st.st_size > 0 && !nopen) {
			problem(&r, "leftover rollback journal (%lld bytes): a write was cut short",
			        (long long)st.st_size);
			advise(&r, "Do NOT delete %s: SQLite uses it to undo the cut-short write the next "
			           "time the database is opened.", side[7]);
		}
	}
	if (have_wal && nopen && !nleases && broker_up)
		fprintf(out, "  note: processes have the file open without a coord lease; they are not "
		             "coordinated (use coordctl run or the library)\n");
	if (!r.problems)
		fprintf(out, "  nothing wrong found\n");

	if (r.nadvice) {
		fprintf(out, "\nwhat to do\n");
		for (int i = 0; i < r.nadvice; i++)
			fprintf(out, "  %d. %s\n", i + 1, r.advice[i]);
	}
	if (r.problems)
		fprintf(out, "\nverdict: %d problem(s)\n", r.problems);
	else
		fprintf(out, "\nverdict: healthy\n");
	return r.problems ? 1 : 0;
}
