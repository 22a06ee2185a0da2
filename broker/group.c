/* Shared instances: the directory and files of an instance served to a
 * group.
 *
 * A private instance is kept private by its directory's mode 0700.  A
 * shared one is a directory of mode 02770 and group G: members may enter
 * it and connect to the socket (0660), map the region and read LMDB
 * (0640); nobody else may do anything in it, and the broker refuses at
 * accept whoever got through anyway (client.c).  Only the broker writes
 * its files.  This file never decides who may connect; it only sets modes,
 * and never loosens anything outside the instance directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coord_proto.h"
#include "group.h"

#define SHARED_DIR_MODE 02770
#define SHARED_FILE_MODE 0640

int group_lookup(const char *name, gid_t *gid)
{
	struct group *g = getgrnam(name);
	char *end;
	unsigned long n;
	if (g) {
		*gid = g->gr_gid;
		return 0;
	}
	errno = 0;
	n = strtoul(name, &end, 10);
	if (errno || !*name || *end || (gid_t)n == GROUP_NONE)
		return -1;
	*gid = (gid_t)n;
	return 0;
}

const char *group_name(gid_t gid, char *buf, size_t size)
{
	struct group *g = getgrgid(gid);
	if (g)
		snprintf(buf, size, "%s", g->gr_name);
	else
		snprintf(buf, size, "%u", (unsigned)gid);
	return buf;
}

gid_t group_of_dir(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) < 0 || !coord_proto_dir_is_shared(st.st_mode))
		return GROUP_NONE;
	return st.st_gid;
}

int group_share_dir(const char *dir, gid_t gid, char *err, size_t errsize)
{
	struct stat st;
	if (stat(dir, &st) < 0)
		goto fail;
	if (st.st_gid == gid && (st.st_mode & 07777) == SHARED_DIR_MODE)
		return 0;
	if (st.st_gid != gid && chown(dir, (uid_t)-1, gid) < 0)
		goto fail;
	if (chmod(dir, SHARED_DIR_MODE) < 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errsize,
	         "cannot make %s a directory of group %u, mode 2770: %s (run coordd as root, "
	         "or as the directory's owner and a member of the group)",
	         dir, (unsigned)gid, strerror(errno));
	return -1;
}

/* Gives one file (or directory) group gid and `mode`, if it exists and
 * differs. */
static void share_one(int dirfd, const char *dir, const char *name, gid_t gid, mode_t mode,
                      struct log *log)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(st.st_mode))
		return;
	if ((st.st_gid != gid && fchownat(dirfd, name, (uid_t)-1, gid, AT_SYMLINK_NOFOLLOW) < 0) ||
	    ((st.st_mode & 07777) != mode && fchmodat(dirfd, name, mode, 0) < 0))
		log_event(log, "error", "op=share-file path=%s/%s errno=%d reason=%s",
		          log_quote(log, dir), name, errno, log_quote(log, strerror(errno)));
}

void group_share_files(const char *dir, gid_t gid, struct log *log)
{
	static const char *const files[] = {
		COORD_LOCK_NAME, COORD_STATE_NAME, COORD_STATE_NAME "-lock", COORD_LEASES_NAME,
		COORD_LEASES_NAME "-lock", COORD_SHM_NAME, COORD_LOG_NAME,
	};
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return;
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		share_one(dirfd, dir, files[i], gid, SHARED_FILE_MODE, log);
	if (mkdirat(dirfd, "keys", SHARED_DIR_MODE) < 0 && errno != EEXIST)
		log_event(log, "error", "op=share-file path=%s/keys errno=%d", log_quote(log, dir), errno);
	share_one(dirfd, dir, "keys", gid, SHARED_DIR_MODE, log);
	close(dirfd);
}
