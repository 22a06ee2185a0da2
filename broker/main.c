/* coordd: the lease broker of one instance directory.
 *
 * This file turns the command line into a running broker: it picks the
 * instance directory, makes sure exactly one broker owns it (instance.c:
 * an exclusive flock on DIR/coordd.lock and the instance's abstract socket
 * name, held for the broker's life, taken before the socket is touched),
 * optionally becomes a daemon that tells its launcher
 * when it is ready, opens LMDB and the shared region, fits --max-clients
 * to the descriptor limit, gives a shared instance's directory and files
 * to its group (group.c), and hands over to the wired-up broker in
 * broker.c.
 *
 * Under systemd: a listening socket passed by coordd.socket (socket
 * activation, instance.c) is served instead of one bound here, and taken
 * only after the lock, like a bound one; readiness goes to
 * $NOTIFY_SOCKET (Type=notify); and the log goes to the journal when
 * stderr is a journal stream (log.c).  Both protocols are a few lines of
 * socket code, written here rather than linking libsystemd.
 *
 * Exit status: 0 clean shutdown (or --daemon launcher: broker ready),
 * 1 startup failure, 3 another broker already owns the directory,
 * 64 usage error. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "adopt.h"
#include "broker.h"
#include "group.h"
#include "instance.h"
#include "log.h"
#include "metrics_http.h"

enum { EXIT_STARTUP = 1, EXIT_RUNNING = 3, EXIT_USAGE = 64 };

/* Descriptors kept free beyond those open once the broker is set up, for
 * checkpoint jobs (a pipe and a pidfd each) and short-lived opens (a
 * resource file's header, a new client's /proc/PID/stat). */
#define FD_HEADROOM 32

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: coordd [--dir DIR] [--daemon] [--max-leases N] [--max-clients N]\n"
	        "              [--duckdb-lib PATH] [--checkpoint-timeout MS] [--map-size MB]\n"
	        "              [--group NAME] [--admin-group NAME] [--metrics-listen ADDR:PORT]\n"
	        "              [--log journal|file|stderr] [--log-max-bytes N]\n"
	        "              [--journal-socket PATH]\n"
	        "\n"
	        "The coord lease broker for one instance directory.\n"
	        "  --dir DIR          instance directory (default: $COORD_DIR, else\n"
	        "                     /var/lib/coord if it is shared, else a per-user directory:\n"
	        "                     $XDG_STATE_HOME/coord, ~/.local/state/coord, or\n"
	        "                     /var/lib/coord for root)\n"
	        "  --daemon           detach; return once the broker accepts connections and\n"
	        "                     log to DIR/coordd.log (unless --log says otherwise)\n"
	        "  --max-leases N     lease table size (default 65536)\n"
	        "  --max-clients N    connected clients (default 16384; lowered to what the\n"
	        "                     descriptor limit, ulimit -n, allows: 2 per client)\n"
	        "  --duckdb-lib PATH  libduckdb.so for DuckDB checkpoints (default:\n"
	        "                     $COORD_DUCKDB_LIB, else libduckdb.so on the library path)\n"
	        "  --checkpoint-timeout MS  time limit of one checkpoint (default 60000)\n"
	        "  --map-size MB      most state.mdb may grow to (default 1024): a record per\n"
	        "                     resource ever written (about 1.4 KiB); when it is full,\n"
	        "                     new write grants fail with COORD_EFULL until coordd is\n"
	        "                     restarted with more (leases.mdb is sized for --max-leases)\n"
	        "  --group NAME       share the instance with group NAME: directory 2770, socket\n"
	        "                     0660, files 0640, all of group NAME; only root, this user\n"
	        "                     and members may connect (default: the directory's group\n"
	        "                     if it is setgid and group-writable, else a private 0700\n"
	        "                     instance)\n"
	        "  --admin-group NAME members may revoke anyone's leases (signalling another\n"
	        "                     user's process needs coordd to run as root)\n"
	        "  --log WHERE        where the event log goes: journal (the systemd journal,\n"
	        "                     each key=value a field COORD_KEY), file (DIR/coordd.log)\n"
	        "                     or stderr; default: journal when stderr is a journal\n"
	        "                     stream ($JOURNAL_STREAM), else file with --daemon, else\n"
	        "                     stderr.  SIGHUP reopens the file (after logrotate)\n"
	        "  --log-max-bytes N  before the log file would grow past N bytes it is\n"
	        "                     renamed to coordd.log.1 (the old one replaced) and a new\n"
	        "                     one is begun (default 67108864, 64 MiB; 0: never)\n"
	        "  --journal-socket PATH  the journal's socket for --log journal (default\n"
	        "                     " LOG_JOURNAL_SOCKET ")\n"
	        "  --metrics-listen ADDR:PORT  serve the metrics (coordctl metrics) over HTTP\n"
	        "                     on ADDR:PORT, e.g. 127.0.0.1:9464 (default: off)\n"
	        "Under systemd, a listening socket passed by coordd.socket (LISTEN_FDS) is\n"
	        "served, and readiness is sent to $NOTIFY_SOCKET.\n"
	        "Exit status: 0 ok, 1 startup failed, 3 already running, 64 usage.\n");
}

/* The launcher side of --daemon: fork twice, the first child waits for
 * the broker's readiness byte.  Returns in the daemon with *ready_fd set;
 * the launcher exits here. */
static void daemonize(int *ready_fd)
{
	int pipefd[2];
	pid_t pid;
	char status = EXIT_STARTUP;

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		perror("coordd: pipe");
		exit(EXIT_STARTUP);
	}
	pid = fork();
	if (pid < 0) {
		perror("coordd: fork");
		exit(EXIT_STARTUP);
	}
	if (pid > 0) {
		close(pipefd[1]);
		if (read(pipefd[0], &status, 1) != 1)
			status = EXIT_STARTUP;
		_exit(status);
	}
	close(pipefd[0]);
	setsid();
	pid = fork();
	if (pid < 0)
		_exit(EXIT_STARTUP);
	if (pid > 0)
		_exit(0);
	if (chdir("/") < 0)
		_exit(EXIT_STARTUP);
	*ready_fd = pipefd[1];
}

static void tell_launcher(int *ready_fd, char status)
{
	if (*ready_fd < 0)
		return;
	if (write(*ready_fd, &status, 1) < 0) {
		/* the launcher is gone; nothing to tell */
	}
	close(*ready_fd);
	*ready_fd = -1;
}

/* systemd's readiness protocol (sd_notify(3)): a datagram to the socket
 * named by $NOTIFY_SOCKET (a path, or '@' for an abstract name), read
 * and unset at start so that checkpoint commands do not see it. */
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

static void notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n = e ? strlen(e) : 0;
	if (n >= 2 && n < sizeof notify_addr.sun_path && (e[0] == '/' || e[0] == '@')) {
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, e, n);
		if (e[0] == '@')
			notify_addr.sun_path[0] = 0;
		notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	}
	unsetenv("NOTIFY_SOCKET");
}

static void notify(const char *state)
{
	int fd;
	if (!notify_len)
		return;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
	           notify_len) < 0) {
		/* systemd is gone or never asked: nothing to tell */
	}
	close(fd);
}

/* How many clients fit in RLIMIT_NOFILE, two descriptors each (socket and
 * pidfd), beside the descriptors open now (LMDB, the region, the log, the
 * loop, the listening socket, the spare) and FD_HEADROOM.  The limit is
 * put in *limit; returns UINT64_MAX if there is none, 0 if no client fits. */
static uint64_t clients_that_fit(uint64_t *limit)
{
	struct rlimit rl;
	struct dirent *e;
	uint64_t used = FD_HEADROOM;
	DIR *d;
	*limit = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return UINT64_MAX;
	*limit = rl.rlim_cur;
	/* Descriptors below the limit take its room (a number at or above it
	 * would have been inherited, and takes none); d's own is not kept. */
	d = opendir("/proc/self/fd");
	if (!d) /* no /proc: assume 64 open */
		return *limit > 64 + used ? (*limit - 64 - used) / 2 : 0;
	while ((e = readdir(d))) {
		unsigned long long fd = strtoull(e->d_name, NULL, 10);
		if (e->d_name[0] != '.' && fd < *limit && fd != (unsigned long long)dirfd(d))
			used++;
	}
	closedir(d);
	return *limit > used ? (*limit - used) / 2 : 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || !*s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "daemon", no_argument, NULL, 'D' },
		{ "max-leases", required_argument, NULL, 'l' },
		{ "max-clients", required_argument, NULL, 'c' },
		{ "duckdb-lib", required_argument, NULL, 'k' },
		{ "checkpoint-timeout", required_argument, NULL, 't' },
		{ "group", required_argument, NULL, 'g' },
		{ "admin-group", required_argument, NULL, 'a' },
		{ "map-size", required_argument, NULL, 'm' },
		{ "log", required_argument, NULL, 'L' },
		{ "log-max-bytes", required_argument, NULL, 'B' },
		{ "journal-socket", required_argument, NULL, 'J' },
		{ "metrics-listen", required_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	static struct broker b;
	char dirbuf[PATH_MAX], real[PATH_MAX], path[PATH_MAX + 64], err[PATH_MAX * 2 + 256] = "";
	const char *dir = NULL, *group_opt = NULL, *admin_opt = NULL, *journal_socket = NULL;
	char group_buf[64];
	int daemon_mode = 0, ready_fd = -1, locked = 0, opt, rc, status = EXIT_STARTUP;
	int log_chosen = 0, passed_fd = -1;
	enum log_target log_to = LOG_STDERR;
	uint64_t v, fit, nofile, log_max = LOG_DEFAULT_MAX_BYTES;
	char lowered[64] = "";
	struct rlimit rl;
	struct adopt_records old_leases = { 0 };
	struct store_options store_opts = { .log = &b.log };
	size_t adopted = 0;

	b.cfg.max_leases = 65536;
	b.cfg.max_waiters = 65536;
	b.cfg.max_clients = 16384;
	b.cfg.checkpoint_timeout_ms = 60000;
	while ((opt = getopt_long(argc, argv, "d:Dh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'D':
			daemon_mode = 1;
			break;
		case 'l':
			if (parse_u64(optarg, 1, 1u << 24, &v) < 0)
				goto bad_number;
			b.cfg.max_leases = b.cfg.max_waiters = v;
			break;
		case 'c':
			if (parse_u64(optarg, 1, 1u << 20, &v) < 0)
				goto bad_number;
			b.cfg.max_clients = v;
			break;
		case 'k':
			b.cfg.duckdb_lib = optarg;
			break;
		case 'g':
			group_opt = optarg;
			break;
		case 'a':
			admin_opt = optarg;
			break;
		case 'm':
			if (parse_u64(optarg, 1, 1u << 24, &v) < 0)
				goto bad_number;
			store_opts.state_map_mb = v;
			break;
		case 't':
			if (parse_u64(optarg, 1, 24u * 3600 * 1000, &v) < 0)
				goto bad_number;
			b.cfg.checkpoint_timeout_ms = (uint32_t)v;
			break;
		case 'L':
			log_chosen = 1;
			if (!strcmp(optarg, "journal"))
				log_to = LOG_JOURNAL;
			else if (!strcmp(optarg, "file"))
				log_to = LOG_FILE;
			else if (!strcmp(optarg, "stderr"))
				log_to = LOG_STDERR;
			else {
				fprintf(stderr, "coordd: --log takes journal, file or stderr, not %s\n",
				        optarg);
				return EXIT_USAGE;
			}
			break;
		case 'B':
			if (parse_u64(optarg, 0, UINT64_MAX >> 1, &log_max) < 0)
				goto bad_number;
			break;
		case 'J':
			journal_socket = optarg;
			break;
		case 'M':
			if (metrics_http_parse(optarg) < 0)
				goto bad_address;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("coordd %d.%d (protocol %d)\n", COORD_VERSION_MAJOR, COORD_VERSION_MINOR,
			       COORD_PROTO_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!b.cfg.duckdb_lib)
		b.cfg.duckdb_lib = getenv("COORD_DUCKDB_LIB");
	notify_init();
	/* The journal first, so that even a refused start is logged there;
	 * it touches nothing in the directory. */
	if (!log_chosen)
		log_to = log_stderr_is_journal() ? LOG_JOURNAL : daemon_mode ? LOG_FILE : LOG_STDERR;
	if (log_to == LOG_JOURNAL && log_open_journal(&b.log, journal_socket) < 0) {
		if (log_chosen) {
			fprintf(stderr, "coordd: --log journal: no journal socket at %s: %s\n",
			        journal_socket ? journal_socket : LOG_JOURNAL_SOCKET, strerror(errno));
			return EXIT_STARTUP;
		}
		log_to = LOG_STDERR; /* stderr is the journal's stream all the same */
	}
	if (coord_proto_resolve_dir(dir, dirbuf, sizeof dirbuf) < 0) {
		fprintf(stderr, "coordd: no instance directory: set COORD_DIR or HOME, or pass --dir\n");
		return EXIT_USAGE;
	}
	dir = dirbuf;
	b.cfg.group = b.cfg.admin_group = GROUP_NONE;
	if ((group_opt && group_lookup(group_opt, &b.cfg.group) < 0) ||
	    (admin_opt && group_lookup(admin_opt, &b.cfg.admin_group) < 0)) {
		fprintf(stderr, "coordd: no such group: %s\n",
		        group_opt && b.cfg.group == GROUP_NONE ? group_opt : admin_opt);
		return EXIT_USAGE;
	}
	umask(077);
	if (instance_make_dirs(dir) < 0 || !realpath(dir, real)) {
		fprintf(stderr, "coordd: cannot create instance directory %s: %s\n", dir, strerror(errno));
		return EXIT_STARTUP;
	}
	b.cfg.dir = real;
	/* Socket activation: only looked at here; taken after the lock. */
	rc = instance_passed_socket(real, &passed_fd, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "coordd: %s\n", err);
		log_event(&b.log, "error", "op=startup reason=%s", log_quote(&b.log, err));
		return EXIT_STARTUP;
	}
	/* A shared instance: --group, or the group of a directory that is
	 * shared already (what a client's autostart finds). */
	if (b.cfg.group == GROUP_NONE)
		b.cfg.group = group_of_dir(real);
	if (b.cfg.group != GROUP_NONE)
		b.cfg.group_name = group_name(b.cfg.group, group_buf, sizeof group_buf);

	/* Two fds per client (socket and pidfd): raise the soft limit. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	if (daemon_mode)
		daemonize(&ready_fd);

	rc = instance_lock(real, err, sizeof err);
	if (rc == COORD_EBUSY) {
		status = EXIT_RUNNING;
		if (passed_fd >= 0)
			snprintf(err + strlen(err), sizeof err - strlen(err),
			         " (this coordd was started by systemd for coordd.socket; the other was "
			         "started by hand or by a client's autostart)");
	}
	if (rc < 0)
		goto fail;
	locked = 1;
	/* Only the broker that owns the directory changes its mode. */
	if (b.cfg.group != GROUP_NONE && group_share_dir(real, b.cfg.group, err, sizeof err) < 0)
		goto fail;

	/* The log file only once the directory is ours: a second broker
	 * must never rotate the first one's log. */
	snprintf(path, sizeof path, "%s/%s", real, COORD_LOG_NAME);
	if (log_to == LOG_FILE && log_open_file(&b.log, path, log_max, daemon_mode) < 0) {
		snprintf(err, sizeof err, "cannot open %s: %s", path,
		         errno == EINVAL ? "not a regular file" : strerror(errno));
		goto fail;
	}
	if (daemon_mode) {
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (devnull < 0) {
			snprintf(err, sizeof err, "cannot open /dev/null: %s", strerror(errno));
			goto fail;
		}
		dup2(devnull, 0);
		dup2(devnull, 1);
		/* stderr stays for --log stderr, and when it is the journal's */
		if (log_to == LOG_JOURNAL && !log_stderr_is_journal())
			dup2(devnull, 2);
		close(devnull);
	}
	if (passed_fd >= 0 && !instance_socket_answers(real)) {
		/* What systemd passed was replaced at its path (by a broker
		 * started by hand, killed since): nobody can reach it. */
		log_event(&b.log, "warning",
		          "what=socket-activation dir=%s reason=%s hint=%s", log_quote(&b.log, real),
		          "\"the socket systemd passed is not the one at its path; serving a socket of "
		          "our own\"",
		          "\"systemctl restart coordd.socket once this broker has stopped\"");
		instance_drop_socket(passed_fd);
		passed_fd = -1;
	}
	if (passed_fd >= 0 && b.cfg.group != GROUP_NONE) {
		snprintf(path, sizeof path, "%s/%s", real, COORD_SOCKET_NAME);
		if (chown(path, (uid_t)-1, b.cfg.group) < 0 || chmod(path, 0660) < 0) {
			snprintf(err, sizeof err, "cannot give %s to group %s: %s", path,
			         b.cfg.group_name ? b.cfg.group_name : "?", strerror(errno));
			goto fail;
		}
	}

	store_opts.max_leases = b.cfg.max_leases;
	rc = store_open(&b.store, real, &store_opts, adopt_collect, &old_leases, &b.first_lease_id,
	                err, sizeof err);
	if (rc < 0)
		goto fail;
	rc = region_open(&b.region, real, b.cfg.max_leases, err, sizeof err);
	if (rc < 0)
		goto fail;
	if (b.cfg.group != GROUP_NONE) {
		region_set_mode(b.region, 0640);
		group_share_files(real, b.cfg.group, &b.log);
	}
	rc = broker_init(&b, err, sizeof err);
	if (rc < 0)
		goto fail;
	if (passed_fd >= 0) {
		b.clients.listen_fd = passed_fd;
		b.clients.passed = 1;
		passed_fd = -1; /* the broker's now */
	}
	/* Before anyone can connect: the leases of live holders go on. */
	adopted = adopt_leases(&b, &old_leases);
	rc = broker_listen(&b, err, sizeof err);
	if (rc < 0) {
		broker_fini(&b);
		goto fail;
	}
	/* Plan for the descriptor limit now, so that a full broker refuses
	 * clients by --max-clients and running out of descriptors stays rare. */
	fit = clients_that_fit(&nofile);
	if (fit == 0) {
		snprintf(err, sizeof err,
		         "the descriptor limit (RLIMIT_NOFILE %llu) leaves no room for clients; "
		         "raise it (ulimit -n)",
		         (unsigned long long)nofile);
		broker_fini(&b);
		goto fail;
	}
	if (fit < b.cfg.max_clients) {
		snprintf(lowered, sizeof lowered, " max_clients_wanted=%llu",
		         (unsigned long long)b.cfg.max_clients);
		b.cfg.max_clients = b.clients.max = fit;
	}
	log_event(&b.log, "start",
	          "dir=%s pid=%d max_leases=%llu max_clients=%llu%s fd_limit=%llu adopted=%zu "
	          "duckdb=%s group=%s admin_group=%s log=%s socket=%s",
	          log_quote(&b.log, real), (int)getpid(), (unsigned long long)b.cfg.max_leases,
	          (unsigned long long)b.cfg.max_clients, lowered, (unsigned long long)nofile, adopted,
	          b.jobs.duckdb_ok ? "yes" : log_quote(&b.log, b.jobs.duckdb_why),
	          b.cfg.group_name ? log_quote(&b.log, b.cfg.group_name) : "none",
	          admin_opt ? log_quote(&b.log, admin_opt) : "none", log_target_name(b.log.target),
	          b.clients.passed ? "systemd" : "bound");
	tell_launcher(&ready_fd, 0);
	notify("READY=1");

	rc = broker_run(&b);
	notify("STOPPING=1");
	status = rc < 0 ? EXIT_STARTUP : 0;
	broker_fini(&b);
	region_close(b.region);
	store_close(b.store);
	log_event(&b.log, "stop", "pid=%d", (int)getpid());
	instance_unlock();
	return status;

bad_number:
	fprintf(stderr, "coordd: bad number: %s (see coordd --help)\n", optarg);
	return EXIT_USAGE;
bad_address:
	fprintf(stderr, "coordd: --metrics-listen: not ADDR:PORT (e.g. 127.0.0.1:9464): %s\n", optarg);
	return EXIT_USAGE;
fail:
	if (status == EXIT_RUNNING)
		log_event(&b.log, "already-running", "dir=%s", log_quote(&b.log, real));
	else
		log_event(&b.log, "error", "op=startup reason=%s", log_quote(&b.log, err));
	if (!daemon_mode || ready_fd < 0 || status != EXIT_RUNNING)
		fprintf(stderr, "coordd: %s\n", err);
	tell_launcher(&ready_fd, (char)status);
	if (b.region)
		region_close(b.region);
	if (b.store)
		store_close(b.store);
	free(old_leases.v);
	if (passed_fd >= 0)
		close(passed_fd);
	if (locked)
		instance_unlock();
	return status;
}
