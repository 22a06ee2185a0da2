/* Checkpoint orchestration: deciding when a database file is checkpointed,
 * keeping conflicting leases out while it runs, and running it off the
 * event loop.
 *
 * A checkpoint runs in a child process forked for it (checkpoint.c does
 * the work there), in its own process group, with a time limit after which
 * the whole group is SIGKILLed.  A crash or hang inside libsqlite3,
 * libduckdb or an `exec:` command therefore costs the broker nothing: the
 * child's result arrives through a pipe and its exit through a pidfd, both
 * in the broker's epoll set.  The child closes every inherited descriptor
 * first, so it never keeps client sockets or the instance lock alive.
 *
 * While a checkpoint runs, writers are held back; readers too for DuckDB
 * (which needs the file to itself) and for the SQLite modes that wait for
 * readers (RESTART, TRUNCATE).  Whatever happens to the checkpoint, the
 * block is lifted when the child is gone: a failing checkpointer is
 * reported, never allowed to wedge the resource.  Nothing here deletes or
 * truncates a WAL by hand. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "checkpoint.h"
#include "log.h"

struct checkpoint_job {
	struct lt_resource *res;
	pid_t pid;
	int pidfd, pipe_fd;
	struct watch watch;
	int64_t started_ms, deadline_ms;
	int64_t started_us;
	int killed;
	int kind, policy, sqlite_mode;
	struct client *requester;  /* coordctl checkpoint, or NULL */
	uint32_t seq;
	struct checkpoint_job *next;
};

static struct checkpoint_job *jobs;
static int shutting_down;

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void checkpointer_init(struct broker *b)
{
	b->duckdb_ok = checkpoint_duckdb_probe(b->cfg.duckdb_lib, b->duckdb_why, sizeof b->duckdb_why);
	if (!b->duckdb_ok)
		log_event("warning", "component=duckdb checkpoints=off reason=%s",
		          log_quote(b->duckdb_why));
}

void checkpointer_resource_open(struct broker *b, struct lt_resource *res)
{
	struct resource_ext *x = res->ext;
	(void)b;
	x->kind = res->name[0] == '/' ? checkpoint_detect_kind(res->name) : COORD_KIND_PLAIN;
}

/* What a checkpoint of res would do now: fills kind/policy/mode and returns
 * 1 if one applies, 0 if not (with the reason in why). */
static int plan(struct broker *b, struct lt_resource *res, int *kind, int *policy, int *mode,
                const char **why)
{
	struct resource_ext *x = res->ext;
	*why = NULL;
	*policy = (int)x->rec.policy;
	*mode = x->rec.policy == COORD_POLICY_SQLITE ? (int)x->rec.sqlite_mode : CKPT_SQLITE_DEFAULT_MODE;
	if (res->name[0] != '/') {
		*why = "not a file";
		return 0;
	}
	/* The file may have been created since the resource was opened. */
	x->kind = checkpoint_detect_kind(res->name);
	*kind = x->kind;
	switch (*policy) {
	case COORD_POLICY_NONE:
		*why = "policy none";
		return 0;
	case COORD_POLICY_EXEC:
		return 1;
	case COORD_POLICY_SQLITE:
		*kind = COORD_KIND_SQLITE;
		return 1;
	case COORD_POLICY_DUCKDB:
		*kind = COORD_KIND_DUCKDB;
		break;
	default:
		if (*kind == COORD_KIND_PLAIN) {
			*why = "plain file";
			return 0;
		}
	}
	if (*kind == COORD_KIND_DUCKDB && !b->duckdb_ok) {
		*why = b->duckdb_why;
		return 0;
	}
	return 1;
}

static int block_bits(int kind, int policy, int mode)
{
	if (policy == COORD_POLICY_EXEC || kind == COORD_KIND_DUCKDB)
		return LT_BLOCK_WRITERS | LT_BLOCK_READERS;
	if (mode == COORD_SQLITE_RESTART || mode == COORD_SQLITE_TRUNCATE)
		return LT_BLOCK_WRITERS | LT_BLOCK_READERS;
	return LT_BLOCK_WRITERS;
}

static void send_resource_info(struct broker *b, struct client *c, uint32_t seq,
                               struct lt_resource *res, const char *name,
                               const struct store_resource *rec, int kind, int status)
{
	union {
		coord_msg_resource_info i;
		char raw[COORD_MSG_MAX];
	} m;
	size_t nl = strlen(name), cl = strlen(rec->command), ml = strlen(rec->message);
	char *p = m.raw + sizeof m.i;
	memset(&m.i, 0, sizeof m.i);
	m.i.h = (coord_msg_hdr){ COORD_MSG_RESOURCE_INFO, seq };
	m.i.status = status;
	m.i.kind = (uint32_t)kind;
	m.i.policy = rec->policy;
	m.i.sqlite_mode = rec->policy == COORD_POLICY_SQLITE ? rec->sqlite_mode : CKPT_SQLITE_DEFAULT_MODE;
	m.i.timeout_ms = rec->timeout_ms ? rec->timeout_ms : b->cfg.checkpoint_timeout_ms;
	if (res) {
		struct resource_ext *x = res->ext;
		m.i.checkpoint_state = x->job != NULL;
		m.i.token = res->token;
		m.i.holders = (uint64_t)(res->readers + res->writers);
		m.i.waiters = res->nwaiters;
	} else {
		m.i.token = rec->token_ceiling;
	}
	m.i.checkpoints = rec->checkpoints;
	m.i.last_at_ms = rec->last_at_ms;
	m.i.last_duration_us = rec->last_duration_us;
	m.i.last_result = rec->last_result;
	m.i.duckdb_available = (uint32_t)b->duckdb_ok;
	m.i.wal_before = rec->checkpoints ? rec->wal_before : -1;
	m.i.wal_after = rec->checkpoints ? rec->wal_after : -1;
	m.i.name_len = (uint16_t)nl;
	m.i.command_len = (uint16_t)cl;
	memcpy(p, name, nl);
	memcpy(p + nl, rec->command, cl);
	if (!b->duckdb_ok && (kind == COORD_KIND_DUCKDB || rec->policy == COORD_POLICY_DUCKDB)) {
		/* Say plainly why DuckDB checkpoints are off. */
		int n = snprintf(p + nl + cl, COORD_MSG_MAX - sizeof m.i - nl - cl,
		                 "DuckDB checkpoints are off: %s", b->duckdb_why);
		ml = n < 0 ? 0 : (size_t)n;
	} else {
		memcpy(p + nl + cl, rec->message, ml);
	}
	m.i.message_len = (uint16_t)ml;
	client_send(b, c, &m, sizeof m.i + nl + cl + ml);
}

/* The SQLite mode, or "-" when SQLite is not what runs. */
static const char *job_mode(const struct checkpoint_job *job)
{
	if (job->policy == COORD_POLICY_EXEC || job->kind != COORD_KIND_SQLITE)
		return "-";
	return checkpoint_sqlite_mode_name(job->sqlite_mode);
}

/* Runs in the forked child: never returns. */
static void child_main(struct broker *b, int out_fd, const struct ckpt_request *req)
{
	struct ckpt_result res;
	sigset_t none;
	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (dup2(out_fd, 3) < 0)
		_exit(120);
	close_range(4, ~0u, 0);
	(void)b;
	memset(&res, 0, sizeof res);
	checkpoint_run(req, &res);
	if (write(3, &res, sizeof res) != (ssize_t)sizeof res)
		_exit(121);
	_exit(0);
}

static void start_job(struct broker *b, struct lt_resource *res, struct client *requester,
                      uint32_t seq, int kind, int policy, int mode)
{
	struct resource_ext *x = res->ext;
	struct checkpoint_job *job = NULL;
	struct ckpt_request req = {
		.path = res->name,
		.kind = kind,
		.policy = policy,
		.sqlite_mode = mode,
		.command = x->rec.command,
		.duckdb_lib = b->cfg.duckdb_lib,
	};
	int pipefd[2] = { -1, -1 };
	uint32_t limit = x->rec.timeout_ms ? x->rec.timeout_ms : b->cfg.checkpoint_timeout_ms;

	job = calloc(1, sizeof *job);
	if (!job || pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		goto fail;
	job->res = res;
	job->kind = kind;
	job->policy = policy;
	job->sqlite_mode = mode;
	job->requester = requester;
	job->seq = seq;
	job->started_ms = broker_now_ms();
	job->started_us = now_us();
	job->deadline_ms = job->started_ms + limit;
	job->pipe_fd = pipefd[0];
	fflush(NULL);
	job->pid = fork();
	if (job->pid < 0)
		goto fail;
	if (job->pid == 0)
		child_main(b, pipefd[1], &req);
	close(pipefd[1]);
	pipefd[1] = -1;
	setpgid(job->pid, job->pid); /* also done in the child: whichever runs first */
	job->pidfd = (int)syscall(SYS_pidfd_open, job->pid, 0);
	job->watch = (struct watch){ WATCH_CHECKPOINT, job };
	if (job->pidfd < 0 || broker_watch(b, job->pidfd, &job->watch, EPOLLIN) < 0) {
		kill(job->pid, SIGKILL);
		waitpid(job->pid, NULL, 0);
		goto fail;
	}
	x->job = job;
	job->next = jobs;
	jobs = job;
	lease_table_block(b->table, res, block_bits(kind, policy, mode));
	log_event("checkpoint-start", "resource=%s kind=%s policy=%s mode=%s pid=%d limit_ms=%u",
	          log_quote(res->name), checkpoint_kind_name(kind), checkpoint_policy_name(policy),
	          job_mode(job), (int)job->pid, limit);
	return;
fail:
	log_event("error", "op=checkpoint-start resource=%s errno=%s", log_quote(res->name),
	          strerror(errno));
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(job);
	if (requester)
		client_reply(b, requester, seq, COORD_ESYS);
}

void checkpointer_on_write_release(struct broker *b, struct lt_resource *res)
{
	struct resource_ext *x = res->ext;
	int kind, policy, mode;
	const char *why;
	if (shutting_down || x->job)
		return;
	if (!plan(b, res, &kind, &policy, &mode, &why)) {
		if (x->kind == COORD_KIND_DUCKDB && why == b->duckdb_why)
			log_event("checkpoint-skip", "resource=%s reason=%s", log_quote(res->name),
			          log_quote(why));
		return;
	}
	/* The writer was exclusive: nobody else holds the resource now. */
	start_job(b, res, NULL, 0, kind, policy, mode);
}

void checkpointer_on_turn(struct broker *b, struct lt_resource *res, struct client *c,
                          uint32_t seq)
{
	struct resource_ext *x = res->ext;
	int kind, policy, mode;
	const char *why;
	if (!plan(b, res, &kind, &policy, &mode, &why)) {
		log_event("checkpoint-skip", "resource=%s reason=%s", log_quote(res->name), log_quote(why));
		send_resource_info(b, c, seq, res, res->name, &x->rec, x->kind, COORD_ENOTSUP);
		return;
	}
	start_job(b, res, c, seq, kind, policy, mode);
}

static void finish_job(struct broker *b, struct checkpoint_job *job)
{
	struct lt_resource *res = job->res;
	struct resource_ext *x = res->ext;
	struct ckpt_result r;
	ssize_t n;
	int status = 0, rc;

	memset(&r, 0, sizeof r);
	waitpid(job->pid, &status, 0);
	n = read(job->pipe_fd, &r, sizeof r);
	if (job->killed) {
		r.status = COORD_ECHECKPOINT;
		r.wal_after = -1;
		snprintf(r.message, sizeof r.message, "timed out after %lld ms; checkpointer killed",
		         (long long)(broker_now_ms() - job->started_ms));
	} else if (n != (ssize_t)sizeof r) {
		r.status = COORD_ECHECKPOINT;
		r.wal_before = r.wal_after = -1;
		if (WIFSIGNALED(status))
			snprintf(r.message, sizeof r.message, "checkpointer died of signal %d",
			         WTERMSIG(status));
		else
			snprintf(r.message, sizeof r.message, "checkpointer exited with status %d",
			         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	r.message[sizeof r.message - 1] = 0;
	x->rec.checkpoints++;
	x->rec.last_at_ms = (uint64_t)broker_wall_ms();
	x->rec.last_duration_us = (uint64_t)(now_us() - job->started_us);
	x->rec.last_result = r.status;
	x->rec.wal_before = r.wal_before;
	x->rec.wal_after = r.wal_after;
	snprintf(x->rec.message, sizeof x->rec.message, "%s", r.message);
	rc = store_resource_save(b->store, res->name, &x->rec);
	if (rc == 0)
		x->stored = 1;
	log_event(r.status ? "checkpoint-failed" : "checkpoint",
	          "resource=%s kind=%s mode=%s result=%s duration_us=%llu wal_before=%lld "
	          "wal_after=%lld message=%s",
	          log_quote(res->name), checkpoint_kind_name(job->kind), job_mode(job),
	          r.status ? coord_proto_errname(r.status) : "ok",
	          (unsigned long long)x->rec.last_duration_us, (long long)r.wal_before,
	          (long long)r.wal_after, log_quote(r.message));

	epoll_ctl(b->epfd, EPOLL_CTL_DEL, job->pidfd, NULL);
	close(job->pidfd);
	close(job->pipe_fd);
	for (struct checkpoint_job **p = &jobs; *p; p = &(*p)->next) {
		if (*p == job) {
			*p = job->next;
			break;
		}
	}
	x->job = NULL;
	if (job->requester)
		send_resource_info(b, job->requester, job->seq, res, res->name, &x->rec, job->kind,
		                   r.status);
	free(job);
	/* Lift the block whatever the result: a failed checkpoint must never
	 * wedge the resource.  This dispatches the waiters. */
	lease_table_block(b->table, res, 0);
}

void checkpointer_event(struct broker *b, struct checkpoint_job *job)
{
	finish_job(b, job);
}

int64_t checkpointer_next_deadline(struct broker *b)
{
	int64_t d = -1;
	(void)b;
	for (struct checkpoint_job *j = jobs; j; j = j->next)
		if (!j->killed && (d < 0 || j->deadline_ms < d))
			d = j->deadline_ms;
	return d;
}

void checkpointer_expire(struct broker *b, int64_t now_ms)
{
	(void)b;
	for (struct checkpoint_job *j = jobs; j; j = j->next) {
		if (!j->killed && j->deadline_ms <= now_ms) {
			j->killed = 1;
			log_event("checkpoint-timeout", "resource=%s pid=%d", log_quote(j->res->name),
			          (int)j->pid);
			kill(-j->pid, SIGKILL);
			kill(j->pid, SIGKILL);
		}
	}
}

void checkpointer_client_gone(struct broker *b, struct client *c)
{
	(void)b;
	for (struct checkpoint_job *j = jobs; j; j = j->next)
		if (j->requester == c)
			j->requester = NULL;
}

void checkpointer_shutdown(struct broker *b)
{
	shutting_down = 1;
	while (jobs) {
		jobs->killed = 1;
		kill(-jobs->pid, SIGKILL);
		kill(jobs->pid, SIGKILL);
		finish_job(b, jobs);
	}
}

/* ---- admin requests: show, policy, checkpoint ---- */

static void handle_show(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_resource *res = lease_table_find(b->table, req->name);
	coord_msg_reply end = { { COORD_MSG_END, req->seq }, 0, 0 };
	if (res) {
		struct resource_ext *x = res->ext;
		server_send_resource_leases(b, c, req->seq, res);
		if (req->name[0] == '/')
			x->kind = checkpoint_detect_kind(req->name);
		send_resource_info(b, c, req->seq, res, req->name, &x->rec, x->kind, 0);
	} else {
		struct store_resource rec;
		int rc = store_resource_load(b->store, req->name, &rec);
		int kind = req->name[0] == '/' ? checkpoint_detect_kind(req->name) : COORD_KIND_PLAIN;
		if (rc < 0 && rc != COORD_ENOENT) {
			client_reply(b, c, req->seq, rc);
			return;
		}
		send_resource_info(b, c, req->seq, NULL, req->name, &rec, kind, 0);
	}
	client_send(b, c, &end, sizeof end);
}

static void handle_policy(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_resource *res = lease_table_find(b->table, req->name);
	struct store_resource rec, *r = &rec;
	int rc;
	if (res) {
		r = &((struct resource_ext *)res->ext)->rec;
	} else {
		rc = store_resource_load(b->store, req->name, &rec);
		if (rc < 0 && rc != COORD_ENOENT) {
			client_reply(b, c, req->seq, rc);
			return;
		}
		rec.version = STORE_RESOURCE_VERSION;
	}
	r->policy = req->policy;
	r->sqlite_mode = req->sqlite_mode;
	r->timeout_ms = req->policy_timeout_ms;
	snprintf(r->command, sizeof r->command, "%s", req->command);
	rc = store_resource_save(b->store, req->name, r);
	if (rc == 0 && res) {
		struct resource_ext *x = res->ext;
		if (!x->stored)
			x->stored = 1;
	}
	log_event("policy", "resource=%s policy=%s mode=%s timeout_ms=%u command=%s pid=%d",
	          log_quote(req->name), checkpoint_policy_name((int)r->policy),
	          checkpoint_sqlite_mode_name((int)r->sqlite_mode), r->timeout_ms,
	          log_quote(r->command), (int)c->pid);
	client_reply(b, c, req->seq, rc);
}

static void handle_checkpoint(struct broker *b, struct client *c, const struct request *req)
{
	struct lt_lease *l = NULL;
	struct lt_waiter *w = NULL;
	struct lt_resource *res;
	int rc;
	if (req->name[0] != '/') {
		client_reply(b, c, req->seq, COORD_ENOTSUP);
		return;
	}
	if (c->waiter) {
		client_reply(b, c, req->seq, COORD_EBUSYCONN);
		return;
	}
	/* Queue like a writer, so it runs with the same exclusivity as a
	 * checkpoint on release, in FIFO order with the other requests. */
	rc = lease_table_request(b->table, req->name, c, COORD_WRITE, broker_now_ms(), -1,
	                         LT_FOR_CHECKPOINT, req->seq, "checkpoint", &l, &w);
	if (rc < 0) {
		client_reply(b, c, req->seq, rc);
		return;
	}
	if (rc == 0) {
		c->waiter = w;
		return;
	}
	res = lease_table_find(b->table, req->name);
	checkpointer_on_turn(b, res, c, req->seq);
	lease_table_maybe_close(b->table, res);
}

void checkpointer_request(struct broker *b, struct client *c, const struct request *req)
{
	switch (req->type) {
	case COORD_MSG_SHOW:
		handle_show(b, c, req);
		break;
	case COORD_MSG_POLICY:
		handle_policy(b, c, req);
		break;
	case COORD_MSG_CHECKPOINT:
		handle_checkpoint(b, c, req);
		break;
	}
}
