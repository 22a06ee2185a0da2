/* Test harness shared by the integration, crash and database tests.  It
 * holds the one copy of the client library these tests link (it defines
 * COORD_IMPLEMENTATION) and uses the library's private helpers to read the
 * broker's lease list the way coordctl does.  Every wait here is on a
 * condition with a deadline. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define COORD_IMPLEMENTATION
#include "harness.h"

static const char *coordd_path(void)
{
	const char *p = getenv("COORD_TEST_COORDD");
	cr_assert(p && *p, "COORD_TEST_COORDD must name the coordd binary (meson test sets it)");
	return p;
}


void harness_tmpdir(char *buf, size_t size, const char *prefix)
{
	snprintf(buf, size, "%s/%s-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", prefix);
	cr_assert(mkdtemp(buf), "mkdtemp(%s) failed: %s", buf, strerror(errno));
}

void harness_rmtree(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", dir);
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
	static char buf[8][512];
	static unsigned n;
	char *b = buf[n++ % 8];
	snprintf(b, sizeof buf[0], "%s/%s", h->dir, name);
	return b;
}

int harness_wait(int (*fn)(void *), void *arg, int deadline_ms)
{
	int64_t end = coord__now_ms() + deadline_ms;
	int delay = 1, v;
	while (!(v = fn(arg)) && coord__now_ms() < end) {
		poll(NULL, 0, delay);
		if (delay < 20)
			delay *= 2;
	}
	return v;
}

static int broker_accepts(void *arg)
{
	struct harness *h = arg;
	int fd = -1;
	if (coord__dial(h->dir, &fd) == 0) {
		close(fd);
		return 1;
	}
	return 0;
}

void harness_start_broker(struct harness *h, ...)
{
	const char *argv[16] = { coordd_path(), "--dir", h->dir };
	int argc = 3;
	const char *a;
	va_list ap;
	va_start(ap, h);
	while ((a = va_arg(ap, const char *)) && argc < 15)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;

	h->broker = fork();
	cr_assert(h->broker >= 0, "fork failed");
	if (h->broker == 0) {
		char log[512];
		int fd;
		snprintf(log, sizeof log, "%s/broker.log", h->dir);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	cr_assert(harness_wait(broker_accepts, h, 10000),
	          "coordd did not accept connections on %s within 10 s (see %s/broker.log)", h->dir,
	          h->dir);
}

int harness_stop_broker(struct harness *h)
{
	int status = -1;
	if (h->broker <= 0)
		return -1;
	kill(h->broker, SIGTERM);
	waitpid(h->broker, &status, 0);
	h->broker = 0;
	return status;
}

void harness_kill_broker(struct harness *h)
{
	if (h->broker <= 0)
		return;
	kill(h->broker, SIGKILL);
	waitpid(h->broker, NULL, 0);
	h->broker = 0;
}

int harness_list(struct harness *h, struct harness_entry *out, int max)
{
	coord_options_t o = { .dir = h->dir, .no_autostart = 1 };
	coord_msg_hdr req = { COORD_MSG_LIST, 0 };
	static char buf[COORD_MSG_MAX];
	coord_t *c;
	int rc, n = 0;

	rc = coord_connect(&c, &o);
	if (rc < 0)
		return rc;
	req.seq = ++c->seq;
	rc = coord__send(c, &req, sizeof req);
	while (rc == 0) {
		const coord_msg_lease_info *m = (const void *)buf;
		int len = coord__recv(c, req.seq, buf, sizeof buf, 5000);
		if (len < 0) {
			rc = len;
			break;
		}
		if (m->h.type == COORD_MSG_END)
			break;
		if (m->h.type != COORD_MSG_LEASE_INFO || (size_t)len < sizeof *m) {
			rc = COORD_EPROTO;
			break;
		}
		if (n < max) {
			struct harness_entry *e = &out[n];
			memset(e, 0, sizeof *e);
			e->waiter = m->kind == COORD_INFO_WAITER;
			e->mode = (int)m->mode;
			e->pid = m->pid;
			e->token = m->token;
			e->lease_id = m->lease_id;
			memcpy(e->name, buf + sizeof *m, m->name_len);
			memcpy(e->label, buf + sizeof *m + m->name_len + m->comm_len, m->label_len);
		}
		n++;
	}
	coord_disconnect(c);
	return rc < 0 ? rc : (n < max ? n : max);
}

int harness_count(struct harness *h, const char *resource, int mode, int waiters)
{
	static struct harness_entry e[1024];
	char name[COORD_NAME_MAX + 1];
	int n = harness_list(h, e, 1024), count = 0;
	if (n < 0)
		return n;
	if (coord_canonicalize(resource, name, sizeof name) < 0)
		return COORD_ENAME;
	for (int i = 0; i < n; i++)
		if (!strcmp(e[i].name, name) && e[i].waiter == waiters && (!mode || e[i].mode == mode))
			count++;
	return count;
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
		} else if (!strcmp(line, "exit")) {
			break;
		}
	}
	coord_disconnect(c);
	_exit(0);
}

void actor_start(struct actor *a, struct harness *h)
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
	int64_t end = coord__now_ms() + timeout_ms;
	line[0] = 0;
	while (n < sizeof line - 1) {
		struct pollfd p = { .fd = a->reply_fd, .events = POLLIN };
		int64_t left = end - coord__now_ms();
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

void actor_kill(struct actor *a)
{
	if (a->pid <= 0)
		return;
	kill(a->pid, SIGKILL);
	waitpid(a->pid, NULL, 0);
	close(a->cmd_fd);
	close(a->reply_fd);
	a->pid = 0;
}

void actor_stop(struct actor *a)
{
	if (a->pid <= 0)
		return;
	if (write(a->cmd_fd, "exit\n", 5) != 5)
		kill(a->pid, SIGKILL);
	waitpid(a->pid, NULL, 0);
	close(a->cmd_fd);
	close(a->reply_fd);
	a->pid = 0;
}
