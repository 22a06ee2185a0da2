/* Checkpoint jobs: deciding when a database file is checkpointed, keeping
 * conflicting leases out while it runs, and running it off the event loop.
 *
 * A checkpoint runs in a child process forked for it (checkpoint_child.c
 * does the work there), in its own process group, with a time limit after
 * which the whole group is SIGKILLed.  A crash or hang inside libsqlite3,
 * libduckdb or an `exec:` command therefore costs the broker nothing: the
 * child's result arrives through a pipe and its exit through a pidfd, both
 * in the broker's epoll set.  The child closes every inherited descriptor
 * first, so it never keeps client sockets or the instance lock alive.
 *
 * While a checkpoint runs, writers are held back; readers too for DuckDB
 * (which needs the file to itself) and for the SQLite modes that wait for
 * readers (RESTART, TRUNCATE).  A job never sets those block bits itself
 * while the lease table is calling out: it returns them, and the table
 * sets them before it grants anyone else.  Whatever happens to the
 * checkpoint, the block is lifted when the child is gone: a failing
 * checkpointer is reported, never allowed to wedge the resource.  Nothing
 * here deletes or truncates a WAL by hand, and nothing here talks to
 * clients: results of requested checkpoints go to the `done` callback. */
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
#include <unistd.h>

#include "secret.h"
#include "checkpoint_child.h"
#include "checkpoint_jobs.h"
#include "events.h"
#include "resource.h"

struct ckpt_job {
	struct ckpt_jobs *jobs;
	struct lt_resource *res;
	pid_t pid;
	int pidfd, pipe_fd;
	struct watch watch;
	int64_t started_ms, deadline_ms;
	int64_t started_us;
	int killed;
	int kind, policy, sqlite_mode;
	void *requester;           /* who asked (coordctl checkpoint), or NULL */
	uint32_t seq;
	struct ckpt_job *next;
};

/* The identity of a library file, to notice it was replaced. */
static void duckdb_identity(struct ckpt_jobs *j, const struct stat *st, int found)
{
	j->duckdb_file.dev = found ? (long long)st->st_dev : 0;
	j->duckdb_file.ino = found ? (long long)st->st_ino : 0;
	j->duckdb_file.size = found ? (long long)st->st_size : 0;
	j->duckdb_file.mtime_ns =
	        found ? (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec : 0;
}

int ckpt_jobs_duckdb_check(struct ckpt_jobs *j)
{
	struct stat st;
	char where[sizeof j->duckdb_why];
	int found = checkpoint_duckdb_locate(j->duckdb_lib, &st, where, sizeof where);
	if (j->duckdb_load_failed) {
		long long dev = j->duckdb_file.dev, ino = j->duckdb_file.ino;
		long long size = j->duckdb_file.size, mtime = j->duckdb_file.mtime_ns;
		duckdb_identity(j, &st, found > 0);
		if (dev == j->duckdb_file.dev && ino == j->duckdb_file.ino &&
		    size == j->duckdb_file.size && mtime == j->duckdb_file.mtime_ns)
			return j->duckdb_ok = 0; /* the child's reason stays in duckdb_why */
		j->duckdb_load_failed = 0;
	}
	snprintf(j->duckdb_why, sizeof j->duckdb_why, "%s", where);
	return j->duckdb_ok = found != 0;
}

void ckpt_jobs_init(struct ckpt_jobs *j)
{
	if (!ckpt_jobs_duckdb_check(j))
		log_event(j->log, "warning", "component=duckdb checkpoints=off reason=%s",
		          log_quote(j->log, j->duckdb_why));
}

int ckpt_jobs_detect_kind(struct lt_resource *res)
{
	struct resource_ext *x = res->ext;
	x->kind = res->name[0] == '/' ? checkpoint_detect_kind(res->name) : COORD_KIND_PLAIN;
	return x->kind;
}

/* What a checkpoint of res would do now: fills kind/policy/mode and returns
 * 1 if one applies, 0 if not (with the reason in why). */
static int plan(struct ckpt_jobs *j, struct lt_resource *res, int *kind, int *policy, int *mode,
                const char **why)
{
	struct resource_ext *x = res->ext;
	*why = NULL;
	*policy = (int)x->rec.policy;
	*mode = x->rec.policy == COORD_POLICY_SQLITE ? (int)x->rec.sqlite_mode : COORD_SQLITE_DEFAULT;
	if (res->name[0] != '/') {
		*why = "not a file";
		return 0;
	}
	/* The file may have been created since the resource was opened. */
	*kind = ckpt_jobs_detect_kind(res);
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
	if (*kind == COORD_KIND_DUCKDB && !ckpt_jobs_duckdb_check(j)) {
		*why = j->duckdb_why;
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

/* The SQLite mode, or "-" when SQLite is not what runs. */
static const char *job_mode(const struct ckpt_job *job)
{
	if (job->policy == COORD_POLICY_EXEC || job->kind != COORD_KIND_SQLITE)
		return "-";
	return coord_proto_sqlite_mode_name(job->sqlite_mode);
}

/* Runs in the forked child: never returns. */
static void child_main(int out_fd, const struct ckpt_request *req)
{
	struct ckpt_result res;
	sigset_t none;
	secret_forget();
	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (dup2(out_fd, 3) < 0)
		_exit(120);
	close_range(4, ~0u, 0);
	memset(&res, 0, sizeof res);
	checkpoint_run(req, &res);
	if (write(3, &res, sizeof res) != (ssize_t)sizeof res)
		_exit(121);
	_exit(0);
}

static void finish_job(struct ckpt_job *job);

static void job_exited(struct watch *w, uint32_t events)
{
	(void)events;
	finish_job(w->obj);
}

/* Forks the child.  Returns the job's block bits, or 0 if it could not
 * start (logged). */
static int start_job(struct ckpt_jobs *j, struct lt_resource *res, void *requester,
                     uint32_t seq, int kind, int policy, int mode)
{
	struct resource_ext *x = res->ext;
	struct ckpt_job *job = NULL;
	struct ckpt_request req = {
		.path = res->name,
		.kind = kind,
		.policy = policy,
		.sqlite_mode = mode,
		.command = store_resource_mem_command(&x->rec),
		.duckdb_lib = j->duckdb_lib,
	};
	int pipefd[2] = { -1, -1 };
	uint32_t limit = x->rec.timeout_ms ? x->rec.timeout_ms : j->default_timeout_ms;

	job = calloc(1, sizeof *job);
	if (!job || pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		goto fail;
	job->jobs = j;
	job->res = res;
	job->kind = kind;
	job->policy = policy;
	job->sqlite_mode = mode;
	job->requester = requester;
	job->seq = seq;
	job->started_ms = now_ms();
	job->started_us = now_us();
	job->deadline_ms = job->started_ms + limit;
	job->pipe_fd = pipefd[0];
	fflush(NULL);
	job->pid = fork();
	if (job->pid < 0)
		goto fail;
	if (job->pid == 0)
		child_main(pipefd[1], &req);
	close(pipefd[1]);
	pipefd[1] = -1;
	setpgid(job->pid, job->pid); /* also done in the child: whichever runs first */
	job->pidfd = (int)syscall(SYS_pidfd_open, job->pid, 0);
	job->watch = (struct watch){ job_exited, job };
	if (job->pidfd < 0 || loop_add(j->loop, job->pidfd, &job->watch, EPOLLIN) < 0) {
		kill(job->pid, SIGKILL);
		waitpid(job->pid, NULL, 0);
		goto fail;
	}
	x->job = job;
	job->next = j->running;
	j->running = job;
	log_event(j->log, "checkpoint-start",
	          "resource=%s kind=%s policy=%s mode=%s pid=%d limit_ms=%u",
	          log_quote(j->log, res->name), coord_proto_kind_name(kind),
	          coord_proto_policy_name(policy), job_mode(job), (int)job->pid, limit);
	events_checkpoint_start(res->name, kind, (int)job->pid);
	return block_bits(kind, policy, mode);
fail:
	log_event(j->log, "error", "op=checkpoint-start resource=%s errno=%s",
	          log_quote(j->log, res->name), strerror(errno));
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(job);
	return 0;
}

int ckpt_jobs_on_write_release(struct ckpt_jobs *j, struct lt_resource *res)
{
	struct resource_ext *x = res->ext;
	int kind, policy, mode;
	const char *why;
	if (j->shutting_down || x->job)
		return 0;
	if (!plan(j, res, &kind, &policy, &mode, &why)) {
		if (x->kind == COORD_KIND_DUCKDB && why == j->duckdb_why)
			log_event(j->log, "checkpoint-skip", "resource=%s reason=%s",
			          log_quote(j->log, res->name), log_quote(j->log, why));
		return 0;
	}
	/* The writer was exclusive: nobody else holds the resource now. */
	return start_job(j, res, NULL, 0, kind, policy, mode);
}

int ckpt_jobs_start_requested(struct ckpt_jobs *j, struct lt_resource *res, void *requester,
                              uint32_t seq, int *status)
{
	int kind, policy, mode, bits;
	const char *why;
	if (!plan(j, res, &kind, &policy, &mode, &why)) {
		log_event(j->log, "checkpoint-skip", "resource=%s reason=%s",
		          log_quote(j->log, res->name), log_quote(j->log, why));
		*status = COORD_ENOTSUP;
		return 0;
	}
	bits = start_job(j, res, requester, seq, kind, policy, mode);
	*status = bits ? 0 : COORD_ESYS;
	return bits;
}

/* Reads the child's result, or says why there is none. */
static void collect_result(struct ckpt_job *job, struct ckpt_result *r)
{
	ssize_t n;
	int status = 0;
	memset(r, 0, sizeof *r);
	waitpid(job->pid, &status, 0);
	n = read(job->pipe_fd, r, sizeof *r);
	if (job->killed) {
		r->status = COORD_ECHECKPOINT;
		r->wal_after = -1;
		snprintf(r->message, sizeof r->message, "timed out after %lld ms; checkpointer killed",
		         (long long)(now_ms() - job->started_ms));
	} else if (n != (ssize_t)sizeof *r) {
		r->status = COORD_ECHECKPOINT;
		r->wal_before = r->wal_after = -1;
		if (WIFSIGNALED(status))
			snprintf(r->message, sizeof r->message, "checkpointer died of signal %d",
			         WTERMSIG(status));
		else
			snprintf(r->message, sizeof r->message, "checkpointer exited with status %d",
			         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	r->message[sizeof r->message - 1] = 0;
}

static void finish_job(struct ckpt_job *job)
{
	struct ckpt_jobs *j = job->jobs;
	struct lt_resource *res = job->res;
	struct resource_ext *x = res->ext;
	struct log *log = j->log;
	struct ckpt_result r;
	struct store_resource rec;

	collect_result(job, &r);
	if (job->kind == COORD_KIND_DUCKDB && r.status == COORD_ENOTSUP &&
	    job->policy != COORD_POLICY_EXEC) {
		/* The child could not load the library: say why from now on,
		 * until the file changes. */
		struct stat st;
		char where[sizeof j->duckdb_why];
		int found = checkpoint_duckdb_locate(j->duckdb_lib, &st, where, sizeof where);
		duckdb_identity(j, &st, found > 0);
		j->duckdb_load_failed = 1;
		j->duckdb_ok = 0;
		snprintf(j->duckdb_why, sizeof j->duckdb_why, "%s", r.message);
	}
	store_resource_mem_get(&x->rec, &rec);
	rec.checkpoints++;
	rec.last_at_ms = (uint64_t)wall_ms();
	rec.last_duration_us = (uint64_t)(now_us() - job->started_us);
	rec.last_result = r.status;
	rec.wal_before = r.wal_before;
	rec.wal_after = r.wal_after;
	snprintf(rec.message, sizeof rec.message, "%s", r.message);
	if (res->token > rec.token_ceiling)
		rec.token_ceiling = res->token; /* its last write token, lazily */
	rec.version = STORE_RESOURCE_VERSION;
	store_resource_save(j->store, res->name, &rec);
	/* Out of memory for the new message, the numbers change all the same. */
	store_resource_mem_set(&x->rec, &rec);
	log_event(log, r.status ? "checkpoint-failed" : "checkpoint",
	          "resource=%s kind=%s mode=%s result=%s duration_us=%llu wal_before=%lld "
	          "wal_after=%lld message=%s",
	          log_quote(log, res->name), coord_proto_kind_name(job->kind), job_mode(job),
	          r.status ? coord_proto_errname(r.status) : "ok",
	          (unsigned long long)rec.last_duration_us, (long long)r.wal_before,
	          (long long)r.wal_after, log_quote(log, r.message));
	events_checkpoint_done(res->name, job->kind, r.status, (int64_t)rec.last_duration_us,
	                       r.wal_before, r.wal_after);

	loop_del(j->loop, job->pidfd);
	close(job->pidfd);
	close(job->pipe_fd);
	for (struct ckpt_job **p = &j->running; *p; p = &(*p)->next) {
		if (*p == job) {
			*p = job->next;
			break;
		}
	}
	x->job = NULL;
	if (job->requester && j->done)
		j->done(j->ud, res, job->requester, job->seq, r.status);
	free(job);
	/* Lift the block whatever the result: a failed checkpoint must never
	 * wedge the resource.  This dispatches the waiters. */
	lease_table_block(j->table, res, 0);
}

int64_t ckpt_jobs_next_deadline(const struct ckpt_jobs *j)
{
	int64_t d = -1;
	for (const struct ckpt_job *job = j->running; job; job = job->next)
		if (!job->killed && (d < 0 || job->deadline_ms < d))
			d = job->deadline_ms;
	return d;
}

static void kill_job(struct ckpt_job *job)
{
	job->killed = 1;
	kill(-job->pid, SIGKILL);
	kill(job->pid, SIGKILL);
}

void ckpt_jobs_expire(struct ckpt_jobs *j, int64_t now)
{
	for (struct ckpt_job *job = j->running; job; job = job->next) {
		if (!job->killed && job->deadline_ms <= now) {
			log_event(j->log, "checkpoint-timeout", "resource=%s pid=%d",
			          log_quote(j->log, job->res->name), (int)job->pid);
			kill_job(job);
		}
	}
}

void ckpt_jobs_forget(struct ckpt_jobs *j, void *requester)
{
	for (struct ckpt_job *job = j->running; job; job = job->next)
		if (job->requester == requester)
			job->requester = NULL;
}

void ckpt_jobs_shutdown(struct ckpt_jobs *j)
{
	j->shutting_down = 1;
	while (j->running) {
		kill_job(j->running);
		finish_job(j->running);
	}
}
