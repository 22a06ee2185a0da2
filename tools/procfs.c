/* What the tools read from /proc: the kernel's flock(2) table in
 * /proc/locks, each process's descriptors in /proc/PID/fd, the locks held
 * through one descriptor in /proc/PID/fdinfo/FD, /proc/PID/comm and
 * /proc/PID/cmdline, and a process's first child.
 *
 * It only reads: nothing here opens, locks or signals the files or the
 * processes it looks at, so `coordctl list`, `show` and `doctor` change
 * nothing by looking.  What /proc says is a snapshot that may be stale by
 * the time it is printed (a process exits, a lock is dropped); callers
 * say what they saw, never act on it.  Lines of /proc/locks and fdinfo are
 * parsed field by field, and a line that does not parse is skipped. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "procfs.h"

/* Parses one lock line of /proc/locks, or the part after "lock:" of an
 * fdinfo line:
 *     1: FLOCK  ADVISORY  WRITE 5030 fe:00:10953209 0 EOF
 *     1: -> FLOCK  ADVISORY  WRITE 5031 fe:00:10953209 0 EOF
 * (the device's major and minor in hex; "->" marks a request blocked
 * behind the lock above it).  Returns 1 for a held FLOCK lock, with *l
 * filled; 0 for anything else. */
static int parse_lock_line(char *line, struct procfs_flock *l)
{
	char *save = NULL, *tok, *end;
	unsigned long maj, min;
	unsigned long long ino;
	int field = 0;
	long pid = 0;
	const char *mode = NULL;

	for (tok = strtok_r(line, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (!strcmp(tok, "->"))
			return 0; /* a blocked request: it holds nothing */
		switch (field++) {
		case 0: /* "N:" */
			break;
		case 1:
			if (strcmp(tok, "FLOCK"))
				return 0;
			break;
		case 2: /* ADVISORY */
			break;
		case 3:
			mode = tok;
			break;
		case 4:
			errno = 0;
			pid = strtol(tok, &end, 10);
			if (errno || *end)
				return 0;
			break;
		case 5:
			if (sscanf(tok, "%lx:%lx:%llu", &maj, &min, &ino) != 3)
				return 0;
			l->dev = makedev(maj, min);
			l->ino = (ino_t)ino;
			l->pid = pid < 0 ? 0 : pid;
			if (!strcmp(mode, "WRITE"))
				l->write = 1;
			else if (!strcmp(mode, "READ"))
				l->write = 0;
			else
				return 0;
			return 1;
		}
	}
	return 0;
}

static int flock_order(const void *a, const void *b)
{
	const struct procfs_flock *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

int procfs_read_flocks(struct procfs_flock **out, size_t *n)
{
	struct procfs_flock *v = NULL, l;
	size_t len = 0, cap = 0;
	char *line = NULL, *iobuf = NULL;
	size_t line_size = 0;
	FILE *f = fopen("/proc/locks", "re");
	int rc = -1;

	*out = NULL;
	*n = 0;
	if (!f)
		return -1;
	/* The kernel makes at most a page of it per read() and walks its
	 * lock list from the start for each one; stdio's buffer for /proc
	 * files is st_blksize, 1 KiB, 4 reads a page.  With thousands of locks
	 * those walks are most of the cost. */
	iobuf = malloc(1 << 16);
	if (!iobuf || setvbuf(f, iobuf, _IOFBF, 1 << 16))
		goto fail;
	while (getline(&line, &line_size, f) >= 0) {
		if (!parse_lock_line(line, &l))
			continue;
		if (len == cap) {
			size_t more = cap ? 2 * cap : 64;
			struct procfs_flock *grown = realloc(v, more * sizeof *v);
			if (!grown)
				goto fail;
			v = grown;
			cap = more;
		}
		v[len++] = l;
	}
	if (ferror(f))
		goto fail;
	if (len)
		qsort(v, len, sizeof *v, flock_order);
	*out = v; /* NULL when nothing was found */
	*n = len;
	v = NULL;
	rc = 0;
fail:
	free(v);
	free(line);
	fclose(f);
	free(iobuf); /* after fclose(), which may still use it */
	return rc;
}

const struct procfs_flock *procfs_flocks_on(const struct procfs_flock *v, size_t n, dev_t dev,
                                            ino_t ino, size_t *count)
{
	struct procfs_flock key = { .dev = dev, .ino = ino };
	size_t lo = 0, hi = n, end;
	/* the first entry not below key */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (flock_order(&v[mid], &key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < n && !flock_order(&v[end], &key); end++)
		;
	*count = end - lo;
	return end > lo ? &v[lo] : NULL;
}

int procfs_fd_flock(long pid, int fd, dev_t dev, ino_t ino, struct procfs_flock *l)
{
	char path[64], *line = NULL;
	size_t line_size = 0;
	FILE *f;
	int found = 0;

	snprintf(path, sizeof path, "/proc/%ld/fdinfo/%d", pid, fd);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (!found && getline(&line, &line_size, f) >= 0) {
		if (strncmp(line, "lock:", 5) || !parse_lock_line(line + 5, l))
			continue;
		found = l->dev == dev && l->ino == ino;
	}
	free(line);
	fclose(f);
	return found;
}

/* Calls fn for each descriptor in the open directory /proc/PID/fd (dirfd,
 * which this closes).  Returns 0 or what fn returned. */
static int walk_fd_dir(long pid, int dirfd, procfs_fd_fn *fn, void *arg)
{
	DIR *fds = fdopendir(dirfd);
	struct dirent *e;
	int rc = 0;
	if (!fds) {
		close(dirfd);
		return 0;
	}
	while (rc == 0 && (e = readdir(fds))) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (e->d_name[0] == '.' || *end || fd < 0)
			continue;
		rc = fn(arg, pid, (int)fd, dirfd, e->d_name);
	}
	closedir(fds);
	return rc;
}

static int open_fd_dir(long pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%ld/fd", pid);
	return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int procfs_walk_fds_of(long pid, procfs_fd_fn *fn, void *arg)
{
	int dirfd = open_fd_dir(pid);
	if (dirfd < 0)
		return -1;
	return walk_fd_dir(pid, dirfd, fn, arg);
}

int procfs_walk_fds(procfs_fd_fn *fn, void *arg, size_t *unseen)
{
	DIR *proc = opendir("/proc");
	struct dirent *p;
	int rc = 0;
	if (!proc)
		return 0;
	while (rc == 0 && (p = readdir(proc))) {
		char *end;
		long pid = strtol(p->d_name, &end, 10);
		int dirfd;
		if (*end || pid <= 0)
			continue;
		dirfd = open_fd_dir(pid);
		if (dirfd < 0) {
			if (errno == EACCES || errno == EPERM)
				(*unseen)++;
			continue;
		}
		rc = walk_fd_dir(pid, dirfd, fn, arg);
	}
	closedir(proc);
	return rc;
}

int procfs_exited(long pid)
{
	char path[64], stat[512], *close_paren;
	size_t n;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	f = fopen(path, "re");
	if (!f)
		return 1;
	n = fread(stat, 1, sizeof stat - 1, f);
	fclose(f);
	stat[n] = 0;
	/* "PID (COMM) STATE ...", COMM possibly with ')' in it */
	close_paren = strrchr(stat, ')');
	return close_paren && (close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X'));
}

int procfs_comm(long pid, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	snprintf(buf, size, "?");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || size < 2)
		goto fail;
	n = read(fd, buf, size - 1);
	if (n <= 0)
		goto fail;
	/* Only the last newline is the kernel's: a comm may hold others. */
	if (buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	close(fd);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	snprintf(buf, size, "?");
	return -1;
}

ssize_t procfs_cmdline(long pid, char *buf, size_t size)
{
	char path[64];
	size_t got = 0;
	ssize_t n = 0;
	int fd;
	snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while (got < size && (n = read(fd, buf + got, size - got)) > 0)
		got += (size_t)n;
	close(fd);
	if (n < 0)
		return -1;
	if (got == size && size) /* cut: end on a whole argument */
		buf[size - 1] = 0;
	return (ssize_t)got;
}

/* The parent of pid from /proc/PID/stat ("pid (comm) state ppid ..."; the
 * comm may hold spaces and parentheses), or -1. */
static long parent_of(long pid)
{
	char path[64], buf[512], *close_paren;
	long ppid = -1;
	ssize_t n;
	int fd;
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	close_paren = strrchr(buf, ')');
	if (close_paren && sscanf(close_paren + 1, " %*c %ld", &ppid) != 1)
		ppid = -1;
	return ppid;
}

long procfs_first_child(long pid)
{
	char path[96], buf[64];
	long child = 0;
	struct dirent *e;
	ssize_t n;
	DIR *d;
	int fd;
	snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", pid, pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n < 0)
			return 0;
		buf[n] = 0;
		return strtol(buf, NULL, 10); /* the oldest child comes first */
	}
	/* A kernel without CONFIG_PROC_CHILDREN: the lowest pid whose parent
	 * it is (not always the oldest, after pids wrap). */
	d = opendir("/proc");
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char *end;
		long p = strtol(e->d_name, &end, 10);
		if (*end || p <= 0 || (child && p > child))
			continue;
		if (parent_of(p) == pid)
			child = p;
	}
	closedir(d);
	return child;
}
