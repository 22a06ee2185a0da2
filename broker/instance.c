/* The instance directory under a running broker.
 *
 * One broker per directory: the broker holds an exclusive flock on
 * DIR/coordd.lock for its life.  That lock lives in the directory, so
 * `rm -rf DIR` under a running broker would take it away: the next client
 * finds no socket, autostarts a broker, which creates the directory again,
 * locks a new coordd.lock and grants the keys the first broker still
 * holds.  So the broker also holds the instance's name in the abstract
 * socket namespace (bound, listening, never served), which nothing in
 * the filesystem can remove: a broker that gets the flock but finds that
 * name held by a broker of its own user (or root) exits as "already
 * running", and the one broker puts its directory back.
 *
 * Once a second (INSTANCE_CHECK_MS, on the broker's one timer) the broker
 * looks at the directory: the directory itself, the lock file, the
 * socket, the region and the LMDB files, each compared by device and
 * inode with what it has open.  What is gone or replaced is put back: the
 * directory made again, the lock file made and locked again, the socket
 * bound again, the region (region.c) and LMDB (store.c) written from what
 * the broker has open; logged once as event=instance-restored.  A
 * directory the broker may no longer write is logged once
 * (event=instance-unwritable) and served as it is.
 *
 * Socket activation: a broker systemd starts for coordd.socket is passed
 * the listening socket at fd 3 (LISTEN_PID, LISTEN_FDS).  It is checked
 * before anything else is touched (a listening SOCK_SEQPACKET unix socket
 * bound at DIR/coordd.sock, else refused with the coordd.socket line to
 * write) and served instead of a bound one, but only once the lock above
 * is taken, exactly like a bound one: an activated broker and one started
 * by hand or by a client's autostart exclude each other whichever comes
 * first, and the one refused exits 3 without touching the socket.  At
 * exit the passed socket's file stays, for systemd to start the next
 * broker on the next connection.
 *
 * This file never decides about leases: held leases stay held through all
 * of it, in the table and in the region the holders map. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "group.h"
#include "instance.h"
#include "state.h"

static struct {
	char dir[PATH_MAX];
	int lock_fd;
	dev_t lock_dev, dir_dev;
	ino_t lock_ino, dir_ino;
	int guard_fd;              /* the abstract name; -1 if another user has it */
	int64_t next_ms;
	int unwritable;            /* logged as such */
	unsigned restoring;        /* RESTORED_* done while a step still fails */
	int retry_ms;              /* after a failed step; doubles up to a check */
	char failure[512];         /* the last failure logged */
} in = { .lock_fd = -1, .guard_fd = -1 };

enum {
	RESTORED_DIR = 1, RESTORED_LOCK = 2, RESTORED_SOCKET = 4, RESTORED_REGION_TRUNCATED = 8,
	RESTORED_REGION_REPLACED = 16, RESTORED_STATE = 32, RESTORED_LEASES = 64,
};

/* ---- the lock ---- */

/* The abstract socket address of dir: "\0coordd-instance:DIR", or with an
 * FNV-1a hash of DIR when it is too long.  Returns its length. */
static socklen_t guard_address(const char *dir, struct sockaddr_un *sa)
{
	size_t room = sizeof sa->sun_path - 1;
	int n;
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	n = snprintf(sa->sun_path + 1, room, "coordd-instance:%s", dir);
	if (n < 0 || (size_t)n >= room) {
		uint64_t h = 1469598103934665603ull;
		for (const unsigned char *p = (const unsigned char *)dir; *p; p++)
			h = (h ^ *p) * 1099511628211ull;
		n = snprintf(sa->sun_path + 1, room, "coordd-instance#%016llx", (unsigned long long)h);
	}
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Takes the abstract name of dir.  Returns 0 (taken, or held by another
 * user, whose word we cannot trust: then only the flock guards), or
 * COORD_EBUSY with the holder's pid in *pid when a broker of ours holds it. */
static int guard_take(const char *dir, pid_t *pid)
{
	struct sockaddr_un sa;
	socklen_t len = guard_address(dir, &sa);
	struct timeval tv = { 2, 0 };
	struct ucred cred;
	socklen_t clen = sizeof cred;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), c = -1, rc = 0;
	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&sa, len) == 0 && listen(fd, 64) == 0) {
		in.guard_fd = fd;
		return 0;
	}
	if (errno != EADDRINUSE)
		goto out;
	/* Someone has it: who?  Its credentials come with the connection. */
	c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c < 0 || setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
	    connect(c, (struct sockaddr *)&sa, len) < 0 ||
	    getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
		goto out;
	if (cred.uid == geteuid() || cred.uid == 0) {
		*pid = cred.pid;
		rc = COORD_EBUSY;
	}
out:
	if (c >= 0)
		close(c);
	close(fd);
	return rc;
}

/* Opens and locks DIR/coordd.lock and writes our pid in it.  Returns the
 * fd, or -1 with errno set (EWOULDBLOCK: another process has it). */
static int lock_file(const char *dir, struct stat *st)
{
	char path[PATH_MAX + 32];
	int fd, err;
	snprintf(path, sizeof path, "%s/%s", dir, COORD_LOCK_NAME);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, st) < 0)
		goto fail;
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

static void write_pid(int fd)
{
	if (ftruncate(fd, 0) == 0)
		dprintf(fd, "%d\n", (int)getpid());
}

int instance_lock(const char *dir, char *err, size_t errsize)
{
	struct stat st;
	pid_t pid = 0;
	int fd;
	snprintf(in.dir, sizeof in.dir, "%s", dir);
	fd = lock_file(dir, &st);
	if (fd < 0 && errno == EWOULDBLOCK) {
		snprintf(err, errsize, "another coordd already serves %s", dir);
		return COORD_EBUSY;
	}
	if (fd < 0) {
		snprintf(err, errsize, "cannot lock %s/%s: %s", dir, COORD_LOCK_NAME, strerror(errno));
		return COORD_ESYS;
	}
	/* The flock is ours, and yet: a broker whose directory was removed
	 * under it has its lock on a file that is gone.  It still holds the
	 * name, and puts its directory back within a second. */
	if (guard_take(dir, &pid) == COORD_EBUSY) {
		close(fd);
		snprintf(err, errsize,
		         "another coordd (pid %d) already serves %s; its directory was removed or "
		         "replaced under it, and it puts it back",
		         (int)pid, dir);
		return COORD_EBUSY;
	}
	write_pid(fd);
	in.lock_fd = fd;
	in.lock_dev = st.st_dev;
	in.lock_ino = st.st_ino;
	if (stat(dir, &st) == 0) {
		in.dir_dev = st.st_dev;
		in.dir_ino = st.st_ino;
	}
	in.next_ms = now_ms() + INSTANCE_CHECK_MS;
	in.retry_ms = INSTANCE_RETRY_MS;
	return 0;
}

void instance_unlock(void)
{
	if (in.lock_fd >= 0)
		close(in.lock_fd);
	if (in.guard_fd >= 0)
		close(in.guard_fd);
	in.lock_fd = in.guard_fd = -1;
}

/* ---- upkeep ---- */

int64_t instance_next_deadline(void)
{
	return in.lock_fd >= 0 ? in.next_ms : -1;
}

int instance_make_dirs(const char *dir)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir);
	if (len >= sizeof buf)
		return -1;
	memcpy(buf, dir, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* 1 if path (lstat) is not the file dev/ino; 0 if it is or cannot be
 * told (a directory we may not search). */
static int not_ours(const char *path, dev_t dev, ino_t ino)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT;
	return st.st_dev != dev || st.st_ino != ino;
}

/* The directory and the lock: made and taken again if they are gone.
 * Returns 0 or -1 with the reason in err. */
static int restore_dir_and_lock(struct broker *b, char *err, size_t errsize)
{
	char path[PATH_MAX + 32];
	struct stat st;
	int fd;
	if (not_ours(in.dir, in.dir_dev, in.dir_ino)) {
		if (instance_make_dirs(in.dir) < 0 || stat(in.dir, &st) < 0) {
			snprintf(err, errsize, "step=directory errno=%d reason=%s", errno,
			         log_quote(&b->log, strerror(errno)));
			return -1;
		}
		if (b->cfg.group != GROUP_NONE &&
		    group_share_dir(in.dir, b->cfg.group, path, sizeof path) < 0)
			log_event(&b->log, "error", "op=share-dir reason=%s", log_quote(&b->log, path));
		in.dir_dev = st.st_dev;
		in.dir_ino = st.st_ino;
		in.restoring |= RESTORED_DIR;
	}
	snprintf(path, sizeof path, "%s/%s", in.dir, COORD_LOCK_NAME);
	if (!not_ours(path, in.lock_dev, in.lock_ino))
		return 0;
	fd = lock_file(in.dir, &st);
	if (fd < 0) {
		/* EWOULDBLOCK: a broker an autostart started holds it for the
		 * moment it takes to find our name and exit. */
		snprintf(err, errsize, "step=lock errno=%d reason=%s", errno,
		         log_quote(&b->log, errno == EWOULDBLOCK ? "held by a starting broker"
		                                                 : strerror(errno)));
		return -1;
	}
	write_pid(fd);
	close(in.lock_fd);
	in.lock_fd = fd;
	in.lock_dev = st.st_dev;
	in.lock_ino = st.st_ino;
	in.restoring |= RESTORED_LOCK;
	return 0;
}

/* The socket, the region and LMDB.  Returns 0 or -1 with the reason in
 * err. */
static int restore_files(struct broker *b, char *err, size_t errsize)
{
	char why[PATH_MAX + 256];
	int what = 0;
	/* The socket last: a client that connects finds everything else. */
	if (region_check(b->region, &what, why, sizeof why) < 0) {
		snprintf(err, errsize, "step=region reason=%s", log_quote(&b->log, why));
		return -1;
	}
	in.restoring |= (what & REGION_TRUNCATED ? RESTORED_REGION_TRUNCATED : 0) |
	                (what & REGION_REPLACED ? RESTORED_REGION_REPLACED : 0);
	if (store_restore(b->store, &what, why, sizeof why) < 0) {
		snprintf(err, errsize, "step=lmdb reason=%s", log_quote(&b->log, why));
		return -1;
	}
	in.restoring |= (what & 1 ? RESTORED_STATE : 0) | (what & 2 ? RESTORED_LEASES : 0);
	if (!clients_socket_ok(&b->clients)) {
		if (clients_rebind(&b->clients, why, sizeof why) < 0)
			goto fail_socket;
		in.restoring |= RESTORED_SOCKET;
	}
	return 0;
fail_socket:
	snprintf(err, errsize, "step=socket reason=%s", log_quote(&b->log, why));
	return -1;
}

static void log_restored(struct broker *b)
{
	static const char *const names[] = { "directory", "lock", "socket", "region-truncated",
		                              "region-replaced", "state.mdb", "leases.mdb" };
	char what[160] = "";
	size_t used = 0;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (in.restoring & (1u << i))
			used += (size_t)snprintf(what + used, sizeof what - used, "%s%s",
			                         used ? "," : "", names[i]);
	log_event(&b->log, "instance-restored", "dir=%s what=%s pid=%d", log_quote(&b->log, in.dir),
	          what, (int)getpid());
	in.restoring = 0;
}

/* Logs once when the broker can no longer write in the directory, and
 * once when it can again. */
static void check_writable(struct broker *b)
{
	struct stat st;
	int ok = access(in.dir, W_OK | X_OK) == 0;
	int err = errno;
	if (ok == !in.unwritable)
		return;
	in.unwritable = !ok;
	if (ok) {
		log_event(&b->log, "instance-writable", "dir=%s", log_quote(&b->log, in.dir));
		return;
	}
	if (stat(in.dir, &st) < 0)
		st.st_mode = 0;
	log_event(&b->log, "instance-unwritable",
	          "dir=%s mode=%04o errno=%d reason=%s hint=%s", log_quote(&b->log, in.dir),
	          (unsigned)(st.st_mode & 07777), err, log_quote(&b->log, strerror(err)),
	          "\"held leases and grants go on; files removed from the directory cannot be "
	          "put back and autostart cannot work until coordd may write there again\"");
}

void instance_expire(struct broker *b, int64_t now)
{
	char err[PATH_MAX + 512] = "";
	int rc;
	if (in.lock_fd < 0 || now < in.next_ms)
		return;
	/* Brokers that found our name and went away: take their connections
	 * off the backlog. */
	for (int fd; in.guard_fd >= 0 && (fd = accept4(in.guard_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
		close(fd);
	rc = restore_dir_and_lock(b, err, sizeof err);
	/* Only the lock's holder may bind the socket's name. */
	if (rc == 0)
		rc = restore_files(b, err, sizeof err);
	if (in.restoring && b->cfg.group != GROUP_NONE)
		group_share_files(in.dir, b->cfg.group, &b->log);
	check_writable(b);
	in.next_ms = now + (rc < 0 ? in.retry_ms : INSTANCE_CHECK_MS);
	in.retry_ms = rc < 0 && in.retry_ms < INSTANCE_CHECK_MS / 2 ? 2 * in.retry_ms
	                                                           : INSTANCE_RETRY_MS;
	if (rc < 0) {
		if (strcmp(err, in.failure)) {
			log_event(&b->log, "instance-restore-failed", "dir=%s %s",
			          log_quote(&b->log, in.dir), err);
			snprintf(in.failure, sizeof in.failure, "%s", err);
		}
		return;
	}
	in.failure[0] = 0;
	if (in.restoring)
		log_restored(b);
}

/* ---- a socket passed by systemd ---- */

/* What fd is, for a message: "" if it is a listening SOCK_SEQPACKET
 * unix socket bound to a path (put in path), else why not. */
static const char *passed_socket_kind(int fd, char *path, size_t pathsize)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof sa;
	struct stat st;
	int domain = 0, type = 0, listening = 0;
	socklen_t ilen = sizeof domain;
	if (fstat(fd, &st) < 0)
		return "not an open descriptor";
	if (!S_ISSOCK(st.st_mode))
		return "not a socket";
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &ilen) < 0 || domain != AF_UNIX)
		return "not a unix socket (ListenStream= of a port or ListenDatagram=?)";
	ilen = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ilen) < 0 || type != SOCK_SEQPACKET)
		return type == SOCK_STREAM ? "a SOCK_STREAM socket (ListenStream=)"
		       : type == SOCK_DGRAM ? "a SOCK_DGRAM socket (ListenDatagram=)"
		                            : "a unix socket of another type";
	ilen = sizeof listening;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 || !listening)
		return "a socket that does not listen (Accept=yes passes connections)";
	memset(&sa, 0, sizeof sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
	    len <= offsetof(struct sockaddr_un, sun_path) || !sa.sun_path[0])
		return "an unnamed or abstract socket";
	snprintf(path, pathsize, "%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
	         sa.sun_path);
	return "";
}

/* 1 if path names dir/COORD_SOCKET_NAME, dir being canonical. */
static int is_socket_of(const char *path, const char *dir)
{
	char parent[PATH_MAX], real[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash || strcmp(slash + 1, COORD_SOCKET_NAME) ||
	    (size_t)(slash - path) >= sizeof parent)
		return 0;
	memcpy(parent, path, (size_t)(slash - path));
	parent[slash - path] = 0;
	return realpath(parent[0] ? parent : "/", real) && !strcmp(real, dir);
}

int instance_passed_socket(const char *dir, int *fd_out, char *err, size_t errsize)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	char path[sizeof ((struct sockaddr_un *)0)->sun_path + 1] = "", name[256];
	const char *kind;
	int rc = 0;
	*fd_out = -1;
	snprintf(name, sizeof name, "%s", names && *names ? names : "unnamed");
	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
		goto out; /* none, or meant for another process */
	if (strcmp(fds, "1")) {
		if (!strcmp(fds, "0"))
			goto out;
		snprintf(err, errsize,
		         "systemd passed %s sockets (%s); coordd serves one: "
		         "ListenSequentialPacket=%s/%s alone in coordd.socket",
		         fds, name, dir, COORD_SOCKET_NAME);
		rc = COORD_EINVAL;
		goto out;
	}
	kind = passed_socket_kind(INSTANCE_LISTEN_FD, path, sizeof path);
	if (!*kind && !is_socket_of(path, dir))
		kind = "bound to another path";
	if (*kind) {
		snprintf(err, errsize,
		         "the socket systemd passed (fd %d, %s%s%s) is %s, not a listening "
		         "SOCK_SEQPACKET unix socket at %s/%s: coordd.socket needs "
		         "ListenSequentialPacket=%s/%s",
		         INSTANCE_LISTEN_FD, name, path[0] ? ", " : "", path, kind, dir,
		         COORD_SOCKET_NAME, dir, COORD_SOCKET_NAME);
		rc = COORD_EINVAL;
		goto out;
	}
	if (fcntl(INSTANCE_LISTEN_FD, F_SETFD, FD_CLOEXEC) < 0 ||
	    fcntl(INSTANCE_LISTEN_FD, F_SETFL, O_RDWR | O_NONBLOCK) < 0) {
		snprintf(err, errsize, "the socket systemd passed (fd %d): %s", INSTANCE_LISTEN_FD,
		         strerror(errno));
		rc = COORD_ESYS;
		goto out;
	}
	*fd_out = INSTANCE_LISTEN_FD;
	rc = 1;
out:
	/* Not for the checkpoint commands this broker runs. */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return rc;
}

int instance_socket_answers(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	/* Non-blocking: with the queue full of clients that came before us
	 * (EAGAIN), a blocking connect would wait for us to accept. */
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), ok;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, COORD_SOCKET_NAME);
	if (fd < 0)
		return 1; /* cannot tell */
	ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ||
	     (errno != ECONNREFUSED && errno != ENOENT && errno != ENOTSOCK);
	close(fd);
	return ok;
}

void instance_drop_socket(int fd)
{
	/* Connections queued on it see a hang-up now, not at their timeout. */
	for (int c; (c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
		close(c);
	close(fd);
}
