/* coordctl setup-shared and share.
 *
 * setup-shared is the one command that makes a system instance: the group,
 * a directory of that group with mode 2770 (setgid, so everything created
 * in it gets the group; coord_proto_dir_is_shared() recognises it, so a
 * broker autostarted there serves the group and every user's default
 * instance becomes it when it is /var/lib/coord), and its broker.  It goes
 * through the public calls of libcoord for the broker, like any client.
 *
 * share writes the marker `.coord-instance` in a directory of databases:
 * the instance that coordinates its files.  coord_resource_open() then
 * refuses the files to connections of any other instance
 * (COORD_EINSTANCE).
 *
 * Nothing here changes a mode or an owner outside the directories it is
 * named; the parents it creates are 0755. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord_proto.h"
#include "ctl.h"
#include "share.h"


/* The group named `name`, created with groupadd --system if missing.
 * Returns 0 with *gid set, or -1 after saying why. */
static int ensure_group(const char *name, gid_t *gid)
{
	struct group *g = getgrnam(name);
	int status;
	pid_t pid;
	if (g) {
		*gid = g->gr_gid;
		return 0;
	}
	pid = fork();
	if (pid == 0) {
		execlp("groupadd", "groupadd", "--system", name, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0 || !(g = getgrnam(name))) {
		ctl_hint("%s", geteuid() ? "run setup-shared as root" : "create the group with groupadd yourself");
		ctl_complain(COORD_ESYS, "setup-shared: create group %s with groupadd", name);
		return -1;
	}
	printf("created group %s (gid %u)\n", name, (unsigned)g->gr_gid);
	*gid = g->gr_gid;
	return 0;
}

/* mkdir -p: parents 0755, dir itself 0700 until it is given the group. */
static int make_dir(const char *dir)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir);
	if (len >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, dir, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

int share_setup(const char *dir, const char *group)
{
	coord_options_t o = { 0 };
	coord_status_t s;
	struct stat st;
	char sock[PATH_MAX + 32];
	coord_t *c;
	gid_t gid;
	int rc;

	if (!dir || !*dir)
		dir = COORD_SYSTEM_DIR;
	if (!group || !*group)
		group = "coord";
	if (dir[0] != '/') {
		return ctl_usage("setup-shared", "--dir must be an absolute path, not %s", dir);
	}
	if (ensure_group(group, &gid) < 0)
		return EX_FAIL;
	if (make_dir(dir) < 0 || stat(dir, &st) < 0 ||
	    (st.st_gid != gid && chown(dir, (uid_t)-1, gid) < 0) ||
	    ((st.st_mode & 07777) != 02770 && chmod(dir, 02770) < 0)) {
		ctl_detail("%s", strerror(errno));
		ctl_hint("run setup-shared as root, or give %s to group %s with mode 2770 yourself", dir,
		         group);
		return ctl_complain(COORD_ESYS, "setup-shared: make %s a directory of group %s, mode 2770",
		                    dir, group);
	}
	o.dir = dir;
	rc = coord_connect(&c, &o);
	if (rc < 0) {
		ctl_hint("see %s/coordd.log, or start it yourself: coordd --dir %s --group %s", dir, dir,
		         group);
		ctl_complain(rc, "setup-shared: start the broker of %s", dir);
		return rc == COORD_ENOBROKER ? EX_UNAVAILABLE : EX_FAIL;
	}
	rc = coord_status(c, &s);
	coord_disconnect(c);
	/* A broker that was already running privately keeps its socket
	 * closed to the group: it must be restarted to serve it. */
	snprintf(sock, sizeof sock, "%s/%s", dir, COORD_SOCKET_NAME);
	if (rc < 0 || stat(sock, &st) < 0 || st.st_gid != gid || !(st.st_mode & S_IWGRP)) {
		ctl_hint("stop it (kill %llu) and run setup-shared again", (unsigned long long)s.broker_pid);
		ctl_detail("a broker (pid %llu) already serves %s as a private instance",
		           (unsigned long long)s.broker_pid, dir);
		return ctl_complain(COORD_EPERM, "setup-shared: share the running instance %s", dir);
	}
	printf("shared instance %s: group %s, broker pid %llu\n", dir, group,
	       (unsigned long long)s.broker_pid);
	printf("add users with `usermod -aG %s USER` (they log in again to get the group)%s\n", group,
	       strcmp(dir, COORD_SYSTEM_DIR) ? "; they use it with COORD_DIR or --dir"
	                                     : "; it is their default instance from now on");
	return EX_OK;
}

int share_mark(const char *path, const char *instance)
{
	char inst[COORD_DIR_MAX + 1], real[PATH_MAX], dir[PATH_MAX], marker[PATH_MAX + 64],
	        tmp[PATH_MAX + 96];
	struct stat st;
	const char *slash;
	FILE *f;
	int rc = coord_instance_dir(instance, inst, sizeof inst);
	if (rc < 0 || !realpath(inst, real)) {
		ctl_hint("%s", rc < 0 ? "pass --dir INSTANCE"
		                      : "start its broker first (coordctl --dir DIR --create status)");
		return ctl_complain(rc < 0 ? rc : COORD_ENOENT, "share: find the instance directory %s",
		                    rc < 0 ? "(none known)" : inst);
	}
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(dir, sizeof dir, "%s", path);
	} else if ((slash = strrchr(path, '/'))) {
		snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
	} else {
		snprintf(dir, sizeof dir, ".");
	}
	snprintf(marker, sizeof marker, "%s/%s", dir, COORD_MARKER_NAME);
	snprintf(tmp, sizeof tmp, "%s.tmp-%d", marker, (int)getpid());
	/* Written aside and renamed, so a reader sees the old marker or the
	 * new one, never half of one. */
	f = fopen(tmp, "wx");
	if (!f || fprintf(f, "%s\n", real) < 0 || fchmod(fileno(f), 0644) < 0 || fclose(f) != 0 ||
	    rename(tmp, marker) < 0) {
		ctl_detail("%s", strerror(errno));
		ctl_hint("write access to %s is needed (its owner or root can run share)", dir);
		unlink(tmp);
		return ctl_complain(COORD_ESYS, "share: write %s", marker);
	}
	printf("%s: its files are coordinated by the instance %s; connections of any other instance "
	       "get COORD_EINSTANCE on them\n", dir, real);
	return EX_OK;
}

int share_setup_command(int argc, char **argv, const char *dir_opt)
{
	const char *dir = dir_opt, *group = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
			dir = argv[++i];
		} else if (!strcmp(argv[i], "--group") && i + 1 < argc) {
			group = argv[++i];
		} else {
			return ctl_usage("setup-shared", "unknown argument '%s'", argv[i]);
		}
	}
	return share_setup(dir, group);
}

int share_mark_command(int argc, char **argv, const char *dir_opt)
{
	const char *path = NULL, *dir = dir_opt;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
			dir = argv[++i];
		} else if (argv[i][0] != '-' && !path) {
			path = argv[i];
		} else {
			path = NULL;
			break;
		}
	}
	if (!path) {
		return ctl_usage("share", "which PATH? (one, and --dir INSTANCE)");
	}
	return share_mark(path, dir);
}

void share_describe(const char *dir, char *buf, size_t size)
{
	struct stat st;
	struct group *g;
	struct passwd *pw;
	if (stat(dir, &st) < 0)
		snprintf(buf, size, "unknown (%s)", strerror(errno));
	else if (coord_proto_dir_is_shared(st.st_mode) && (g = getgrgid(st.st_gid)))
		snprintf(buf, size, "shared by group %s", g->gr_name);
	else if (coord_proto_dir_is_shared(st.st_mode))
		snprintf(buf, size, "shared by group %u", (unsigned)st.st_gid);
	else if ((pw = getpwuid(st.st_uid)))
		snprintf(buf, size, "private to %s", pw->pw_name);
	else
		snprintf(buf, size, "private to uid %u", (unsigned)st.st_uid);
}

void share_explain_eperm(const char *dir, char *buf, size_t size)
{
	struct passwd *me = getpwuid(geteuid());
	struct group *g;
	struct stat st;
	char user[64];
	if (me)
		snprintf(user, sizeof user, "%s", me->pw_name);
	else
		snprintf(user, sizeof user, "uid %d", (int)geteuid());
	if (stat(dir, &st) == 0 && coord_proto_dir_is_shared(st.st_mode)) {
		char name[64];
		if ((g = getgrgid(st.st_gid)))
			snprintf(name, sizeof name, "%s", g->gr_name);
		else
			snprintf(name, sizeof name, "%u", (unsigned)st.st_gid);
		snprintf(buf, size,
		         "the instance %s is shared by group %s, and %s is not in it: ask its admin "
		         "for `usermod -aG %s %s` (then log in again), or use another instance with "
		         "--dir or COORD_DIR",
		         dir, name, user, name, user);
		return;
	}
	snprintf(buf, size,
	         "the instance %s belongs to another user (it is private to its owner); use your own "
	         "with --dir or COORD_DIR, or ask its owner to share it (coordd --group)",
	         dir);
}

void share_explain_einstance(const char *resource, const char *dir, char *buf, size_t size)
{
	char named[COORD_DIR_MAX + 1];
	int rc = coord_file_instance(resource, named, sizeof named);
	if (rc <= 0) {
		snprintf(buf, size, "the .coord-instance beside %s names no instance; see `coordctl "
		         "share`", resource);
		return;
	}
	snprintf(buf, size,
	         "%s is coordinated by the instance %s (its directory's .coord-instance), not by %s: "
	         "run with --dir %s, or set COORD_DIR=%s",
	         resource, named, dir, named, named);
}
