/* How coordctl reaches a broker.
 *
 * Commands that look (status, list, show, revoke, doctor) never start a
 * broker.  Commands that need one (run, checkpoint, policy, limit) start
 * it themselves rather than through the library's autostart, which must
 * stay silent (the library never prints) and can only answer
 * COORD_ENOBROKER: coordctl runs the launcher `coordd --daemon --dir DIR`
 * with its stderr on a pipe, so that when the broker cannot start, the
 * admin reads coordd's own words ("state.mdb: MDB_INVALID: File is not
 * an LMDB file") and not a guess.  Once the launcher reports a broker
 * (exit 0: started; 3: another one owns the directory, and may still be
 * starting), the library connects with its autostart on, and waits for a
 * broker that is still coming up as it always does.
 *
 * A broker is started only where an instance already is (the directory
 * holds a coordd.lock or a state.mdb), in the default directory
 * (coord_instance_dir(NULL): $COORD_DIR or the per-user or shared one),
 * or with --create: a typo in --dir must not create a directory and a
 * second broker that coordinates with nobody.
 *
 * COORD_BROKER and COORD_NO_AUTOSTART are read here, as the library reads
 * them, and nowhere else in coordctl. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord_proto.h"
#include "ctl.h"
#include "share.h"

int ctl_instance_dir(char *buf, size_t size)
{
	int rc = coord_instance_dir(ctl_dir_opt, buf, size);
	return rc < 0 ? rc : 0;
}

int ctl_is_instance(const char *dir)
{
	char path[PATH_MAX + 32];
	struct stat st;
	snprintf(path, sizeof path, "%s/%s", dir, COORD_LOCK_NAME);
	if (stat(path, &st) == 0)
		return 1;
	snprintf(path, sizeof path, "%s/%s", dir, COORD_STATE_NAME);
	return stat(path, &st) == 0;
}

/* 1 if paths a and b name one directory: the same file when both exist,
 * else the same spelling (trailing slashes aside). */
static int same_dir(const char *a, const char *b)
{
	struct stat sa, sb;
	size_t la = strlen(a), lb = strlen(b);
	if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
		return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
	while (la > 1 && a[la - 1] == '/')
		la--;
	while (lb > 1 && b[lb - 1] == '/')
		lb--;
	return la == lb && !memcmp(a, b, la);
}

int ctl_default_dir(void)
{
	char def[COORD_DIR_MAX + 1];
	if (!ctl_dir_opt || !*ctl_dir_opt)
		return 1;
	return coord_instance_dir(NULL, def, sizeof def) >= 0 && same_dir(ctl_dir_opt, def);
}

int ctl_no_instance(const char *what, const char *dir, int can_create)
{
	struct stat st;
	int exists = stat(dir, &st) == 0;
	ctl_detail("%s %s, and it is not the default instance directory",
	           exists ? "there is no coord instance (no coordd.lock, no state.mdb) in"
	                  : "there is no directory",
	           dir);
	if (can_create)
		ctl_hint("check the spelling of --dir; to make a new instance there, run the command "
		         "again as `coordctl --dir %s --create ...`",
		         dir);
	else
		ctl_hint("check the spelling of --dir (%s only looks; `coordctl --dir %s --create run "
		         "...` would make a new instance there)",
		         what, dir);
	return ctl_complain(COORD_ENOBROKER, "%s: no instance in %s", what, dir);
}

int ctl_try_connect(coord_t **c)
{
	coord_options_t o = { .dir = ctl_dir_opt, .no_autostart = 1 };
	char d[COORD_DIR_MAX + 1];
	char hint[1024];
	int rc = coord_connect(c, &o);
	if (rc == COORD_EPERM && ctl_instance_dir(d, sizeof d) == 0) {
		share_explain_eperm(d, hint, sizeof hint);
		ctl_hint("%s", hint);
	}
	return rc;
}

/* ---- the launcher ---- */

/* What the launcher said on stderr, and how it ended. */
struct launch {
	char said[2048];
	size_t len;
	int status; /* its wait status */
};

static void take(struct launch *l, int fd)
{
	ssize_t n;
	while (l->len < sizeof l->said - 1 &&
	       (n = read(fd, l->said + l->len, sizeof l->said - 1 - l->len)) > 0)
		l->len += (size_t)n;
	l->said[l->len] = 0;
}

/* Runs `broker --daemon --dir dir` and waits for it to exit, keeping its
 * stderr.  Returns 0 with l->status set, or -1 (fork or pipe failed, errno
 * set). */
static int launch(const char *broker, const char *dir, struct launch *l)
{
	int p[2], devnull;
	pid_t pid;
	memset(l, 0, sizeof *l);
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
		}
		dup2(p[1], 2); /* dup2 clears close-on-exec on 2 */
		for (int s = 1; s < 65; s++)
			signal(s, SIG_DFL);
		execlp(broker, broker, "--daemon", "--dir", dir, (char *)NULL);
		fprintf(stderr, "cannot execute %s: %s\n", broker, strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	/* The daemon keeps the pipe as its stderr until it opens its log, and
	 * the launcher exits only after that (or after the daemon failed and
	 * said why): read while waiting, then what is left. */
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		pid_t w = waitpid(pid, &l->status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			l->status = 1 << 8;
			break;
		}
		if (poll(&pfd, 1, 20) > 0)
			take(l, p[0]);
	}
	take(l, p[0]);
	close(p[0]);
	return 0;
}

/* What the broker wrote to its log dir/coordd.log after byte `from`: a
 * daemon that fails once its log is open says why there, not on the
 * launcher's stderr.  Its own lines ("coordd: ...") go into l->said. */
static void take_log(struct launch *l, const char *dir, off_t from)
{
	char path[PATH_MAX + 32], buf[4096];
	ssize_t n;
	int fd;
	snprintf(path, sizeof path, "%s/%s", dir, COORD_LOG_NAME);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = pread(fd, buf, sizeof buf - 1, from);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *line = buf, *nl; *line; line = nl) {
		nl = line + strcspn(line, "\n");
		if (*nl)
			*nl++ = 0;
		if (!strncmp(line, "coordd: ", 8))
			l->len += (size_t)snprintf(l->said + l->len, sizeof l->said - l->len, "%s\n",
			                           line + 8);
		if (l->len >= sizeof l->said)
			l->len = sizeof l->said - 1;
	}
}

/* The size of dir/coordd.log now (0: none). */
static off_t log_size(const char *dir)
{
	char path[PATH_MAX + 32];
	struct stat st;
	snprintf(path, sizeof path, "%s/%s", dir, COORD_LOG_NAME);
	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* The broker the library would start. */
static const char *broker_program(void)
{
	const char *b = getenv("COORD_BROKER");
	return b && *b ? b : "coordd";
}

static int autostart_off(void)
{
	const char *e = getenv("COORD_NO_AUTOSTART");
	return e && !strcmp(e, "1");
}

/* Starts the broker of dir; returns 0 once the launcher reports one, or
 * the exit status after saying what failed (with coordd's words). */
static int start_broker(const char *what, const char *dir)
{
	const char *broker = broker_program();
	struct launch l;
	int code;
	off_t logged = log_size(dir);
	if (launch(broker, dir, &l) < 0)
		return ctl_complain(COORD_ESYS, "%s: start the broker (%s --daemon --dir %s): %s", what,
		                    broker, dir, strerror(errno));
	code = WIFEXITED(l.status) ? WEXITSTATUS(l.status) : -1;
	if (code == 0 || code == 3)
		return 0;
	if (!l.len)
		take_log(&l, dir, logged);
	/* Each line coordd wrote, as detail. */
	for (char *line = l.said, *nl; *line; line = nl) {
		nl = line + strcspn(line, "\n");
		if (*nl)
			*nl++ = 0;
		if (!strncmp(line, "coordd: ", 8))
			line += 8;
		if (*line)
			ctl_detail("coordd said: %s", line);
	}
	if (!l.len && WIFSIGNALED(l.status))
		ctl_detail("coordd was killed by signal %d", WTERMSIG(l.status));
	else if (!l.len)
		ctl_detail("coordd exited with status %d and said nothing; see %s/%s", code, dir,
		           COORD_LOG_NAME);
	if (code == 127)
		ctl_hint("install coordd on PATH, or set COORD_BROKER to its path");
	else if (code == 64)
		ctl_hint("%s refused `--daemon --dir`: it is not coordd, or another version; set "
		         "COORD_BROKER to the coordd that came with coordctl",
		         broker);
	else
		ctl_hint("fix what coordd says above, then try again (start it by hand to see more: "
		         "`%s --dir %s` stays in the foreground)",
		         broker, dir);
	return ctl_complain(COORD_ENOBROKER, "%s: start the broker (%s --daemon --dir %s)", what,
	                    broker, dir);
}

int ctl_connect(coord_t **c, int autostart, const char *what)
{
	coord_options_t o = { .dir = ctl_dir_opt, .no_autostart = 1 };
	char d[COORD_DIR_MAX + 1];
	int rc = ctl_try_connect(c), st;
	if (rc != COORD_ENOBROKER)
		goto done;
	if ((st = ctl_instance_dir(d, sizeof d)) < 0)
		return ctl_complain(st, "%s: instance directory", what);
	if (!ctl_is_instance(d) && !ctl_default_dir() && !(autostart && ctl_create))
		return ctl_no_instance(what, d, autostart);
	if (!autostart) {
		ctl_hint("%s never starts a broker: start it with `coordd --daemon --dir %s` (or run a "
		         "command that does, such as `coordctl run`)",
		         what, d);
		return ctl_complain(rc, "%s: connect to the broker of %s", what, d);
	}
	if (autostart_off()) {
		ctl_hint("COORD_NO_AUTOSTART=1 turns autostart off: start the broker with `coordd "
		         "--daemon --dir %s`, or unset COORD_NO_AUTOSTART",
		         d);
		return ctl_complain(rc, "%s: connect to the broker of %s", what, d);
	}
	if ((st = start_broker(what, d)) != 0)
		return st;
	o.no_autostart = 0; /* waits for a broker still starting */
	rc = coord_connect(c, &o);
done:
	if (rc < 0)
		return ctl_complain(rc, "%s: connect to the broker of %s", what,
		                    ctl_instance_dir(d, sizeof d) == 0 ? d : "?");
	return 0;
}
