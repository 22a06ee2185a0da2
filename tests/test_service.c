/* coordd as a service, with real brokers.  Socket activation is tested by
 * doing what systemd does: the test binds and listens on DIR/coordd.sock,
 * puts the socket at fd 3 with LISTEN_PID and LISTEN_FDS, and execs
 * coordd.  A client that connected before the broker was started is
 * served; the one-broker lock holds between an activated broker and one
 * started by hand or by a client's autostart, in either order and when
 * they race; a passed socket of the wrong kind is refused before anything
 * in the directory is touched.  Then the log: rotated at --log-max-bytes
 * under many grants with no line lost or split, reopened on SIGHUP after
 * an external mv, and sent to the journal when stderr is its stream. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord.h"
#include "harness.h"

static struct harness h;
static pid_t children[16];
static int nchildren;

static void setup(void)
{
	harness_init(&h);
	nchildren = 0;
}

static int signal_brokers_of_dir(int sig);

static void teardown(void)
{
	for (int i = 0; i < nchildren; i++) {
		if (children[i] > 0 && kill(children[i], SIGTERM) == 0)
			waitpid(children[i], NULL, 0);
	}
	/* A daemon left by a failed test would put the directory back. */
	signal_brokers_of_dir(SIGKILL);
	harness_fini(&h);
}

TestSuite(service, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ---- */

/* A socket of `type` bound at DIR/name, listening unless listening is 0. */
static int bind_at(int type, const char *name, int listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", harness_path(&h, name));
	unlink(sa.sun_path); /* as systemd does for a socket file in the way */
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
	          "cannot bind %s: %s", sa.sun_path, strerror(errno));
	cr_assert(!listening || listen(fd, 64) == 0, "listen: %s", strerror(errno));
	return fd;
}

/* Starts coordd --dir DIR ARGS... (NULL-terminated), stderr appended to
 * DIR/broker.log.  With passed >= 0, as systemd does for coordd.socket:
 * that socket at fd 3 and LISTEN_PID, LISTEN_FDS=nfds (fd 4 on is a copy
 * of /dev/null), LISTEN_FDNAMES.  env: "NAME=VALUE" strings to set, or
 * NULL. */
static pid_t spawn(int passed, int nfds, const char *const *env, const char *const *args)
{
	const char *argv[24] = { getenv("COORD_TEST_COORDD"), "--dir", h.dir };
	int argc = 3;
	pid_t pid;
	for (; args && *args && argc < 23; args++)
		argv[argc++] = *args;
	argv[argc] = NULL;
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		char num[32];
		int fd = open(harness_path(&h, "broker.log"), O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (; env && *env; env++)
			putenv((char *)*env);
		if (passed >= 0) {
			if (passed == 3)
				fcntl(3, F_SETFD, 0);
			else
				dup2(passed, 3);
			for (int i = 1; i < nfds; i++)
				dup2(open("/dev/null", O_RDONLY), 3 + i);
			snprintf(num, sizeof num, "%d", (int)getpid());
			setenv("LISTEN_PID", num, 1);
			snprintf(num, sizeof num, "%d", nfds);
			setenv("LISTEN_FDS", num, 1);
			setenv("LISTEN_FDNAMES", "coordd.sock", 1);
		}
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	if (nchildren < 16)
		children[nchildren++] = pid;
	return pid;
}

static void forget(pid_t pid)
{
	for (int i = 0; i < nchildren; i++)
		if (children[i] == pid)
			children[i] = 0;
}

struct exit_wait {
	pid_t pid;
	int status;
};

static int exited(void *p)
{
	struct exit_wait *w = p;
	return waitpid(w->pid, &w->status, WNOHANG) == w->pid;
}

/* Waits up to 20 s for child pid to exit; returns its exit code (128 +
 * signal if killed). */
static int exit_code(pid_t pid)
{
	struct exit_wait w = { pid, 0 };
	cr_assert(harness_wait(exited, &w, 20000), "coordd (pid %d) did not exit within 20 s",
	          (int)pid);
	forget(pid);
	return WIFEXITED(w.status) ? WEXITSTATUS(w.status) : 128 + WTERMSIG(w.status);
}

/* The pid of the broker that answers on DIR/coordd.sock, or 0. */
static pid_t serving_pid(int autostart)
{
	coord_options_t o = { .dir = h.dir, .no_autostart = !autostart, .connect_timeout_ms = 10000 };
	coord_status_t st;
	coord_t *c;
	int rc;
	if (autostart)
		unsetenv("COORD_NO_AUTOSTART");
	rc = coord_connect(&c, &o);
	setenv("COORD_NO_AUTOSTART", "1", 1);
	if (rc < 0)
		return 0;
	rc = coord_status(c, &st);
	coord_disconnect(c);
	return rc < 0 ? 0 : (pid_t)st.broker_pid;
}

static int answers(void *arg)
{
	(void)arg;
	return serving_pid(0) != 0;
}

/* The inode of DIR/name, 0 if there is none. */
static ino_t inode_of(const char *name)
{
	struct stat st;
	return lstat(harness_path(&h, name), &st) == 0 ? st.st_ino : 0;
}

/* The whole of a file, NUL-terminated (malloc'd), or NULL; *len its size. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
	buf[n] = 0;
	fclose(f);
	if (len)
		*len = (size_t)n;
	return buf;
}

struct log_has {
	const char *file, *text;
};

static int log_has(void *p)
{
	struct log_has *w = p;
	char *buf = slurp(harness_path(&h, w->file), NULL);
	int found = buf && strstr(buf, w->text);
	free(buf);
	return found;
}

/* Waits up to 10 s until DIR/file holds text; returns 1 if it did. */
static int wait_log(const char *file, const char *text)
{
	struct log_has w = { file, text };
	return harness_wait(log_has, &w, 10000);
}

/* How many coordd processes run with --dir DIR; each is sent sig unless
 * it is 0 (the daemons a test started are not its children). */
static int signal_brokers_of_dir(int sig)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;
	cr_assert(d, "cannot read /proc");
	while ((e = readdir(d))) {
		char buf[4096];
		ssize_t len = e->d_name[0] >= '1' && e->d_name[0] <= '9'
		                      ? harness_read_proc(strtol(e->d_name, NULL, 10), "cmdline", buf,
		                                          sizeof buf)
		                      : -1;
		const char *base;
		if (len <= 0)
			continue;
		base = strrchr(buf, '/');
		if (strcmp(base ? base + 1 : buf, "coordd"))
			continue;
		for (char *p = buf; p < buf + len; p += strlen(p) + 1)
			if (!strcmp(p, "--dir") && p + strlen(p) + 1 < buf + len &&
			    !strcmp(p + strlen(p) + 1, h.dir)) {
				n++;
				if (sig)
					kill((pid_t)strtol(e->d_name, NULL, 10), sig);
			}
	}
	closedir(d);
	return n;
}

static int brokers_of_dir(void)
{
	return signal_brokers_of_dir(0);
}

static int one_broker(void *arg)
{
	(void)arg;
	return brokers_of_dir() == 1;
}

static int no_broker(void *arg)
{
	(void)arg;
	return brokers_of_dir() == 0;
}

/* A child that connects and asks for a write lease on key:early: the
 * result ("ok TOKEN" or "err CODE") comes on the returned fd. */
static int client_in_child(pid_t *pid)
{
	int p[2];
	cr_assert_eq(pipe(p), 0, "pipe");
	*pid = fork();
	cr_assert(*pid >= 0, "fork");
	if (*pid == 0) {
		coord_options_t o = { .dir = h.dir, .no_autostart = 1, .connect_timeout_ms = 20000 };
		coord_lease_t *l = NULL;
		coord_t *c;
		char out[64];
		int rc;
		close(p[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		rc = coord_connect(&c, &o);
		if (rc == 0)
			rc = coord_acquire(c, "key:early", COORD_WRITE, 20000, "early", &l);
		if (rc == 0)
			snprintf(out, sizeof out, "ok %llu", (unsigned long long)coord_lease_token(l));
		else
			snprintf(out, sizeof out, "err %d", rc);
		if (write(p[1], out, strlen(out)) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	return p[0];
}

static void read_reply(int fd, char *buf, size_t size)
{
	struct pollfd p = { fd, POLLIN, 0 };
	ssize_t n;
	cr_assert_eq(poll(&p, 1, 30000), 1, "the client did not answer within 30 s");
	n = read(fd, buf, size - 1);
	buf[n > 0 ? n : 0] = 0;
}

static int dgram_at(const char *name)
{
	return bind_at(SOCK_DGRAM, name, 0);
}

static ssize_t recv_within(int fd, char *buf, size_t size, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	if (poll(&p, 1, ms) != 1)
		return -1;
	return recv(fd, buf, size - 1, 0);
}

/* ---- socket activation ---- */

Test(service, an_activated_broker_serves_a_client_that_connected_before_it_started)
{
	char notify_env[600], reply[64], msg[256];
	const char *env[] = { notify_env, NULL };
	struct pollfd queued;
	pid_t client, broker;
	ino_t sock;
	int lfd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1);
	int nfd = dgram_at("notify.sock"), rfd;
	ssize_t n;

	sock = inode_of(COORD_SOCKET_NAME);
	/* No broker yet: the client's connect waits in the socket's queue. */
	rfd = client_in_child(&client);
	queued = (struct pollfd){ lfd, POLLIN, 0 };
	cr_assert_eq(poll(&queued, 1, 20000), 1,
	             "the client's connection must be queued on the socket before coordd starts");
	snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", harness_path(&h, "notify.sock"));
	broker = spawn(lfd, 1, env, NULL);

	read_reply(rfd, reply, sizeof reply);
	cr_assert_str_eq(reply, "ok 1", "the client queued before the broker started is granted "
	                                "(token 1), not: %s (see broker.log)", reply);
	cr_assert_eq(serving_pid(0), broker, "the activated coordd is the one that answers");
	n = recv_within(nfd, msg, sizeof msg, 10000);
	cr_assert(n > 0, "coordd sends READY=1 to $NOTIFY_SOCKET (Type=notify)");
	msg[n] = 0;
	cr_assert_str_eq(msg, "READY=1", "the readiness message is READY=1, not %s", msg);
	cr_assert(wait_log("broker.log", " socket=systemd"),
	          "the start line says the socket came from systemd");
	waitpid(client, NULL, 0);

	/* Stopped, it leaves systemd's socket in place: the next connection
	 * starts a broker again, and is served by it. */
	kill(broker, SIGTERM);
	cr_assert_eq(exit_code(broker), 0, "coordd stops cleanly on SIGTERM");
	n = recv_within(nfd, msg, sizeof msg, 10000);
	msg[n > 0 ? n : 0] = 0;
	cr_assert_str_eq(msg, "STOPPING=1", "coordd tells systemd it is stopping");
	cr_assert_eq(inode_of(COORD_SOCKET_NAME), sock,
	             "an activated coordd must not remove or replace the socket systemd bound");
	rfd = client_in_child(&client);
	cr_assert_eq(poll(&queued, 1, 20000), 1, "the next client queues on the same socket");
	broker = spawn(lfd, 1, NULL, NULL);
	read_reply(rfd, reply, sizeof reply);
	cr_assert_eq(strncmp(reply, "ok ", 3), 0, "the restarted broker serves it: %s", reply);
	waitpid(client, NULL, 0);
	close(lfd);
	close(nfd);
}

static int socket_file_exists(void *arg)
{
	(void)arg;
	return inode_of(COORD_SOCKET_NAME) != 0;
}

/* The same with systemd's own implementation of the protocol:
 * systemd-socket-activate listens, and execs coordd with the socket at
 * the first connection (Accept=no), as systemd does for coordd.socket. */
Test(service, systemd_socket_activate_starts_coordd_at_the_first_connection)
{
	const char *tool = "/usr/bin/systemd-socket-activate";
	char listen_arg[600], reply[64];
	pid_t pid, client;
	int rfd;
	if (access(tool, X_OK) < 0)
		cr_skip_test("%s is missing: scripts/setup.sh installs systemd", tool);
	snprintf(listen_arg, sizeof listen_arg, "--listen=%s", harness_path(&h, COORD_SOCKET_NAME));
	pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) {
		int fd = open(harness_path(&h, "broker.log"), O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(tool, tool, "--seqpacket", listen_arg, "--fdname=coordd.sock",
		      getenv("COORD_TEST_COORDD"), "--dir", h.dir, (char *)NULL);
		_exit(127);
	}
	children[nchildren++] = pid;
	cr_assert(harness_wait(socket_file_exists, NULL, 10000), "systemd-socket-activate listens");
	cr_assert_eq(brokers_of_dir(), 0, "no coordd before the first connection");
	rfd = client_in_child(&client);
	read_reply(rfd, reply, sizeof reply);
	cr_assert_str_eq(reply, "ok 1", "the first client starts coordd and is granted: %s (see "
	                                "broker.log)", reply);
	cr_assert_eq(serving_pid(0), pid, "coordd runs in the process systemd-socket-activate "
	                                  "exec'd, on the socket it passed");
	cr_assert(wait_log("broker.log", " socket=systemd"), "coordd took the passed socket");
	waitpid(client, NULL, 0);
}

Test(service, no_second_broker_beside_an_activated_one)
{
	static const char *const daemon_args[] = { "--daemon", NULL };
	int lfd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1);
	pid_t broker = spawn(lfd, 1, NULL, NULL), other;
	ino_t sock = inode_of(COORD_SOCKET_NAME);

	cr_assert(harness_wait(answers, NULL, 10000), "the activated coordd answers");
	other = spawn(-1, 0, NULL, NULL);
	cr_assert_eq(exit_code(other), 3, "coordd started by hand exits 3, already running");
	other = spawn(-1, 0, NULL, daemon_args);
	cr_assert_eq(exit_code(other), 3, "coordd --daemon (what autostart runs) exits 3");
	/* A client with autostart on finds the activated broker. */
	cr_assert_eq(serving_pid(1), broker, "a client with autostart is served by the activated "
	                                     "coordd, and starts no other");
	/* The refused ones may still be on their way out (a launcher's daemon
	 * child exits after it): wait for them. */
	cr_assert(harness_wait(one_broker, NULL, 10000), "one coordd runs for the directory");
	cr_assert_eq(inode_of(COORD_SOCKET_NAME), sock,
	             "the refused brokers never touched the socket systemd bound");
	cr_assert_eq(harness_pid_in_file((void *)harness_path(&h, COORD_LOCK_NAME)), broker,
	             "coordd.lock names the activated broker");
	close(lfd);
}

Test(service, an_activated_broker_is_refused_while_another_serves_the_directory)
{
	pid_t first, activated;
	ino_t passed;
	int lfd;
	harness_start_broker(&h, NULL);
	first = h.broker;
	/* As coordd.socket starting now would: its own socket in the way. */
	lfd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1);
	passed = inode_of(COORD_SOCKET_NAME);
	activated = spawn(lfd, 1, NULL, NULL);
	cr_assert_eq(exit_code(activated), 3, "the activated coordd exits 3: another one serves");
	cr_assert(wait_log("broker.log", "started by systemd for coordd.socket"),
	          "its message says where each broker came from");
	/* The first broker finds its socket replaced and binds it again
	 * (while lfd is open, its inode cannot be reused for the new one). */
	cr_assert(wait_log("broker.log", "event=instance-restored") &&
	          inode_of(COORD_SOCKET_NAME) != passed,
	          "the first broker puts its own socket back");
	close(lfd);
	cr_assert_eq(serving_pid(0), first, "the first broker serves, as before");
	/* The refused ones may still be on their way out (a launcher's daemon
	 * child exits after it): wait for them. */
	cr_assert(harness_wait(one_broker, NULL, 10000), "one coordd runs for the directory");
}

Test(service, an_activated_broker_and_autostarted_ones_racing_leave_exactly_one)
{
	static const char *const daemon_args[] = { "--daemon", NULL };
	for (int round = 0; round < 4; round++) {
		int lfd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1);
		pid_t launcher[3], activated = spawn(lfd, 1, NULL, NULL), winner;
		int activated_exit = -1;
		for (int i = 0; i < 3; i++)
			launcher[i] = spawn(-1, 0, NULL, daemon_args);
		for (int i = 0; i < 3; i++) {
			int code = exit_code(launcher[i]);
			cr_assert(code == 0 || code == 3,
			          "round %d: a launcher exits 0 (started) or 3 (another serves), not %d",
			          round, code);
		}
		cr_assert(harness_wait(one_broker, NULL, 10000),
		          "round %d: exactly one coordd must remain for the directory, not %d", round,
		          brokers_of_dir());
		winner = serving_pid(0);
		cr_assert(winner > 0, "round %d: the remaining broker answers", round);
		cr_assert_eq(harness_pid_in_file((void *)harness_path(&h, COORD_LOCK_NAME)), winner,
		             "round %d: the broker that answers holds the lock", round);
		if (winner != activated)
			activated_exit = exit_code(activated);
		cr_assert(winner == activated || activated_exit == 3,
		          "round %d: the activated coordd either serves or exits 3 (got %d)", round,
		          activated_exit);
		kill(winner, SIGTERM);
		if (winner == activated)
			cr_assert_eq(exit_code(activated), 0, "round %d: the winner stops", round);
		cr_assert(harness_wait(no_broker, NULL, 10000), /* a daemon is not our child */
		          "round %d: the winner stops on SIGTERM", round);
		close(lfd);
	}
}

/* Clients that came before the broker can fill the socket's queue: the
 * broker must still start (nothing of it may wait for a place there). */
Test(service, an_activated_broker_starts_with_the_socket_queue_full)
{
	int lfd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1), queued[16], n = 0;
	pid_t broker;
	cr_assert_eq(listen(lfd, 2), 0, "a short queue");
	for (; n < 16; n++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		queued[n] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s", harness_path(&h, COORD_SOCKET_NAME));
		if (connect(queued[n], (struct sockaddr *)&sa, sizeof sa) < 0) {
			cr_assert_eq(errno, EAGAIN, "a full queue refuses with EAGAIN: %s", strerror(errno));
			close(queued[n]);
			break;
		}
	}
	cr_assert(n > 0 && n < 16, "the queue filled up after %d connections", n);
	broker = spawn(lfd, 1, NULL, NULL);
	cr_assert(wait_log("broker.log", " event=start "),
	          "coordd starts with its socket's queue full (see broker.log)");
	cr_assert(harness_wait(answers, NULL, 10000), "and serves");
	cr_assert_eq(serving_pid(0), broker, "the activated coordd serves");
	while (n--)
		close(queued[n]);
	close(lfd);
}

Test(service, a_passed_socket_replaced_at_its_path_is_dropped_for_one_of_our_own)
{
	int lfd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1), stale;
	pid_t broker;
	/* A broker started by hand took the path, and was SIGKILLed: its
	 * socket file stays, and nobody listens there. */
	stale = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 0);
	close(stale);
	broker = spawn(lfd, 1, NULL, NULL);
	cr_assert(harness_wait(answers, NULL, 10000),
	          "clients reach the broker at DIR/coordd.sock (see broker.log)");
	cr_assert_eq(serving_pid(0), broker, "the activated coordd serves a socket of its own");
	cr_assert(wait_log("broker.log", "event=warning what=socket-activation"),
	          "it says why it did not serve what systemd passed");
	close(lfd);
}

enum bad_kind { BAD_STREAM, BAD_DGRAM, BAD_NOT_LISTENING, BAD_OTHER_PATH, BAD_PIPE, BAD_TWO };

ParameterizedTestParameters(service, a_passed_socket_of_the_wrong_kind_is_refused)
{
	static enum bad_kind kinds[] = { BAD_STREAM, BAD_DGRAM, BAD_NOT_LISTENING, BAD_OTHER_PATH,
		                         BAD_PIPE, BAD_TWO };
	return cr_make_param_array(enum bad_kind, kinds, sizeof kinds / sizeof kinds[0]);
}

ParameterizedTest(enum bad_kind *kind, service, a_passed_socket_of_the_wrong_kind_is_refused)
{
	static const char *const said[] = {
		[BAD_STREAM] = "is a SOCK_STREAM socket (ListenStream=)",
		[BAD_DGRAM] = "is a SOCK_DGRAM socket (ListenDatagram=)",
		[BAD_NOT_LISTENING] = "is a socket that does not listen",
		[BAD_OTHER_PATH] = "is bound to another path",
		[BAD_PIPE] = "is not a socket",
		[BAD_TWO] = "systemd passed 2 sockets (coordd.sock); coordd serves one",
	};
	char want[512];
	pid_t broker;
	int fd, p[2];
	char *log;
	switch (*kind) {
	case BAD_STREAM: fd = bind_at(SOCK_STREAM, COORD_SOCKET_NAME, 1); break;
	case BAD_DGRAM: fd = bind_at(SOCK_DGRAM, COORD_SOCKET_NAME, 0); break;
	case BAD_NOT_LISTENING: fd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 0); break;
	case BAD_OTHER_PATH: fd = bind_at(SOCK_SEQPACKET, "other.sock", 1); break;
	case BAD_PIPE:
		cr_assert_eq(pipe(p), 0, "pipe");
		fd = p[0];
		break;
	default: fd = bind_at(SOCK_SEQPACKET, COORD_SOCKET_NAME, 1); break;
	}
	broker = spawn(fd, *kind == BAD_TWO ? 2 : 1, NULL, NULL);
	cr_assert_eq(exit_code(broker), 1, "coordd refuses what was passed: exit status 1");
	log = slurp(harness_path(&h, "broker.log"), NULL);
	cr_assert(log && strstr(log, said[*kind]), "its message says what is wrong ('%s'): %s",
	          said[*kind], log ? log : "(nothing)");
	snprintf(want, sizeof want, "ListenSequentialPacket=%s/%s", h.dir, COORD_SOCKET_NAME);
	cr_assert(strstr(log, want), "and names the line coordd.socket needs (%s): %s", want, log);
	if (*kind != BAD_TWO)
		cr_assert(strstr(log, "not a listening SOCK_SEQPACKET unix socket"),
		          "and what coordd takes: %s", log);
	free(log);
	cr_assert_eq(inode_of(COORD_LOCK_NAME), 0, "refused before the lock was taken");
	cr_assert_eq(inode_of(COORD_SHM_NAME), 0, "refused before anything was opened");
	close(fd);
}

/* ---- the log ---- */

struct token_run {
	long long first, last;
	int lines;
};

/* Checks that every line of DIR/name is whole; collects the tokens of its
 * grant lines, which must count up by one. */
static struct token_run check_lines(const char *name, size_t *size)
{
	struct token_run r = { -1, -1, 0 };
	char *buf = slurp(harness_path(&h, name), size), *p;
	cr_assert(buf, "%s must exist", name);
	cr_assert(*size == 0 || buf[*size - 1] == '\n', "%s ends in the middle of a line", name);
	for (p = buf; *p;) {
		char *nl = strchr(p, '\n');
		*nl = 0;
		cr_assert(!strncmp(p, "ts=", 3) && strstr(p, " event="), "%s: a line is not whole: '%s'",
		          name, p);
		if (strstr(p, " event=grant ")) {
			long long t = harness_log_field(p, "token");
			cr_assert(r.last < 0 || t == r.last + 1,
			          "%s: grant token=%lld follows token=%lld: a line was lost", name, t, r.last);
			if (r.first < 0)
				r.first = t;
			r.last = t;
		}
		r.lines++;
		p = nl + 1;
	}
	free(buf);
	return r;
}

Test(service, the_log_is_rotated_at_its_cap_under_many_grants)
{
	static const char *const args[] = { "--log", "file", "--log-max-bytes", "8192", NULL };
	const size_t cap = 8192;
	coord_options_t o = { .dir = h.dir, .no_autostart = 1 };
	struct token_run old, cur;
	size_t old_size, cur_size;
	coord_t *c;
	uint64_t last = 0;
	spawn(-1, 0, NULL, args);
	cr_assert(harness_wait(answers, NULL, 10000), "coordd answers (see broker.log)");
	cr_assert_eq(coord_connect(&c, &o), 0, "connect");
	for (int i = 0; i < 400; i++) {
		coord_lease_t *l;
		cr_assert_eq(coord_acquire(c, "key:rotate", COORD_WRITE, 5000, "rotation test", &l), 0,
		             "grant %d", i);
		last = coord_lease_token(l);
		cr_assert_eq(coord_release(l), 0, "release %d", i);
	}
	coord_disconnect(c);
	/* 800 lines of about 150 bytes: rotated many times. */
	old = check_lines(COORD_LOG_NAME ".1", &old_size);
	cur = check_lines(COORD_LOG_NAME, &cur_size);
	cr_assert_eq(cur.last, (long long)last,
	             "the last grant (token %llu) is in coordd.log: its line is written before "
	             "its answer", (unsigned long long)last);
	cr_assert_eq(cur.first, old.last + 1, "coordd.log begins where coordd.log.1 ends");
	/* One client in turn: a batch is a line or two, so a file is past
	 * the cap by at most the log-rotated line and one batch. */
	cr_assert_leq(old_size, cap + 1024, "coordd.log.1 is %zu bytes, cap %zu", old_size, cap);
	cr_assert_leq(cur_size, cap + 1024, "coordd.log is %zu bytes, cap %zu", cur_size, cap);
	cr_assert_geq(old_size, cap / 2, "coordd.log.1 was filled up to the cap, not %zu", old_size);
}

static int file_exists(void *name)
{
	return inode_of(name) != 0;
}

Test(service, sighup_after_an_external_mv_begins_a_new_log)
{
	static const char *const args[] = { "--log", "file", NULL };
	coord_options_t o = { .dir = h.dir, .no_autostart = 1 };
	char moved[512];
	coord_lease_t *l;
	coord_t *c;
	char *buf;
	pid_t broker = spawn(-1, 0, NULL, args);
	cr_assert(harness_wait(answers, NULL, 10000), "coordd answers (see broker.log)");
	cr_assert_eq(coord_connect(&c, &o), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:hup", COORD_WRITE, 5000, "before-hup", &l), 0, "grant");
	cr_assert_eq(coord_release(l), 0, "release");
	snprintf(moved, sizeof moved, "%s", harness_path(&h, "coordd.log-rotated-away"));
	cr_assert_eq(rename(harness_path(&h, COORD_LOG_NAME), moved), 0, "mv: %s", strerror(errno));
	cr_assert_eq(kill(broker, SIGHUP), 0, "kill -HUP");
	cr_assert(harness_wait(file_exists, COORD_LOG_NAME, 10000),
	          "after SIGHUP coordd writes a new coordd.log");
	cr_assert_eq(coord_acquire(c, "key:hup", COORD_WRITE, 5000, "after-hup", &l), 0,
	             "the broker still serves after SIGHUP");
	cr_assert_eq(coord_release(l), 0, "release");
	coord_disconnect(c);
	buf = slurp(harness_path(&h, COORD_LOG_NAME), NULL);
	cr_assert(strstr(buf, " event=log-reopened ") && strstr(buf, "label=after-hup") &&
	          !strstr(buf, "before-hup"), "the new coordd.log holds what came after: %s", buf);
	free(buf);
	buf = slurp(moved, NULL);
	cr_assert(strstr(buf, "label=before-hup") && !strstr(buf, "after-hup"),
	          "the moved file holds what came before: %s", buf);
	free(buf);
}

/* Starts coordd with stderr appended to DIR/broker.log, JOURNAL_STREAM
 * naming that file (matching) or another, and --journal-socket. */
static pid_t start_with_journal_stream(int matching, char *env_buf, size_t size)
{
	static const char *env[2];
	static char sock_arg[600];
	static const char *args[] = { "--journal-socket", sock_arg, NULL };
	struct stat st;
	int fd = open(harness_path(&h, "broker.log"), O_WRONLY | O_CREAT | O_APPEND, 0600);
	cr_assert(fd >= 0 && fstat(fd, &st) == 0, "broker.log");
	close(fd);
	snprintf(env_buf, size, "JOURNAL_STREAM=%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino + (matching ? 0 : 1));
	snprintf(sock_arg, sizeof sock_arg, "%s", harness_path(&h, "journal.sock"));
	env[0] = env_buf;
	return spawn(-1, 0, env, args);
}

Test(service, under_systemd_the_log_goes_to_the_journal_with_its_fields)
{
	char env[128], dg[8192];
	int jfd = dgram_at("journal.sock"), got_start = 0, got_grant = 0;
	coord_options_t o = { .dir = h.dir, .no_autostart = 1 };
	coord_lease_t *l;
	coord_t *c;
	char *buf;
	ssize_t n;
	start_with_journal_stream(1, env, sizeof env);
	cr_assert(harness_wait(answers, NULL, 10000), "coordd answers (see broker.log)");
	cr_assert_eq(coord_connect(&c, &o), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:journal", COORD_WRITE, 5000, "j", &l), 0, "grant");
	coord_release(l);
	coord_disconnect(c);
	while ((!got_start || !got_grant) && (n = recv_within(jfd, dg, sizeof dg, 10000)) > 0) {
		dg[n] = 0;
		cr_assert(strstr(dg, "SYSLOG_IDENTIFIER=coordd\n") && strstr(dg, "\nPRIORITY="),
		          "each datagram names coordd and a priority: %s", dg);
		if (strstr(dg, "COORD_EVENT=start\n"))
			got_start = strstr(dg, "COORD_LOG=journal\n") && strstr(dg, "PRIORITY=5\n");
		if (strstr(dg, "COORD_EVENT=grant\n"))
			got_grant = strstr(dg, "COORD_RESOURCE=key:journal\n") &&
			            strstr(dg, "COORD_MODE=write\n") && strstr(dg, "MESSAGE=event=grant ");
	}
	cr_assert(got_start, "the start line reached the journal, as COORD_EVENT=start, log=journal");
	cr_assert(got_grant, "the grant reached the journal with its fields as COORD_ fields");
	buf = slurp(harness_path(&h, "broker.log"), NULL);
	cr_assert(!buf || !strstr(buf, "event=grant"),
	          "with the journal, lines do not also go to stderr: %s", buf);
	free(buf);
	close(jfd);
}

Test(service, a_journal_stream_that_is_not_stderr_leaves_the_log_on_stderr)
{
	char env[128], dg[512];
	int jfd = dgram_at("journal.sock");
	start_with_journal_stream(0, env, sizeof env);
	cr_assert(wait_log("broker.log", " event=start ") && wait_log("broker.log", " log=stderr "),
	          "JOURNAL_STREAM names another file: the start line goes to stderr");
	cr_assert_lt(recv_within(jfd, dg, sizeof dg, 0), 0, "and nothing to the journal");
	close(jfd);
}
