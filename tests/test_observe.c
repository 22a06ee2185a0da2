/* Watching and metrics against a real broker: `coordctl metrics` checked
 * by promtool, the broker's HTTP endpoint scraped by a real Prometheus and
 * held open by hostile scrapers, the event feed read by `coordctl watch
 * --json` (hostile names, a broker restart, a reader that is lapped), and
 * the full-screen view run in tmux. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbutil.h"
#include "harness.h"
#include "protocol.h"

static struct harness h;
static pid_t helper = 0; /* a watch or a Prometheus started by the test */
static char tmux_sock[300]; /* a tmux server started by the test, or "" */

static void observe_setup(void)
{
	harness_init(&h);
}

static void observe_teardown(void)
{
	if (helper > 0) {
		kill(helper, SIGKILL);
		waitpid(helper, NULL, 0);
		helper = 0;
	}
	if (tmux_sock[0]) {
		char cmd[400];
		snprintf(cmd, sizeof cmd, "tmux -S %s kill-server 2>/dev/null", tmux_sock);
		if (system(cmd) != 0) {
			/* gone already: q ended it */
		}
		tmux_sock[0] = 0;
	}
	harness_fini(&h);
}

TestSuite(observe, .init = observe_setup, .fini = observe_teardown, .timeout = 120);

/* A hostile name and label: invalid UTF-8 (0xff), ESC, a quote, a
 * backslash and a newline. */
static const char hostile[] = "h\xff\x1b[31m\"\\\nx";

/* Starts argv (NULL-terminated) with stdout and stderr to file `out` (or
 * inherited, NULL) as `helper`. */
static void spawn(const char *out, const char *const *argv)
{
	helper = fork();
	cr_assert(helper >= 0, "fork failed");
	if (helper == 0) {
		if (out) {
			int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (fd < 0)
				_exit(126);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execvp(argv[0], (char **)argv);
		_exit(127);
	}
}

/* The whole of a file, in a static buffer ("" if it cannot be read). */
static const char *slurp(const char *path)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? 0 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

struct file_has {
	const char *path, *text;
};

static int file_has(void *arg)
{
	struct file_has *f = arg;
	return strstr(slurp(f->path), f->text) != NULL;
}

/* Waits until `coordctl metrics` says `text`. */
static int metrics_say(void *arg)
{
	static char out[1 << 16];
	return harness_coordctl(out, sizeof out, "metrics") == 0 && strstr(out, arg);
}

static int command_ok(void *cmd)
{
	return system(cmd) == 0;
}

/* ---- metrics ---- */

Test(observe, metrics_request_decoding)
{
	coord_msg_metrics m = { { COORD_MSG_METRICS, 9 }, COORD_METRICS_WATCH, 0 };
	struct request r;
	cr_assert_eq(proto_decode(&m, sizeof m, &r), 0, "METRICS{WATCH} decodes");
	cr_assert_eq(r.flags, COORD_METRICS_WATCH, "its flags are kept");
	m.flags = 0;
	cr_assert_eq(proto_decode(&m, sizeof m, &r), 0, "METRICS{0} decodes");
	cr_assert_eq(r.flags, 0, "no flags");
	m.flags = 2;
	cr_assert_eq(proto_decode(&m, sizeof m, &r), COORD_EINVAL, "an unknown flag is refused");
	cr_assert_eq(proto_decode(&m, sizeof m - 1, &r), COORD_EPROTO, "a short METRICS is malformed");
	cr_assert_eq(proto_decode(&m, sizeof m.h, &r), COORD_EPROTO, "a bare header is malformed");
}

Test(observe, metrics_pass_promtool_and_count)
{
	static char out[1 << 16];
	char db[512], wal[600], *name = NULL;
	coord_t *c;
	coord_lease_t *l;
	struct actor w, r;
	FILE *f;
	int st;
	harness_start_broker(&h, NULL);
	/* A SQLite-looking file with a hostile name and a 12345-byte WAL. */
	snprintf(db, sizeof db, "%s/%s.db", h.dir, hostile);
	snprintf(wal, sizeof wal, "%s-wal", db);
	f = fopen(db, "w");
	cr_assert(f, "cannot create the database file");
	fwrite("SQLite format 3", 1, 16, f);
	fclose(f);
	f = fopen(wal, "w");
	cr_assert(f, "cannot create the WAL file");
	for (int i = 0; i < 12345; i++)
		putc('w', f);
	fclose(f);
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	/* No checkpoint of this fake database after its write lease. */
	cr_assert_eq(coord_set_policy(c, db, &(coord_policy_t){ .policy = COORD_POLICY_NONE }), 0,
	             "policy none");
	cr_assert_eq(coord_acquire(c, db, COORD_WRITE, 1000, hostile, &l), 0, "acquire the db");
	coord_release(l);
	actor_start(&w, &h);
	actor_start(&r, &h);
	actor_send(&w, "acquire write -1 key:observe-queue");
	cr_assert_str_eq(actor_reply(&w, 5000), "ok 2", "the writer holds key:observe-queue");
	actor_send(&r, "acquire read -1 key:observe-queue");
	cr_assert(harness_wait_count(&h, "key:observe-queue", COORD_READ, 1, 1),
	          "the reader waits behind the writer");

	st = harness_coordctl(out, sizeof out, "metrics | promtool check metrics");
	cr_assert_eq(st, 0, "promtool check metrics failed (%d): %s", st, out);
	st = harness_coordctl(out, sizeof out, "metrics");
	cr_assert_eq(st, 0, "coordctl metrics failed: %s", out);
	cr_assert(strstr(out, "coord_leases{mode=\"write\"} 1\n"), "one writer holds: %s", out);
	cr_assert(strstr(out, "coord_waiters{mode=\"read\"} 1\n"), "one reader waits: %s", out);
	cr_assert(strstr(out, "coord_grants_total{mode=\"write\"} 2\n"), "two write grants: %s", out);
	cr_assert(strstr(out, "coord_recalls_total{mode=\"write\"} 1\n"), "the writer was recalled");
	cr_assert(strstr(out, "coord_wait_seconds_count{mode=\"write\"} 2\n"), "wait histogram");
	cr_assert(asprintf(&name,
	                   "coord_wal_bytes{resource=\"%s/h\\\\xff\\\\x1b[31m\\\"\\\\\\\\\\\\x0ax.db\","
	                   "kind=\"sqlite\"} 12345\n",
	                   h.dir) > 0);
	cr_assert(strstr(out, name), "the WAL of the hostile file, escaped, is 12345 bytes: want %s in %s",
	          name, out);
	free(name);
	cr_assert(strstr(out, "coord_broker_clients "), "clients gauge");
	cr_assert(!strchr(out, '\x1b'), "no raw ESC in the metrics text");

	/* The reader times out; its count moves. */
	actor_kill(&r);
	actor_start(&r, &h);
	actor_send(&r, "acquire read 50 key:observe-queue");
	cr_assert_str_eq(actor_reply(&r, 5000), "err COORD_ETIMEDOUT", "the reader must time out");
	cr_assert(harness_wait(metrics_say, "coord_timeouts_total{mode=\"read\"} 1\n", 5000),
	          "a timeout is counted");
	actor_kill(&w);
	cr_assert(harness_wait(metrics_say, "coord_reclaims_total{mode=\"write\",reason=\"", 5000),
	          "the killed writer's lease is counted as a reclaim");
	actor_stop(&r);
	coord_disconnect(c);
}

/* The port of `event=metrics-listen addr=127.0.0.1:PORT` in the log. */
static int metrics_port(void)
{
	const char *log = slurp(harness_path(&h, "broker.log"));
	const char *at = strstr(log, "event=metrics-listen addr=127.0.0.1:");
	cr_assert(at, "the broker logs the metrics address: %s", log);
	return atoi(at + strlen("event=metrics-listen addr=127.0.0.1:"));
}

static int dial_tcp(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* GET path from 127.0.0.1:port into buf; returns the bytes read or -1. */
static ssize_t http_get(int port, const char *path, char *buf, size_t size)
{
	char req[512];
	size_t got = 0;
	int fd = dial_tcp(port), n;
	if (fd < 0)
		return -1;
	n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t k;
		if (poll(&p, 1, 10000) != 1)
			break;
		k = read(fd, buf + got, size - 1 - got);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	buf[got] = 0;
	return (ssize_t)got;
}

/* A free TCP port on loopback, for Prometheus's own listener. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	          getsockname(fd, (struct sockaddr *)&a, &len) == 0, "cannot find a free port");
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

struct prom_query {
	int port;
	const char *query, *want;
};

static int prom_answers(void *arg)
{
	struct prom_query *q = arg;
	static char buf[1 << 16];
	char path[512];
	snprintf(path, sizeof path, "/api/v1/query?query=%s", q->query);
	return http_get(q->port, path, buf, sizeof buf) > 0 && strstr(buf, q->want);
}

static const char readme_rules[] =
        "groups:\n"
        "  - name: coord\n"
        "    rules:\n"
        "      - alert: CoordWriterWaitingTooLong\n"
        "        expr: coord_longest_wait_seconds{mode=\"write\"} > 30\n"
        "        labels:\n"
        "          severity: warning\n"
        "        annotations:\n"
        "          summary: \"a writer has waited {{ $value }}s for a coord lease ({{ $labels.instance "
        "}}); see coordctl list\"\n"
        "      - alert: CoordWalTooLarge\n"
        "        expr: coord_wal_bytes > 100 * 1024 * 1024\n"
        "        for: 10m\n"
        "        labels:\n"
        "          severity: warning\n"
        "        annotations:\n"
        "          summary: \"the WAL of {{ $labels.resource }} is {{ $value | humanize1024 }}B; see "
        "coordctl show\"\n";

Test(observe, prometheus_scrapes_the_broker)
{
	char addr[400], cfg[300], data[300], rules[300], check[400], web[64], body[1 << 16];
	coord_t *c;
	coord_lease_t *l;
	int port, prom;
	FILE *f;
	harness_start_broker(&h, "--metrics-listen", "127.0.0.1:0", NULL);
	port = metrics_port();
	cr_assert(http_get(port, "/metrics", body, sizeof body) > 0 &&
	          strstr(body, "HTTP/1.0 200 OK\r\n") && strstr(body, "\r\n\r\n# HELP coord_"),
	          "GET /metrics answers the metrics: %s", body);
	cr_assert(http_get(port, "/nothing", body, sizeof body) > 0 && strstr(body, " 404 "),
	          "other paths are 404: %s", body);
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:scraped", COORD_WRITE, 1000, "p", &l), 0, "acquire");

	/* The README's two alert rules, word for word. */
	snprintf(rules, sizeof rules, "%s/coord-alerts.yml", h.dir);
	f = fopen(rules, "w");
	cr_assert(f, "cannot write %s", rules);
	fputs(readme_rules, f);
	fclose(f);
	snprintf(check, sizeof check, "promtool check rules %s >/dev/null", rules);
	cr_assert_eq(system(check), 0, "promtool check rules refuses the README's rules");
	snprintf(cfg, sizeof cfg, "%s/prometheus.yml", h.dir);
	snprintf(data, sizeof data, "%s/prometheus-data", h.dir);
	f = fopen(cfg, "w");
	cr_assert(f, "cannot write %s", cfg);
	fprintf(f, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
	           "scrape_configs:\n  - job_name: coord\n    static_configs:\n"
	           "      - targets: ['127.0.0.1:%d']\n"
	           "rule_files: ['%s']\n", port, rules);
	fclose(f);
	prom = free_port();
	snprintf(web, sizeof web, "--web.listen-address=127.0.0.1:%d", prom);
	snprintf(addr, sizeof addr, "--storage.tsdb.path=%s", data);
	{
		char config_arg[400];
		const char *argv[] = { "prometheus", config_arg, addr, web, NULL };
		snprintf(config_arg, sizeof config_arg, "--config.file=%s", cfg);
		spawn(harness_path(&h, "prometheus.log"), argv);
	}
	struct prom_query up = { prom, "up%7Bjob%3D%22coord%22%7D", "\"1\"]" };
	cr_assert(harness_wait(prom_answers, &up, 60000),
	          "Prometheus did not see the broker's target up within 60 s (see %s)",
	          harness_path(&h, "prometheus.log"));
	struct prom_query held = { prom, "coord_leases%7Bmode%3D%22write%22%7D", "\"1\"]" };
	cr_assert(harness_wait(prom_answers, &held, 30000),
	          "Prometheus did not scrape coord_leases{mode=\"write\"} 1 within 30 s");
	struct prom_query alerts = { prom, "ALERTS", "\"status\":\"success\"" };
	cr_assert(harness_wait(prom_answers, &alerts, 10000), "Prometheus answers queries");
	cr_assert(http_get(prom, "/api/v1/rules", body, sizeof body) > 0 &&
	          strstr(body, "CoordWriterWaitingTooLong") && strstr(body, "CoordWalTooLarge"),
	          "Prometheus loaded the two alert rules: %s", body);
	coord_release(l);
	coord_disconnect(c);
}

Test(observe, hostile_scrapers_never_stall_the_broker)
{
	int port, fds[12], n = 0;
	char body[1 << 16], junk[4095];
	coord_t *c;
	coord_lease_t *l;
	harness_start_broker(&h, "--metrics-listen", "127.0.0.1:0", NULL);
	port = metrics_port();
	/* Connections that never send a request, past the cap of 8. */
	for (n = 0; n < 12; n++) {
		fds[n] = dial_tcp(port);
		cr_assert(fds[n] >= 0, "connect %d", n);
	}
	/* Leases go on meanwhile. */
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	for (int i = 0; i < 100; i++) {
		cr_assert_eq(coord_acquire(c, "key:busy", COORD_WRITE, 1000, "", &l), 0,
		             "acquire %d while scrapers hang", i);
		coord_release(l);
	}
	/* The idle ones are closed within the time limit; a scrape works
	 * again. */
	for (int i = 0; i < n; i++) {
		struct pollfd p = { fds[i], POLLIN, 0 };
		char b;
		cr_assert_eq(poll(&p, 1, 15000), 1, "connection %d was never closed", i);
		cr_assert(read(fds[i], &b, 1) <= 0, "an idle connection gets no answer");
		close(fds[i]);
	}
	/* A request as large as the limit without its end is refused (the
	 * broker reads all of it, so its close is no reset). */
	{
		int fd = dial_tcp(port);
		size_t got = 0;
		memset(junk, 'a', sizeof junk);
		memcpy(junk, "GET /", 5);
		cr_assert(fd >= 0, "connect");
		if (write(fd, junk, sizeof junk) < 0) {
			/* the broker may close before reading it all */
		}
		for (ssize_t k; (k = read(fd, body + got, sizeof body - 1 - got)) > 0;)
			got += (size_t)k;
		body[got] = 0;
		close(fd);
		cr_assert(strstr(body, " 431 "), "an oversized request gets 431: %s", body);
	}
	cr_assert(http_get(port, "/metrics", body, sizeof body) > 0 &&
	          strstr(body, "coord_grants_total{mode=\"write\"} 100\n"),
	          "a scrape works after the hostile ones: %s", body);
	coord_disconnect(c);
}

/* ---- the event feed ---- */

/* Runs python over the JSON lines of `path`: every line is strict UTF-8
 * and parses, no string holds a lone surrogate (a strict parser refuses
 * those), and `expect` (a Python expression over `events`, where
 * raw(e, KEY) is KEY's exact bytes, from KEY_hex when there is one)
 * holds. */
static int python_check(const char *path, const char *expect)
{
	char script[512], *cmd = NULL;
	FILE *f;
	int st;
	snprintf(script, sizeof script, "%s/check.py", h.dir);
	f = fopen(script, "w");
	cr_assert(f, "cannot write %s", script);
	fprintf(f,
	        "import json, sys\n"
	        "events = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]\n"
	        "json.dumps(events, ensure_ascii=False).encode('utf-8')\n"
	        "def raw(e, k): return bytes.fromhex(e[k + '_hex']) if k + '_hex' in e "
	        "else e[k].encode('utf-8')\n"
	        "ok = %s\n"
	        "sys.exit(0 if ok else 1)\n",
	        expect);
	fclose(f);
	cr_assert(asprintf(&cmd, "/usr/bin/python3 %s %s", script, path) > 0);
	st = system(cmd);
	free(cmd);
	return st;
}

static void start_watch_json(const char *out)
{
	const char *argv[] = { getenv("COORD_TEST_COORDCTL"), "watch", "--json", NULL };
	spawn(out, argv);
	cr_assert(harness_wait(metrics_say, "coord_feed_watchers 1\n", 10000),
	          "coordctl watch --json never asked to be woken (see %s)", out);
}

Test(observe, watch_json_is_valid_for_hostile_names)
{
	char out[300], listed[300], list[8192], expect[1024];
	FILE *f;
	coord_t *c;
	coord_lease_t *l;
	snprintf(out, sizeof out, "%s/watch.json", h.dir);
	harness_start_broker(&h, NULL);
	start_watch_json(out);
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	{
		char key[64];
		snprintf(key, sizeof key, "key:%s", "k\xff\x1b\"\\");
		cr_assert_eq(coord_acquire(c, key, COORD_WRITE, 1000, hostile, &l), 0, "acquire");
	}
	/* list --json of the same lease, to hold watch to the same rule */
	snprintf(listed, sizeof listed, "%s/list.json", h.dir);
	cr_assert_eq(harness_coordctl(list, sizeof list, "list --json"), 0, "list --json: %s", list);
	f = fopen(listed, "w");
	cr_assert(f && fputs(list, f) >= 0 && fclose(f) == 0, "cannot write %s", listed);
	coord_release(l);
	struct file_has released = { out, "\"event\":\"release\"" };
	cr_assert(harness_wait(file_has, &released, 10000), "no release event: %s", slurp(out));
	cr_assert(!strchr(slurp(out), '\x1b'), "raw ESC in the JSON output: %s", slurp(out));
	cr_assert_eq(python_check(out, "any(e['event'] == 'grant' and "
	                               "e['label'] == 'h\\ufffd\\x1b[31m\"\\\\\\nx' and "
	                               "raw(e, 'label') == b'h\\xff\\x1b[31m\"\\\\\\nx' and "
	                               "e['resource'] == 'key:k\\ufffd\\x1b\"\\\\' and "
	                               "raw(e, 'resource') == b'key:k\\xff\\x1b\"\\\\' and "
	                               "e['mode'] == 'write' and e['lease_id'] > 0 "
	                               "for e in events) and "
	                               "any(e['event'] == 'release' for e in events)"),
	             0, "the JSON lines must parse and give back the exact bytes: %s", slurp(out));
	snprintf(expect, sizeof expect,
	         "(lambda l: any(e['event'] == 'grant' and all(e[k] == l[k] for k in "
	         "('resource', 'resource_hex', 'label', 'label_hex')) for e in events))"
	         "(json.load(open('%s'))['leases'][0])",
	         listed);
	cr_assert_eq(python_check(out, expect), 0,
	             "watch --json must write the hostile name and label as list --json does:\n"
	             "%s\nlist --json: %s",
	             slurp(out), list);
	coord_disconnect(c);
}

Test(observe, watch_survives_a_broker_restart)
{
	char out[300];
	coord_t *c;
	coord_lease_t *l;
	snprintf(out, sizeof out, "%s/watch.json", h.dir);
	harness_start_broker(&h, NULL);
	start_watch_json(out);
	cr_assert_eq(harness_stop_broker(&h), 0, "the broker stops cleanly");
	struct file_has stopped = { out, "\"event\":\"stop\"" };
	cr_assert(harness_wait(file_has, &stopped, 10000), "no stop event: %s", slurp(out));
	harness_start_broker(&h, NULL);
	struct file_has started = { out, "\"event\":\"start\"" };
	cr_assert(harness_wait(file_has, &started, 10000), "no start event: %s", slurp(out));
	/* The watch asks the new broker to wake it, then sees its grants. */
	cr_assert(harness_wait(metrics_say, "coord_feed_watchers 1\n", 10000),
	          "the watch did not register with the new broker");
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:after-restart", COORD_READ, 1000, "", &l), 0, "acquire");
	struct file_has granted = { out, "key:after-restart" };
	cr_assert(harness_wait(file_has, &granted, 10000), "no grant after the restart: %s",
	          slurp(out));
	coord_release(l);
	coord_disconnect(c);
	cr_assert_eq(python_check(out, "[e['event'] for e in events][:2] == ['stop', 'start'] and "
	                               "all(b['seq'] == a['seq'] + 1 for a, b in "
	                               "zip(events, events[1:])) and "
	                               "events[1]['epoch'] > events[0]['epoch']"),
	             0, "one sequence across the restart, a new epoch: %s", slurp(out));
}

Test(observe, checkpoints_are_events_and_metrics)
{
	char out[300], db[300];
	coord_t *c;
	coord_lease_t *l;
	sqlite3 *w;
	snprintf(out, sizeof out, "%s/watch.json", h.dir);
	snprintf(db, sizeof db, "%s/ck.db", h.dir);
	/* A WAL database with frames in it; the open connection keeps its WAL. */
	w = sqlite_open(db);
	sqlite_exec(w, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(i);"
	               "WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 2000)"
	               " INSERT INTO t SELECT v FROM s");
	harness_start_broker(&h, NULL);
	start_watch_json(out);
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, db, COORD_WRITE, 1000, "", &l), 0, "acquire the database");
	coord_release(l); /* the checkpoint runs after the last write lease */
	struct file_has done = { out, "\"event\":\"checkpoint\"" };
	cr_assert(harness_wait(file_has, &done, 20000), "no checkpoint event: %s", slurp(out));
	cr_assert_eq(python_check(out, "any(e['event'] == 'checkpoint-start' and e['kind'] == 'sqlite'"
	                               " for e in events) and "
	                               "any(e['event'] == 'checkpoint' and e['code'] is None and "
	                               "e['kind'] == 'sqlite' and e['wal_before'] > 0 and "
	                               "e['duration_us'] > 0 for e in events)"),
	             0, "a checkpoint-start and a successful checkpoint with its WAL: %s", slurp(out));
	cr_assert(harness_wait(metrics_say, "coord_checkpoints_total{result=\"ok\"} 1\n", 5000),
	          "the checkpoint is counted");
	cr_assert(metrics_say("coord_checkpoint_duration_seconds_count 1\n"), "and timed");
	cr_assert(metrics_say("kind=\"sqlite\"} "), "its WAL has a gauge");
	sqlite3_close(w);
	coord_disconnect(c);
}

Test(observe, a_lapped_reader_is_told)
{
	coord_t *c, *r;
	coord_feed_t *f;
	coord_event_t ev;
	coord_lease_t *l;
	harness_start_broker(&h, NULL);
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_connect(&r, NULL), 0, "connect the reader");
	cr_assert_eq(coord_feed_open(r, &f), 0, "open the feed");
	/* 2 events a lease: 3000 leases lap a ring of 4096 records. */
	for (int i = 0; i < 3000; i++) {
		cr_assert_eq(coord_acquire(c, "key:lap", COORD_WRITE, 1000, "", &l), 0, "acquire");
		coord_release(l);
	}
	cr_assert_eq(coord_status(c, &(coord_status_t){ 0 }), 0, "status: the releases are read");
	cr_assert_eq(coord_feed_next(f, &ev, 5000), 1, "an event");
	cr_assert_eq(ev.type, COORD_EVENT_LOST, "the first thing a lapped reader sees is LOST, not %s",
	             coord_event_name(ev.type));
	cr_assert_gt(ev.lost, 0, "LOST says how many");
	cr_assert_eq(coord_feed_next(f, &ev, 5000), 1, "then events again");
	cr_assert(ev.type == COORD_EVENT_GRANT || ev.type == COORD_EVENT_RELEASE,
	          "then the events it can still read, not %s", coord_event_name(ev.type));
	coord_feed_close(f);
	coord_disconnect(r);
	coord_disconnect(c);
}

/* ---- the full-screen view ---- */

struct pane_has {
	const char *capture;       /* a shell command writing the pane to f.path */
	struct file_has f;
};

static int pane_has(void *arg)
{
	struct pane_has *p = arg;
	return system(p->capture) == 0 && file_has(&p->f);
}

Test(observe, watch_screen_in_tmux)
{
	char sock[300], cmd[1024], pane[300], resize[400];
	struct actor a;
	coord_t *c;
	coord_lease_t *l, *bidi, *many[15];
	snprintf(sock, sizeof sock, "%s/tmux.sock", h.dir);
	snprintf(tmux_sock, sizeof tmux_sock, "%s", sock);
	snprintf(pane, sizeof pane, "%s/pane.txt", h.dir);
	harness_start_broker(&h, NULL);
	snprintf(cmd, sizeof cmd,
	         "tmux -S %s new-session -d -x 120 -y 30 'COORD_DIR=%s COORD_NO_AUTOSTART=1 %s watch'",
	         sock, h.dir, getenv("COORD_TEST_COORDCTL"));
	cr_assert_eq(system(cmd), 0, "tmux new-session failed: %s", cmd);
	cr_assert(harness_wait(metrics_say, "coord_feed_watchers 1\n", 10000),
	          "coordctl watch did not start in tmux");
	actor_start(&a, &h);
	actor_send(&a, "acquire write -1 key:on-screen");
	cr_assert_str_eq(actor_reply(&a, 5000), "ok 1", "the actor holds key:on-screen");
	snprintf(cmd, sizeof cmd, "tmux -S %s capture-pane -p > %s", sock, pane);
	struct pane_has shown = { cmd, { pane, "key:on-screen" } };
	cr_assert(harness_wait(pane_has, &shown, 10000), "the lease never showed on the screen: %s",
	          slurp(pane));
	cr_assert(strstr(slurp(pane), "write  held"), "shown as a held write lease: %s", slurp(pane));
	/* A label that would clear the screen is shown as text. */
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:evil", COORD_READ, 1000, "L\x1b[2J\xffx", &l), 0,
	             "acquire with a hostile label");
	struct pane_has escaped = { cmd, { pane, "L\\x1b[2J\\xffx" } };
	cr_assert(harness_wait(pane_has, &escaped, 10000), "the label is not shown escaped: %s",
	          slurp(pane));
	/* by the rule of every table: a backslash doubled (so "\x1b" cannot
	 * be faked), a right-to-left override shown as its code */
	cr_assert_eq(coord_acquire(c, "key:bidi", COORD_READ, 1000, "B\\x1b\xe2\x80\xaeZ", &bidi), 0,
	             "acquire with a backslash and a bidirectional override in the label");
	struct pane_has bidi_shown = { cmd, { pane, "B\\\\x1b\\u202eZ" } };
	cr_assert(harness_wait(pane_has, &bidi_shown, 10000),
	          "the label is not shown by the tables' rule: %s", slurp(pane));
	coord_release(bidi);
	/* 15 more leases fit in 30 lines, not in 12: a smaller terminal gets a
	 * shorter list, and no line wider than it. */
	for (int i = 0; i < 15; i++) {
		char key[32];
		snprintf(key, sizeof key, "key:many-%02d", i);
		cr_assert_eq(coord_acquire(c, key, COORD_READ, 1000, "", &many[i]), 0, "acquire %s", key);
	}
	struct pane_has all = { cmd, { pane, "key:many-14" } };
	cr_assert(harness_wait(pane_has, &all, 10000), "17 leases fit in 30 lines: %s", slurp(pane));
	snprintf(resize, sizeof resize, "tmux -S %s resize-window -x 40 -y 12", sock);
	cr_assert_eq(system(resize), 0, "resize-window failed");
	struct pane_has narrow = { cmd, { pane, "... 9 more" } };
	cr_assert(harness_wait(pane_has, &narrow, 10000), "no redraw for 12 lines: %s", slurp(pane));
	for (const char *at = slurp(pane), *nl; *at; at = nl + 1) {
		nl = strchrnul(at, '\n');
		cr_assert_leq(nl - at, 40, "a line wider than the 40 columns: %.*s", (int)(nl - at), at);
		if (!*nl)
			break;
	}
	for (int i = 0; i < 15; i++)
		coord_release(many[i]);
	coord_release(l);
	coord_disconnect(c);
	actor_stop(&a);
	struct pane_has gone = { cmd, { pane, "0 held, 0 waiting" } };
	cr_assert(harness_wait(pane_has, &gone, 10000),
	          "the released lease never left the screen: %s", slurp(pane));
	snprintf(cmd, sizeof cmd, "tmux -S %s send-keys q", sock);
	cr_assert_eq(system(cmd), 0, "send-keys failed");
	snprintf(cmd, sizeof cmd, "! tmux -S %s has-session 2>/dev/null", sock);
	cr_assert(harness_wait(command_ok, cmd, 10000), "q did not end coordctl watch");
}
