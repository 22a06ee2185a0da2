/* Descriptors a client passed (SCM_RIGHTS): the kernel lock of a cached
 * read grant, which the broker unlocks and closes when it takes the grant
 * back.  A client chooses what it sends, and on some filesystems even
 * close(2) waits for a daemon the client may control (FUSE's flush; an
 * NFS server that is down), so the broker's one thread must never make a
 * system call on such a descriptor.  ufd_local() tells, without touching
 * the file: it reads the descriptor's mount id from /proc/self/fdinfo
 * and the mount's filesystem type from /proc/self/mountinfo (kept, and
 * read again when an unknown mount id turns up), and answers 1 only for
 * local disk and memory filesystems.  ufd_close() closes the others on a
 * thread of their own, so a hung one can stall only itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ufd.h"

/* Filesystems whose close(2) and flock(2) never wait for anyone outside
 * the kernel.  An overlay in the broker's own mount namespace was made
 * by its administrator (only FUSE can be mounted there without
 * privilege); a descriptor from another namespace has a mount id that is
 * not in our mountinfo at all, and is refused. */
static const char *const local_types[] = {
	"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "bcachefs", "jfs", "zfs", "ramfs",
	"overlay",
};

struct mount_kind {
	int id;
	int local;
};

static struct mount_kind *mounts;
static size_t nmounts;

static int type_is_local(const char *type)
{
	for (size_t i = 0; i < sizeof local_types / sizeof *local_types; i++)
		if (!strcmp(type, local_types[i]))
			return 1;
	return 0;
}

/* Reads /proc/self/mountinfo into mounts: "ID PARENT MAJ:MIN ROOT POINT
 * OPTIONS [TAGS...] - TYPE SOURCE SUPER". */
static void mounts_read(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	struct mount_kind *v = NULL;
	size_t n = 0, cap = 0;
	char *line = NULL;
	size_t size = 0;
	if (!f)
		return;
	while (getline(&line, &size, f) > 0) {
		char *sep = strstr(line, " - "), type[64];
		int id;
		if (!sep || sscanf(line, "%d", &id) != 1 || sscanf(sep + 3, "%63s", type) != 1)
			continue;
		if (n == cap) {
			struct mount_kind *w = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof *v);
			if (!w)
				break;
			v = w;
		}
		v[n++] = (struct mount_kind){ id, type_is_local(type) };
	}
	free(line);
	fclose(f);
	free(mounts);
	mounts = v;
	nmounts = n;
}

/* 1 local, 0 not, -1 unknown mount id. */
static int mount_local(int id)
{
	for (size_t i = 0; i < nmounts; i++)
		if (mounts[i].id == id)
			return mounts[i].local;
	return -1;
}

int ufd_local(int fd)
{
	char path[64], buf[512];
	const char *at;
	ssize_t n;
	int f, id, local;
	struct stat st;

	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return 0;
	n = read(f, buf, sizeof buf - 1);
	close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	at = strstr(buf, "mnt_id:");
	if (!at || sscanf(at + 7, "%d", &id) != 1)
		return 0;
	local = mount_local(id);
	if (local < 0) {
		mounts_read();
		local = mount_local(id);
	}
	/* fstat() is safe once the filesystem is known to be local. */
	return local == 1 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- the closer thread ---- */

static pthread_once_t closer_once = PTHREAD_ONCE_INIT;
static int closer_pipe[2] = { -1, -1 };

static void *closer_main(void *arg)
{
	int fd;
	(void)arg;
	for (;;) {
		ssize_t n = read(closer_pipe[0], &fd, sizeof fd);
		if (n == (ssize_t)sizeof fd)
			close(fd);
		else if (n < 0 && errno != EINTR)
			return NULL;
	}
}

static void closer_start(void)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	if (pipe2(closer_pipe, O_CLOEXEC) < 0)
		return;
	fcntl(closer_pipe[1], F_SETFL, O_NONBLOCK);
	/* Signals stay with the main thread (its signalfd). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (pthread_create(&t, &attr, closer_main, NULL) != 0) {
		close(closer_pipe[0]);
		close(closer_pipe[1]);
		closer_pipe[0] = closer_pipe[1] = -1;
	}
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int ufd_close(int fd)
{
	if (fd < 0)
		return 0;
	if (ufd_local(fd)) {
		close(fd);
		return 0;
	}
	pthread_once(&closer_once, closer_start);
	if (closer_pipe[1] >= 0 && write(closer_pipe[1], &fd, sizeof fd) == (ssize_t)sizeof fd)
		return 1;
	/* No thread, or its queue is full because a close hangs: keeping the
	 * descriptor is better than hanging the broker. */
	return -1;
}
