/* coordctl doctor: a read-only look at a database file and its side files.
 *
 * It answers what an admin asks when an application reports "database is
 * locked", "disk I/O error" or "attempt to write a readonly database", or
 * lost data after a crash: what kind of file is this, which side files
 * exist and who owns them, can the current user write them, is a WAL or a
 * rollback journal left over with nobody holding the file, which processes
 * have it open (from /proc) and which leases the broker granted on it.
 * Every problem comes with the command that fixes it.
 *
 * This file writes the report: it names the side files, stat()s them,
 * checks access, and turns what doctor_scan.c read from the files and
 * from /proc into numbered problems and fixes.
 *
 * It must never change anything: nothing is created, deleted, locked or
 * chmod'ed (the chown/chmod it suggests are printed, never run), and
 * nothing is opened through SQLite or DuckDB, because opening the database
 * replays or checkpoints the very WAL the admin is asking about.  The only
 * thing it writes is the report, to `out`.
 *
 * Nor does it ever write text that came from elsewhere as it is: the path
 * and file names, process names from /proc, the broker's command names
 * are shown by text.c's human rule, paths in the suggested commands are
 * quoted by text_shell_quote() (which still names the same file), and a
 * user or group name that is not plain is shown as its number. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "coord_proto.h"
#include "doctor.h"
#include "doctor_scan.h"
#include "text.h"

static const char *const side_suffix[NSIDES] = { "-wal", "-shm", "-journal", ".wal" };

/* Room for a command name (the kernel's comm, or the broker's) escaped by
 * the human rule. */
#define COMM_SHOWN 160

/* ---- wording ---- */

/* Adds item number ++*count to the list f; lines after the first are
 * indented under its text. */
static void item(FILE *f, int *count, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void item(FILE *f, int *count, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;
	int n = ++*count, rc;
	va_start(ap, fmt);
	rc = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (rc < 0) {
		fprintf(f, "  %d. (out of memory)\n", n);
		return;
	}
	fprintf(f, "  %d. ", n);
	for (const char *p = text; *p; p++) {
		fputc(*p, f);
		if (*p == '\n')
			fputs("     ", f);
	}
	fputc('\n', f);
	free(text);
}

/* A numbered problem, and a numbered fix, of the report. */
#define problem(d, ...) item((d)->problems, &(d)->nproblems, __VA_ARGS__)
#define fix(d, ...) item((d)->fixes, &(d)->nfixes, __VA_ARGS__)

/* 1 if name is a plain user or group name (letters, digits, '.', '_',
 * '-', not first), which is shown and put in a chown command as it is. */
static int plain_name(const char *name)
{
	if (!*name || *name == '-')
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '.' || *p == '_' || *p == '-'))
			return 0;
	return 1;
}

/* The name of a user or group, or its number when it has none or one that
 * is not plain (chown takes either, and nothing raw reaches the report). */
static void name_or_number(const char *name, unsigned id, char *buf, size_t size)
{
	if (name && plain_name(name))
		snprintf(buf, size, "%s", name);
	else
		snprintf(buf, size, "%u", id);
}

static void user_name(uid_t uid, char *buf, size_t size)
{
	struct passwd *pw = getpwuid(uid);
	name_or_number(pw ? pw->pw_name : NULL, (unsigned)uid, buf, size);
}

static void group_name(gid_t gid, char *buf, size_t size)
{
	struct group *gr = getgrgid(gid);
	name_or_number(gr ? gr->gr_name : NULL, (unsigned)gid, buf, size);
}

/* "user:group", as chown takes it. */
static void owner_of(const struct stat *st, char *buf, size_t size)
{
	char u[64], g[64];
	user_name(st->st_uid, u, sizeof u);
	group_name(st->st_gid, g, sizeof g);
	snprintf(buf, size, "%s:%s", u, g);
}

static const char *file_label(int file)
{
	return file == FILE_DATABASE ? "database" : side_suffix[file];
}

/* ---- the report ---- */

static void report_file(struct doctor *d, const char *path)
{
	const char *kind;
	fprintf(d->out, "\nDatabase file\n");
	if (strcmp(path, d->canon)) {
		fputs("  path      ", d->out);
		text_put(d->out, d->canon);
		fputc('\n', d->out);
	}
	if (d->kind == COORD_KIND_SQLITE)
		kind = d->wal_mode ? "SQLite, WAL mode" : "SQLite, rollback journal mode";
	else if (d->kind == COORD_KIND_DUCKDB)
		kind = "DuckDB";
	else if (d->st.st_size == 0)
		kind = "empty file";
	else
		kind = "plain file (neither SQLite nor DuckDB)";
	fprintf(d->out, "  kind      %s\n", kind);
	fprintf(d->out, "  size      %lld bytes\n", (long long)d->st.st_size);
	fprintf(d->out, "  owner     %s (uid %u, gid %u)\n", d->owner, (unsigned)d->st.st_uid,
	        (unsigned)d->st.st_gid);
	fprintf(d->out, "  mode      %04o\n", (unsigned)(d->st.st_mode & 07777));
	fprintf(d->out, "  access    you (%s) can read it %s\n", d->me,
	        d->writable ? "and write it" : "but not write it");
	if (d->flock_emulated)
		fprintf(d->out, "  locking   a network filesystem, where flock(2) is emulated with POSIX\n"
		                "            locks: coord takes no kernel lock here, so only the broker\n"
		                "            keeps writers apart (and only for programs of this machine)\n");
	else
		fprintf(d->out, "  locking   flock(2): every coord lease is also a kernel lock on it\n");
}

static void report_wal(struct doctor *d)
{
	const char *pad = "            ";
	switch (d->wal.state) {
	case WAL_UNREAD:
		fprintf(d->out, "%scannot read it: %s\n", pad, strerror(d->wal.read_errno));
		break;
	case WAL_EMPTY:
		fprintf(d->out, "%sempty\n", pad);
		break;
	case WAL_NO_HEADER:
		fprintf(d->out, "%sno valid WAL header: nothing to replay\n", pad);
		break;
	case WAL_VALID:
		if (!d->wal.commits)
			fprintf(d->out, "%sno committed transactions: nothing to replay\n", pad);
		else if (d->wal.copied)
			fprintf(d->out, "%s%u committed transaction(s), all already\n%sin the database\n",
			        pad, d->wal.commits, pad);
		else
			fprintf(d->out, "%s%u committed transaction(s) in %u frame(s),\n"
			                "%snot yet in the database\n",
			        pad, d->wal.commits, d->wal.frames, pad);
		break;
	}
}

static void report_sides(struct doctor *d)
{
	int shown = 0;
	fprintf(d->out, "\nSide files\n");
	for (int i = 0; i < NSIDES; i++) {
		const struct side *s = &d->side[i];
		char owner[140];
		if (!s->listed)
			continue;
		shown++;
		if (!s->present) {
			fprintf(d->out, "  %-9s absent\n", side_suffix[i]);
			continue;
		}
		owner_of(&s->st, owner, sizeof owner);
		fprintf(d->out, "  %-9s %lld bytes, %s, mode %04o\n", side_suffix[i],
		        (long long)s->st.st_size, owner, (unsigned)(s->st.st_mode & 07777));
		if (i == SIDE_WAL && d->kind == COORD_KIND_SQLITE)
			report_wal(d);
		if (i == SIDE_JOURNAL && d->kind == COORD_KIND_SQLITE && s->st.st_size > 0)
			fprintf(d->out, "            %s\n",
			        d->journal_hot > 0    ? "holds a cut-short write (hot journal)"
			        : d->journal_hot == 0 ? "header zeroed: nothing to roll back"
			                              : "cannot read it");
	}
	if (!shown)
		fprintf(d->out, "  none\n");
}

static void report_holders(struct doctor *d)
{
	long self = (long)getpid();
	fprintf(d->out, "\nProcesses with the file open\n");
	if (!d->nholders)
		fprintf(d->out, "  none\n");
	for (size_t i = 0; i < d->nholders; i++) {
		const struct holder *h = &d->holders[i];
		char comm[COMM_SHOWN];
		text_human(comm, sizeof comm, h->comm, 0);
		fprintf(d->out, "  pid %-7ld ", h->pid);
		text_pad(d->out, comm, 15);
		fprintf(d->out, " %s, fd %d%s%s\n", file_label(h->file), h->fd,
		        h->deleted ? ", DELETED" : "", h->pid == self ? " (this process)" : "");
	}
	if (d->unseen)
		fprintf(d->out, "  (%zu process(es) of other users could not be\n"
		                "   looked at; run as root to see them)\n",
		        d->unseen);
}

static void report_leases(struct doctor *d, const struct doctor_lease *leases, size_t nleases,
                          int broker_up)
{
	fprintf(d->out, "\nBroker leases\n");
	if (!broker_up)
		fprintf(d->out, "  broker not running\n");
	else if (!nleases)
		fprintf(d->out, "  none\n");
	for (size_t i = 0; i < nleases; i++) {
		char command[COMM_SHOWN];
		text_human(command, sizeof command, leases[i].command ? leases[i].command : "?", 0);
		fprintf(d->out, "  %-5s  pid %-7ld ", leases[i].mode ? leases[i].mode : "?",
		        leases[i].pid);
		text_pad(d->out, command, 15);
		fprintf(d->out, " token %llu\n", (unsigned long long)leases[i].token);
	}
}

static const char *deleted_consequence(int file)
{
	switch (file) {
	case FILE_DATABASE:
		return "Its changes go to that old copy, not to the file\n"
		       "now at this path.";
	case SIDE_SHM:
		return "Processes that open the database now get a new\n"
		       "-shm and do not see its locks: together they can\n"
		       "corrupt the database.";
	case SIDE_JOURNAL:
		return "If it dies mid-write, nothing can undo the\n"
		       "half-done write.";
	default:
		return "Its changes go to a file no other process sees;\n"
		       "they reach the database only if it closes it\n"
		       "cleanly.";
	}
}

/* A process still using a file that was deleted (or replaced) under it:
 * `rm *-wal` while the application runs, or a restored backup moved over
 * the live database. */
static int check_deleted(struct doctor *d)
{
	for (size_t i = 0; i < d->nholders; i++) {
		const struct holder *h = &d->holders[i];
		char *save = NULL, *quoted, comm[COMM_SHOWN];
		if (!h->deleted)
			continue;
		text_human(comm, sizeof comm, h->comm, 0);
		problem(d, "deleted while open: pid %ld (%s) still uses a\ndeleted %s (fd %d).\n%s",
		        h->pid, comm, h->file == FILE_DATABASE ? "database file" : side_suffix[h->file],
		        h->fd, deleted_consequence(h->file));
		if (h->file == SIDE_SHM || h->file == SIDE_JOURNAL) {
			fix(d,
			    "Let pid %ld close the database cleanly (stop it\n"
			    "normally) before any other process opens it.",
			    h->pid);
			continue;
		}
		if (asprintf(&save, "%s%s.pid%ld", d->canon,
		             h->file == FILE_DATABASE ? "" : side_suffix[h->file], h->pid) < 0)
			return -1;
		quoted = text_shell_quote(save);
		free(save);
		if (!quoted)
			return -1;
		fix(d,
		    "Before pid %ld exits, save its copy:\n"
		    "  cp /proc/%ld/fd/%d %s\n"
		    "then let it close the database cleanly, and keep other\n"
		    "writers away until it has.",
		    h->pid, h->pid, h->fd, quoted);
		free(quoted);
	}
	return 0;
}

/* The fix for the leftover WAL w: replay it, through the broker or by
 * opening the database once with `tool` running `statement`. */
static void fix_leftover_wal(struct doctor *d, const struct side *w, const char *tool,
                             const char *statement)
{
	fix(d,
	    "Do NOT delete %s:\n"
	    "it holds committed data. Replay it into the database by\n"
	    "opening the database once, %s%s:\n"
	    "  coordctl checkpoint %s\n"
	    "or\n"
	    "  %s %s '%s'",
	    w->quoted, d->as_owner, d->nfixes ? ", after the fixes above" : "", d->quoted, tool,
	    d->quoted, statement);
}

/* A WAL or hot journal that nobody is using: committed data (or half of a
 * write) waiting to be replayed.  Deleting it is the classic mistake. */
static void check_leftovers(struct doctor *d, size_t nleases)
{
	const char *seen = d->unseen ? " (that you can see)" : "";
	const struct side *w;
	if (d->nholders || nleases)
		return;
	if (d->kind == COORD_KIND_SQLITE && d->side[SIDE_WAL].present &&
	    ((d->wal.state == WAL_VALID && d->wal.commits && !d->wal.copied) ||
	     (d->wal.state == WAL_UNREAD && d->side[SIDE_WAL].st.st_size > 0))) {
		w = &d->side[SIDE_WAL];
		if (d->wal.state == WAL_VALID)
			problem(d,
			        "leftover WAL: the -wal file holds %u committed\n"
			        "transaction(s) that are not in the database file yet,\n"
			        "and no process has the database open%s.",
			        d->wal.commits, seen);
		else
			problem(d,
			        "leftover WAL: the -wal file holds %lld bytes that\n"
			        "may not be in the database file yet, and no process\n"
			        "has the database open%s.",
			        (long long)w->st.st_size, seen);
		fix_leftover_wal(d, w, "sqlite3", "PRAGMA wal_checkpoint(TRUNCATE);");
	}
	if (d->kind == COORD_KIND_DUCKDB && d->side[SIDE_DUCKDB_WAL].present &&
	    d->side[SIDE_DUCKDB_WAL].st.st_size > 0) {
		w = &d->side[SIDE_DUCKDB_WAL];
		problem(d,
		        "leftover WAL: the .wal file holds %lld bytes of\n"
		        "changes that are not in the database file yet, and\n"
		        "no process has the database open%s.",
		        (long long)w->st.st_size, seen);
		fix_leftover_wal(d, w, "duckdb", "CHECKPOINT;");
	}
	if (d->kind == COORD_KIND_SQLITE && d->side[SIDE_JOURNAL].present && d->journal_hot > 0) {
		problem(d,
		        "hot journal: the -journal file holds a write that was\n"
		        "cut short; the database file may be half-written until\n"
		        "SQLite rolls it back.");
		fix(d,
		    "Do NOT delete %s:\n"
		    "SQLite needs it to undo the cut-short write. Open the\n"
		    "database once, %s, to roll it back:\n"
		    "  sqlite3 %s 'PRAGMA quick_check;'",
		    d->side[SIDE_JOURNAL].quoted, d->as_owner, d->quoted);
	}
}

/* Side files must look like the database: SQLite creates them with its
 * owner and mode, so a difference means someone else (often root, or a
 * second service account) created them, and the other users then fail. */
static void check_permissions(struct doctor *d)
{
	for (int i = 0; i < NSIDES; i++) {
		const struct side *s = &d->side[i];
		const char *name = side_suffix[i];
		unsigned mode = (unsigned)(d->st.st_mode & 0777);
		char who[100], owner[140];
		int owner_differs, mode_differs, not_writable = 0, err = 0;
		if (!s->present)
			continue;
		owner_differs = s->st.st_uid != d->st.st_uid || s->st.st_gid != d->st.st_gid;
		mode_differs = (s->st.st_mode & 0777) != (d->st.st_mode & 0777);
		if (d->writable && faccessat(AT_FDCWD, s->path, W_OK, AT_EACCESS) != 0) {
			not_writable = 1;
			err = errno;
		}
		owner_of(&s->st, owner, sizeof owner);
		/* root writes anything; the database's other users are the ones who fail */
		if (d->st.st_uid)
			snprintf(who, sizeof who, "Applications running as %s (its owner)", d->user);
		else
			snprintf(who, sizeof who, "Applications not running as root");
		if (owner_differs)
			problem(d,
			        "%s owner differs: %s, the database's is\n"
			        "%s. %s\n"
			        "may fail with \"disk I/O error\", \"attempt to write\n"
			        "a readonly database\" or \"Permission denied\".",
			        name, owner, d->owner, who);
		if (mode_differs)
			problem(d,
			        "%s mode differs: %04o, the database has %04o.\n"
			        "%s",
			        name, (unsigned)(s->st.st_mode & 0777), mode,
			        (s->st.st_mode & mode) != mode
			                ? "Users who may write the database may be unable\n"
			                  "to write it, and fail the same way."
			                : "It lets more users in than the database does.");
		if (not_writable)
			problem(d,
			        "%s not writable by you (%s): %s,\n"
			        "though the database is. SQLite run as %s fails with\n"
			        "\"disk I/O error\" or \"attempt to write a readonly\n"
			        "database\".",
			        name, d->me, strerror(err), d->me);
		if (owner_differs && mode_differs)
			fix(d, "Give %s the database's owner and mode:\n  chown %s %s\n  chmod %04o %s",
			    name, d->owner, s->quoted, mode, s->quoted);
		else if (owner_differs)
			fix(d, "Give %s the database's owner:\n  chown %s %s", name, d->owner, s->quoted);
		else if (mode_differs)
			fix(d, "Give %s the database's mode:\n  chmod %04o %s", name, mode, s->quoted);
		else if (not_writable && err == EROFS)
			fix(d, "%s is on a read-only file system: remount it\nread-write.", s->quoted);
		else if (not_writable)
			fix(d,
			    "%s has the database's owner and mode, yet you cannot\n"
			    "write it; look at its ACLs and attributes:\n"
			    "  getfacl %s\n"
			    "  lsattr %s",
			    name, s->quoted, s->quoted);
	}
}

/* SQLite creates -journal, -wal and -shm next to the database (DuckDB its
 * .wal), so a writer needs write access to the directory too. */
static int check_directory(struct doctor *d)
{
	char *shown;
	if (d->kind == COORD_KIND_PLAIN || !d->writable ||
	    faccessat(AT_FDCWD, d->dir, W_OK | X_OK, AT_EACCESS) == 0)
		return 0;
	shown = text_human_dup(d->dir);
	if (!shown)
		return -1;
	problem(d,
	        "directory not writable by you (%s): %s\n"
	        "%s creates its %s there, so\n"
	        "writes fail with \"unable to open database file\" or\n"
	        "\"attempt to write a readonly database\".",
	        d->me, shown, d->kind == COORD_KIND_SQLITE ? "SQLite" : "DuckDB",
	        d->kind == COORD_KIND_SQLITE ? "-journal, -wal and -shm files" : ".wal file");
	fix(d,
	    "Let the users who write the database create files in its\n"
	    "directory, e.g. through the database's group %s:\n"
	    "  chgrp %s %s\n"
	    "  chmod g+rwx %s",
	    d->group, d->group, d->quoted_dir, d->quoted_dir);
	free(shown);
	return 0;
}

static void cannot_inspect(FILE *out, const char *why, const char *advice)
{
	fprintf(out, "  cannot inspect: %s\n  %s\n\nverdict: cannot inspect\n", why, advice);
}

/* Resolves the path and names the side files, as SQLite does (after
 * following symlinks).  Returns -1 on ENOMEM. */
static int name_files(struct doctor *d)
{
	char *slash;
	d->quoted = text_shell_quote(d->canon);
	d->dir = strdup(d->canon);
	if (!d->quoted || !d->dir)
		return -1;
	slash = strrchr(d->dir, '/'); /* realpath() made it absolute */
	if (slash == d->dir)
		slash[1] = 0; /* the database is in / */
	else if (slash)
		*slash = 0;
	d->quoted_dir = text_shell_quote(d->dir);
	if (!d->quoted_dir)
		return -1;
	for (int i = 0; i < NSIDES; i++) {
		struct side *s = &d->side[i];
		if (asprintf(&s->path, "%s%s", d->canon, side_suffix[i]) < 0) {
			s->path = NULL;
			return -1;
		}
		s->quoted = text_shell_quote(s->path);
		if (!s->quoted)
			return -1;
		s->present = stat(s->path, &s->st) == 0 && S_ISREG(s->st.st_mode);
		if (d->kind == COORD_KIND_SQLITE)
			s->listed = i != SIDE_DUCKDB_WAL || s->present;
		else if (d->kind == COORD_KIND_DUCKDB)
			s->listed = i == SIDE_DUCKDB_WAL || s->present;
		else
			s->listed = s->present;
	}
	return 0;
}

int doctor_run(FILE *out, const char *path, const struct doctor_lease *leases, size_t nleases,
               int broker_up)
{
	struct doctor d = { .out = out };
	int status = 2, err;

	fputs("coordctl doctor: ", out);
	text_put(out, path);
	fputc('\n', out);
	if (stat(path, &d.st) < 0) {
		cannot_inspect(out, strerror(errno),
		               errno == ENOENT ? "Check the path the application opens."
		                               : "Run doctor as the file's owner or as root.");
		goto done;
	}
	if (!S_ISREG(d.st.st_mode)) {
		cannot_inspect(out, "not a regular file", "Give the path of the database file itself.");
		goto done;
	}
	d.canon = realpath(path, NULL);
	if (!d.canon || doctor_scan_header(&d) < 0) {
		cannot_inspect(out, strerror(errno), "Run doctor as the file's owner or as root.");
		goto done;
	}
	d.writable = faccessat(AT_FDCWD, d.canon, W_OK, AT_EACCESS) == 0;
	{
		struct statfs sf;
		d.flock_emulated = statfs(d.canon, &sf) == 0 &&
		                   coord_proto_flock_emulated((unsigned long)sf.f_type);
	}
	user_name(geteuid(), d.me, sizeof d.me);
	user_name(d.st.st_uid, d.user, sizeof d.user);
	group_name(d.st.st_gid, d.group, sizeof d.group);
	owner_of(&d.st, d.owner, sizeof d.owner);
	if (d.st.st_uid == 0)
		snprintf(d.as_owner, sizeof d.as_owner, "as root");
	else
		snprintf(d.as_owner, sizeof d.as_owner, "as its owner %s (or as root)", d.user);
	d.problems = open_memstream(&d.problems_text, &d.problems_len);
	d.fixes = open_memstream(&d.fixes_text, &d.fixes_len);
	if (!d.problems || !d.fixes || name_files(&d) < 0 || doctor_scan_proc(&d) < 0)
		goto out_of_memory;
	if (d.kind == COORD_KIND_SQLITE && d.side[SIDE_WAL].present && doctor_scan_wal(&d) < 0)
		goto out_of_memory;
	if (d.kind == COORD_KIND_SQLITE && d.side[SIDE_JOURNAL].present)
		doctor_scan_journal(&d);

	report_file(&d, path);
	report_sides(&d);
	report_holders(&d);
	report_leases(&d, leases, nleases, broker_up);
	if (check_deleted(&d) < 0)
		goto out_of_memory;
	/* Owners, modes and the directory first: their fixes come before the
	 * checkpoint that replays a leftover WAL, which needs them. */
	check_permissions(&d);
	if (check_directory(&d) < 0)
		goto out_of_memory;
	check_leftovers(&d, nleases);

	/* Closing the streams completes their texts. */
	err = fclose(d.problems);
	err |= fclose(d.fixes);
	d.problems = d.fixes = NULL;
	if (err)
		goto out_of_memory;
	fprintf(out, "\nProblems\n%s", d.nproblems ? d.problems_text : "  none\n");
	fprintf(out, "\nWhat to do\n%s",
	        d.nfixes ? d.fixes_text : "  nothing: the file looks healthy.\n");
	if (d.nproblems)
		fprintf(out, "\nverdict: %d problem(s)\n", d.nproblems);
	else
		fprintf(out, "\nverdict: healthy\n");
	status = d.nproblems ? 1 : 0;
	goto done;
out_of_memory:
	/* The report may stop halfway; its last line says why. */
	cannot_inspect(out, strerror(ENOMEM), "Try again with more memory available.");
done:
	if (d.problems)
		fclose(d.problems);
	if (d.fixes)
		fclose(d.fixes);
	free(d.problems_text);
	free(d.fixes_text);
	for (int i = 0; i < NSIDES; i++) {
		free(d.side[i].path);
		free(d.side[i].quoted);
	}
	free(d.holders);
	free(d.quoted_dir);
	free(d.dir);
	free(d.quoted);
	free(d.canon);
	return status;
}
