/* Runs the tests registered through tests/tsan/criterion/criterion.h, the
 * stand-in for Criterion in the ThreadSanitizer build (see that header for
 * why).  Each test runs in a child process of its own, as under Criterion:
 * the suite's .init, the body, the suite's .fini, under an alarm() of the
 * suite's timeout.  The driver prints one line per test and Criterion's
 * "Synthesis" line, and exits 1 if any test failed or crashed.  A
 * ThreadSanitizer report fails the test: halt_on_error=1 (scripts/test.sh)
 * ends the child with TSan's exit code, 66.  The driver itself has one
 * thread, so its forks are safe under TSan. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static struct cr_shim_test *tests, **tests_tail = &tests;
static const struct cr_shim_test *running; /* in a test's child process */
static pid_t running_pid;
static int in_fini;

void cr_shim_register(struct cr_shim_test *t)
{
	*tests_tail = t;
	tests_tail = &t->next;
}

void cr_shim_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("[WARN] ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* A failed assertion.  In the test's own process the suite's .fini still
 * runs (it stops the broker and removes the directory); in a process the
 * test forked (the broker before its exec, an actor) only that process
 * ends. */
void cr_shim_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[FAIL] %s:%d: assertion failed: %s: ", file, line, cond);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	if (running && getpid() == running_pid && !in_fini && running->fixture->fini) {
		in_fini = 1;
		running->fixture->fini();
	}
	_exit(1);
}

static _Noreturn void run_in_child(const struct cr_shim_test *t)
{
	running = t;
	running_pid = getpid();
	if (t->fixture->timeout > 0)
		alarm((unsigned)t->fixture->timeout);
	if (t->fixture->init)
		t->fixture->init();
	t->body();
	in_fini = 1;
	if (t->fixture->fini)
		t->fixture->fini();
	_exit(0);
}

int main(int argc, char **argv)
{
	int tested = 0, passed = 0, failed = 0, crashed = 0;
	if (argc > 1) {
		fprintf(stderr, "usage: %s (runs every test; no options in the TSan build)\n", argv[0]);
		return 2;
	}
	for (const struct cr_shim_test *t = tests; t; t = t->next) {
		int st;
		pid_t pid;
		fflush(NULL);
		pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			run_in_child(t);
		while (waitpid(pid, &st, 0) < 0) {
			if (errno != EINTR) {
				perror("waitpid");
				return 1;
			}
		}
		tested++;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			passed++;
			printf("[PASS] %s::%s\n", t->suite, t->name);
		} else if (WIFEXITED(st)) {
			failed++;
			printf("[FAIL] %s::%s: exit status %d%s\n", t->suite, t->name, WEXITSTATUS(st),
			       WEXITSTATUS(st) == 66 ? " (a ThreadSanitizer report)" : "");
		} else {
			crashed++;
			printf("[FAIL] %s::%s: killed by signal %d (%s)%s\n", t->suite, t->name,
			       WTERMSIG(st), strsignal(WTERMSIG(st)),
			       WTERMSIG(st) == SIGALRM ? ", over the suite's timeout" : "");
		}
	}
	printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n", tested,
	       passed, failed, crashed);
	return tested > 0 && passed == tested ? 0 : 1;
}
