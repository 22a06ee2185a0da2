/* Test harness shared by the integration, crash and database tests: private
 * directories and their removal, a real broker, actors that hold leases on
 * command, and the one coordctl runner.  It is a client like any other: it
 * uses only the public calls of libcoord (the tests link libcoord_dep) and,
 * to see whether a broker accepts, a plain connect() on its socket.  Every
 * wait here is on a condition with a deadline. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *coordd_path(void)
{
	const char *p = getenv("COORD_TEST_COORDD");
	cr_assert(p && *p, "COORD_TEST_COORDD must name the coordd binary (meson test sets it)");
	return p;
}

void harness_tmpdir(char *buf, size_t size, const char *prefix)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(buf, size, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
	cr_assert(mkdtemp(buf), "cannot make a private directory from %s: %s", buf, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	if (remove(path) < 0)
		cr_log_warn("could not remove %s: %s", path, strerror(errno));
	return 0;
}

void harness_rmtree(const char *dir)
{
	/* FTW_DEPTH: a directory after what it holds; FTW_PHYS: a symlink is
	 * removed, never followed out of the tree. */
	if (nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		cr_log_warn("could not walk %s to remove it: %s", dir, strerror(errno));
}

const char *harness_file(const char *dir, const char *name)
{
	static char buf[8][512];
	static unsigned n;
	char *b = buf[n++ % 8];
	snprintf(b, sizeof buf[0], "%s/%s", dir, name);
	return b;
}

void harness_init(struct harness *h)
{
	memset(h, 0, sizeof *h);
	harness_tmpdir(h->dir, sizeof h->dir, "coord-test");
	setenv("COORD_DIR", h->dir, 1);
	setenv("COORD_BROKER", coordd_path(), 1);
	setenv("COORD_NO_AUTOSTART", "1", 1);
	h->broker = 0;
}

void harness_fini(struct harness *h)
{
	if (h->broker > 0)
		harness_stop_broker(h);
	harness_rmtree(h->dir);
}

const char *harness_path(struct harness *h, const char *name)
{
	return harness_file(h->dir, name);
}

ssize_t harness_read_proc(long pid, const char *name, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;
	snprintf(path, sizeof path, "/proc/%ld/%s", pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return n;
}

int harness_pid_in_file(void *path)
{
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

int harness_wait(int (*fn)(void *), void *arg, int deadline_ms)
{
	int64_t end = now_ms() + deadline_ms;
	int delay = 1, v;
	while (!(v = fn(arg)) && now_ms() < end) {
		poll(NULL, 0, delay);
		if (delay < 20)
			delay *= 2;
	}
	return v;
}

struct at_least {
	_Atomic long *counter;
	long want;
};

static int reached(void *p)
{
	struct at_least *a = p;
	return *a->counter >= a->want;
}

int harness_wait_at_least(_Atomic long *counter, long want, int deadline_ms)
{
	struct at_least a = { counter, want };
	return harness_wait(reached, &a, deadline_ms);
}

int harness_dial(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, COORD_SOCKET_NAME) >=
	    sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		fd = -1;
	}
	return fd;
}

static int broker_accepts(void *arg)
{
	struct harness *h = arg;
	int fd = harness_dial(h->dir);
	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

/* Starts `coordd --dir DIR` followed by the NULL-terminated arguments in
 * ap, with RLIMIT_NOFILE (soft and hard) set to nofile unless it is 0. */
static void start_broker(struct harness *h, unsigned long nofile, int dial, va_list ap)
{
	const char *argv[16] = { coordd_path(), "--dir", h->dir };
	int argc = 3;
	const char *a;
	while ((a = va_arg(ap, const char *)) && argc < 15)
		argv[argc++] = a;
	argv[argc] = NULL;

	h->broker = fork();
	cr_assert(h->broker >= 0, "fork failed");
	if (h->broker == 0) {
		struct rlimit rl = { nofile, nofile };
		char log[512];
		int fd;
		snprintf(log, sizeof log, "%s/broker.log", h->dir);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (nofile && setrlimit(RLIMIT_NOFILE, &rl) < 0)
			_exit(126);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	if (dial)
		cr_assert(harness_wait(broker_accepts, h, 10000),
		          "coordd did not accept connections on %s within 10 s (see %s/broker.log)",
		          h->dir, h->dir);
}

void harness_start_broker(struct harness *h, ...)
{
	va_list ap;
	va_start(ap, h);
	start_broker(h, 0, 1, ap);
	va_end(ap);
}

void harness_start_broker_undialed(struct harness *h, ...)
{
	va_list ap;
	va_start(ap, h);
	start_broker(h, 0, 0, ap);
	va_end(ap);
}

void harness_start_broker_nofile(struct harness *h, unsigned long nofile, ...)
{
	va_list ap;
	va_start(ap, nofile);
	start_broker(h, nofile, 1, ap);
	va_end(ap);
}

/* Sends sig (0: none) to the child *pid, reaps it and clears *pid.
 * Returns its wait status, or -1 if there was no child. */
static int end_child(pid_t *pid, int sig)
{
	int status = -1;
	if (*pid <= 0)
		return -1;
	if (sig)
		kill(*pid, sig);
	waitpid(*pid, &status, 0);
	*pid = 0;
	return status;
}

int harness_stop_broker(struct harness *h)
{
	return end_child(&h->broker, SIGTERM);
}

void harness_kill_broker(struct harness *h)
{
	end_child(&h->broker, SIGKILL);
}

int harness_count(struct harness *h, const char *resource, int mode, int waiters)
{
	coord_options_t o = { .dir = h->dir, .no_autostart = 1 };
	coord_lease_info_t *v = NULL;
	char name[COORD_NAME_MAX + 1];
	size_t n = 0;
	coord_t *c;
	int rc = coord_canonicalize(resource, name, sizeof name), count = 0;
	if (rc < 0)
		return rc;
	rc = coord_connect(&c, &o);
	if (rc < 0)
		return rc;
	rc = coord_list(c, &v, &n);
	coord_disconnect(c);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].resource, name) && v[i].waiting == waiters &&
		    (!mode || v[i].mode == mode))
			count++;
	coord_free(v);
	return count;
}

struct count_arg {
	struct harness *h;
	const char *resource;
	int mode, waiters, want;
};

static int count_reached(void *p)
{
	struct count_arg *a = p;
	return harness_count(a->h, a->resource, a->mode, a->waiters) == a->want;
}

int harness_wait_count(struct harness *h, const char *resource, int mode, int waiters, int want)
{
	struct count_arg a = { h, resource, mode, waiters, want };
	return harness_wait(count_reached, &a, 5000);
}

int harness_become(const char *user)
{
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		errno = ENOENT;
		return -1;
	}
	if (initgroups(user, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
		return -1;
	return 0;
}

static int coordctl_run(const char *user, char *out, size_t size, const char *fmt, va_list ap)
{
	const char *ctl = getenv("COORD_TEST_COORDCTL");
	char args[2048], cmd[4096], sink[256], as[128] = "";
	size_t n = 0, got;
	FILE *f;
	int st;
	cr_assert(ctl && *ctl, "COORD_TEST_COORDCTL must name the coordctl binary (meson test sets it)");
	vsnprintf(args, sizeof args, fmt, ap);
	if (user) {
		struct passwd *pw = getpwnam(user);
		cr_assert(pw, "no user %s (scripts/setup.sh creates the test users)", user);
		snprintf(as, sizeof as, "setpriv --reuid=%u --regid=%u --init-groups ",
		         (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
	}
	snprintf(cmd, sizeof cmd, "%s'%s' %s 2>&1", as, ctl, args);
	f = popen(cmd, "r");
	cr_assert(f, "cannot run `%s`: %s", cmd, strerror(errno));
	/* Read to the end, keeping what fits: coordctl never blocks on a full
	 * pipe. */
	while ((got = fread(sink, 1, sizeof sink, f)) > 0) {
		size_t room = out ? size - 1 - n : 0;
		size_t keep = got < room ? got : room;
		if (keep)
			memcpy(out + n, sink, keep);
		n += keep;
	}
	if (out)
		out[n] = 0;
	st = pclose(f);
	cr_assert(st != -1, "cannot wait for `%s`: %s", cmd, strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int harness_coordctl(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int rc;
	va_start(ap, fmt);
	rc = coordctl_run(NULL, out, size, fmt, ap);
	va_end(ap);
	return rc;
}

int harness_coordctl_as(const char *user, char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int rc;
	va_start(ap, fmt);
	rc = coordctl_run(user, out, size, fmt, ap);
	va_end(ap);
	return rc;
}

/* ---- actors ---- */

static void actor_main(int in, int out)
{
	coord_t *c = NULL;
	coord_lease_t *last = NULL;
	char line[1024];
	FILE *f = fdopen(in, "r");
	int rc = coord_connect(&c, NULL);
	if (rc < 0) {
		dprintf(out, "err %s\n", coord_errname(rc));
		_exit(1);
	}
	dprintf(out, "ready %d\n", (int)getpid());
	while (fgets(line, sizeof line, f)) {
		char mode[16], res[600];
		int timeout;
		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "acquire %15s %d %599s", mode, &timeout, res) == 3) {
			coord_lease_t *l;
			rc = coord_acquire(c, res, !strcmp(mode, "write") ? COORD_WRITE : COORD_READ,
			                   timeout, "actor", &l);
			if (rc == 0) {
				last = l;
				dprintf(out, "ok %llu\n", (unsigned long long)coord_lease_token(l));
			} else {
				dprintf(out, "err %s\n", coord_errname(rc));
			}
		} else if (!strcmp(line, "release")) {
			rc = coord_release(last);
			last = NULL;
			dprintf(out, rc == 0 ? "ok\n" : "err %s\n", coord_errname(rc));
		} else if (!strcmp(line, "valid")) {
			dprintf(out, "%d\n", coord_lease_valid(last));
		} else if (!strcmp(line, "ignore-term")) {
			signal(SIGTERM, SIG_IGN);
			dprintf(out, "ok\n");
		} else if (!strcmp(line, "recalled")) {
			dprintf(out, "%d\n", coord_lease_recalled(last));
		} else if (!strcmp(line, "exit")) {
			break;
		}
	}
	coord_disconnect(c);
	_exit(0);
}

void actor_start(struct actor *a, struct harness *h)
{
	actor_start_as(a, h, NULL);
}

void actor_start_as(struct actor *a, struct harness *h, const char *user)
{
	int cmd[2], rep[2];
	const char *r;
	(void)h;
	cr_assert(pipe(cmd) == 0 && pipe(rep) == 0, "pipe failed");
	a->pid = fork();
	cr_assert(a->pid >= 0, "fork failed");
	if (a->pid == 0) {
		close(cmd[1]);
		close(rep[0]);
		/* after becoming the user: a change of credentials clears it */
		if (user && harness_become(user) < 0) {
			dprintf(rep[1], "err cannot become %s: %s\n", user, strerror(errno));
			_exit(1);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		actor_main(cmd[0], rep[1]);
	}
	close(cmd[0]);
	close(rep[1]);
	a->cmd_fd = cmd[1];
	a->reply_fd = rep[0];
	r = actor_reply(a, 10000);
	cr_assert(!strncmp(r, "ready", 5), "actor did not connect to the broker: '%s'", r);
}

void actor_send(struct actor *a, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	buf[n++] = '\n';
	cr_assert(write(a->cmd_fd, buf, (size_t)n) == n, "cannot send command to actor %d",
	          (int)a->pid);
}

int actor_has_reply(struct actor *a)
{
	struct pollfd p = { .fd = a->reply_fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1;
}

const char *actor_reply(struct actor *a, int timeout_ms)
{
	static char line[256];
	size_t n = 0;
	int64_t end = now_ms() + timeout_ms;
	line[0] = 0;
	while (n < sizeof line - 1) {
		struct pollfd p = { .fd = a->reply_fd, .events = POLLIN };
		int64_t left = end - now_ms();
		char ch;
		if (left < 0 || poll(&p, 1, (int)left) != 1)
			break;
		if (read(a->reply_fd, &ch, 1) != 1)
			break;
		if (ch == '\n')
			break;
		line[n++] = ch;
	}
	line[n] = 0;
	return line;
}

void actor_writer_then_reader(struct harness *h, struct actor *w, struct actor *r,
                              const char *resource)
{
	const char *got;
	actor_start(w, h);
	actor_start(r, h);
	actor_send(w, "acquire write -1 %s", resource);
	got = actor_reply(w, 5000);
	cr_assert_str_eq(got, "ok 1", "the first writer of %s must be granted token 1, got '%s'",
	                 resource, got);
	actor_send(r, "acquire read -1 %s", resource);
	cr_assert(harness_wait_count(h, resource, COORD_READ, 1, 1),
	          "the reader must be queued behind the writer of %s", resource);
}

/* Ends the actor (with sig, or 0 once it was told to exit) and closes its
 * pipes. */
static void actor_end(struct actor *a, int sig)
{
	if (a->pid <= 0)
		return;
	end_child(&a->pid, sig);
	close(a->cmd_fd);
	close(a->reply_fd);
}

void actor_kill(struct actor *a)
{
	actor_end(a, SIGKILL);
}

void actor_stop(struct actor *a)
{
	if (a->pid > 0)
		actor_end(a, write(a->cmd_fd, "exit\n", 5) == 5 ? 0 : SIGKILL);
}

long long harness_log_field(const char *line, const char *key)
{
	char pat[64];
	const char *p;
	snprintf(pat, sizeof pat, " %s=", key);
	p = strstr(line, pat);
	return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

int64_t harness_log_ms(const char *line)
{
	struct tm tm = { 0 };
	int ms = 0;
	cr_assert(sscanf(line, "ts=%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	                 &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) == 7,
	          "a broker log line without a timestamp: %.80s", line);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}
