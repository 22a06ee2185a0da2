/* coordctl's output cannot be broken by what it prints.  Hostile labels,
 * command names (a holder that renamed itself with PR_SET_NAME), command
 * lines (under `coordctl run`), resource paths and an exec policy, all with
 * invalid UTF-8, ESC sequences, CR, BEL, newlines, quotes, backslashes and
 * C1 and bidirectional controls, go through a real broker into list, show
 * and status:
 *  - the --json output is parsed by Python's json module after a strict
 *    UTF-8 decode, and each hostile value comes back as the documented
 *    rule says (U+FFFD per invalid byte, the exact bytes in KEY_hex);
 *  - the tables, under a UTF-8 locale and under C, hold no control byte,
 *    no invalid UTF-8 and no C1 or bidirectional character, and every
 *    lease takes exactly one line.
 * Also: text.c's escapes, shell quoting and human durations, byte for
 * byte. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <fcntl.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord.h"
#include "harness.h"
#include "text.h"

HARNESS_SUITE(output, 60);

/* Bytes no terminal or JSON parser should get raw: invalid UTF-8 (0xff,
 * 0xfe, a lone continuation 0x80, a cut sequence e2 80), ESC sequences,
 * CR, BEL, a newline, quotes, a backslash, a C1 CSI (c2 9b), a right-to-
 * left override (e2 80 ae) and U+2028 (e2 80 a8). */
static const char hostile_label[] = "lab\xff\xfe\x1b[2J\r\n\"q\"\\\x07\x80\xe2\x80!\xc2\x9b"
                                    "1m\xe2\x80\xae" "evil\xe2\x80\xa8" "end";
static const char hostile_comm[] = "c\x1b]0;x\x07\xff\n\"\\\r"; /* 12 bytes: fits comm */
static const char hostile_arg[] = "arg \xff\x1b[31mred\x1b[0m\t'\"\\\x9b";
static const char hostile_file[] = "db\x1b[1m\xff\n\"\\\xc2\x85.sqlite";
static const char hostile_key[] = "key:k\x1b[5m\xfe\x07\r";

/* ---- running coordctl and python without a shell ---- */

/* Runs argv (NULL-terminated) with LC_ALL=locale (NULL: as it is) and
 * stdin from /dev/null; its stdout into out (size, terminated), stderr
 * into err if not NULL.  Returns its exit status. */
static int run(char *out, size_t size, char *err, size_t esize, const char *locale,
               const char *const *argv)
{
	int po[2], pe[2], st;
	size_t n = 0, m = 0;
	pid_t pid;
	cr_assert(pipe(po) == 0 && pipe(pe) == 0, "pipe");
	pid = fork();
	cr_assert_geq(pid, 0, "fork");
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		if (locale)
			setenv("LC_ALL", locale, 1);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	for (;;) {
		ssize_t r = read(po[0], out + n, size - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		cr_assert_lt(n, size - 1, "the output of %s %s does not fit in %zu bytes", argv[0],
		             argv[1], size);
	}
	out[n] = 0;
	for (char sink[512];;) {
		ssize_t r = read(pe[0], sink, sizeof sink);
		if (r <= 0)
			break;
		if (err && m + (size_t)r < esize) {
			memcpy(err + m, sink, (size_t)r);
			m += (size_t)r;
		}
	}
	if (err)
		err[m] = 0;
	close(po[0]);
	close(pe[0]);
	cr_assert_eq(waitpid(pid, &st, 0), pid, "wait for %s", argv[0]);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* coordctl ARGS... (NULL-terminated), its stdout into out. */
static int ctl(char *out, size_t size, const char *locale, ...)
{
	const char *argv[16];
	size_t n = 0;
	va_list ap;
	argv[n++] = getenv("COORD_TEST_COORDCTL");
	va_start(ap, locale);
	while ((argv[n] = va_arg(ap, const char *)) && n < 15)
		n++;
	va_end(ap);
	argv[n] = NULL;
	return run(out, size, NULL, 0, locale, argv);
}

static void hex(const char *s, char *buf, size_t size)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && n + 3 < size; p++)
		n += (size_t)snprintf(buf + n, size - n, "%02x", *p);
	buf[n] = 0;
}

/* Python reads the JSON in file `path` (strict UTF-8, then json.loads),
 * and runs `check` with d the document and exp(HEX) the text the rule
 * gives for the bytes in HEX (U+FFFD per invalid byte); check raises, or
 * prints what it finds.  Returns python's status; its output in out. */
static int python_check(const char *json, const char *check, const char *const *args,
                        char *out, size_t size)
{
	static const char prelude[] =
	        "import codecs, json, sys\n"
	        "codecs.register_error('perbyte', lambda e: ('\\ufffd' * (e.end - e.start), e.end))\n"
	        "def exp(h): return bytes.fromhex(h).decode('utf-8', 'perbyte')\n"
	        "raw = open(sys.argv[1], 'rb').read()\n"
	        "text = raw.decode('utf-8')\n"
	        "bad = [c for c in text[:-1] if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "
	        "'\\u2028\\u2029']\n"
	        "assert not bad, 'raw control characters in the JSON: %r' % bad\n"
	        "assert text.endswith('\\n') and text.count('\\n') == 1, 'one line'\n"
	        "d = json.loads(text)\n"
	        "a = sys.argv[2:]\n";
	char script[8192], path[512], err[4096];
	const char *argv[12] = { "/usr/bin/python3", "-c", script, path };
	size_t n = 4;
	FILE *f;
	int st;
	snprintf(path, sizeof path, "%s", harness_path(&h, "out.json"));
	f = fopen(path, "w");
	cr_assert(f && fputs(json, f) >= 0 && fclose(f) == 0, "write %s", path);
	snprintf(script, sizeof script, "%s%s", prelude, check);
	for (; args && *args && n < 11; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	st = run(out, size, err, sizeof err, NULL, argv);
	cr_assert_eq(st, 0, "python3 rejected the JSON (%s):\n%s\nJSON:\n%s", err, out, json);
	return st;
}

/* Asserts that text printed for a terminal holds no control byte but
 * '\n', is valid UTF-8, and has no C1, bidirectional or separator
 * character; and that it has `lines` lines. */
static void assert_terminal_safe(const char *what, const char *out, int lines)
{
	int n = 0;
	cr_assert(text_valid_utf8(out), "%s: the output is not valid UTF-8:\n%s", what, out);
	for (const unsigned char *p = (const unsigned char *)out; *p; p++) {
		cr_assert(*p >= 0x20 || *p == '\n', "%s: control byte 0x%02x at %zu:\n%s", what, *p,
		          (size_t)(p - (const unsigned char *)out), out);
		cr_assert(*p != 0x7f, "%s: DEL in the output:\n%s", what, out);
		cr_assert(!(p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f), "%s: a C1 control:\n%s",
		          what, out);
		cr_assert(!(p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xae || p[2] == 0xa8)),
		          "%s: a bidi override or line separator:\n%s", what, out);
		n += *p == '\n';
	}
	if (lines >= 0)
		cr_assert_eq(n, lines, "%s: %d lines, expected %d (one per lease):\n%s", what, n, lines,
		             out);
}

/* ---- hostile holders ---- */

struct holder {
	pid_t pid;
	int hold; /* closing it ends the holder */
};

/* A child renamed to comm that takes a lease on resource with label, and
 * keeps it until h->hold is closed.  waiting: it queues behind another. */
static void holder_start(struct holder *hd, const char *resource, int mode, const char *label,
                         int waiting)
{
	int ready[2], hold[2];
	char c = 0;
	cr_assert(pipe(ready) == 0 && pipe(hold) == 0, "pipe");
	hd->pid = fork();
	cr_assert_geq(hd->pid, 0, "fork");
	if (hd->pid == 0) {
		coord_lease_t *l;
		coord_t *conn;
		/* only its own pipe ends: other holders' must close when the test
		 * closes them */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != ready[1] && fd != hold[0])
				close(fd);
		prctl(PR_SET_NAME, hostile_comm); /* before connecting: the broker records it */
		if (coord_connect(&conn, NULL) < 0)
			_exit(2);
		if (waiting && write(ready[1], "w", 1) != 1)
			_exit(3);
		if (coord_acquire(conn, resource, mode, -1, label, &l) < 0)
			_exit(4);
		if (!waiting && write(ready[1], "h", 1) != 1)
			_exit(3);
		while (read(hold[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(ready[1]);
	close(hold[0]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the hostile holder must get going");
	close(ready[0]);
	hd->hold = hold[1];
}

static void holder_stop(struct holder *hd)
{
	int st;
	close(hd->hold);
	cr_assert_eq(waitpid(hd->pid, &st, 0), hd->pid, "reap the holder");
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the holder failed (0x%x)", st);
}

/* `coordctl run --write resource --label label -- sh -c 'read x' sh ARG`
 * with ARG hostile; holds until h->hold is closed. */
static void run_holder_start(struct holder *hd, const char *resource)
{
	int in[2];
	cr_assert(pipe(in) == 0, "pipe");
	hd->pid = fork();
	cr_assert_geq(hd->pid, 0, "fork");
	if (hd->pid == 0) {
		dup2(in[0], 0);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execl(getenv("COORD_TEST_COORDCTL"), "coordctl", "run", "--write", resource, "--label",
		      hostile_label, "--", "/bin/sh", "-c", "read x", "sh", hostile_arg, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	hd->hold = in[1];
}

/* 1 once `coordctl list` shows coordctl run's command, not coordctl. */
static int list_shows_the_command(void *arg)
{
	char out[16384];
	(void)arg;
	ctl(out, sizeof out, "C", "list", NULL);
	return strstr(out, "read x") != NULL;
}

struct hostile {
	struct holder file_holder, key_holder, waiter, runner;
	char file[512], comm_hex[64], label_hex[512], arg_hex[256], file_hex[1024], key_hex[128];
};

/* Four leases with hostile text: a holder and a waiter on a hostile file
 * path, a holder of a hostile key, and a coordctl run whose command has a
 * hostile argument. */
static void hostile_start(struct hostile *x)
{
	snprintf(x->file, sizeof x->file, "%s", harness_path(&h, hostile_file));
	holder_start(&x->file_holder, x->file, COORD_WRITE, hostile_label, 0);
	holder_start(&x->waiter, x->file, COORD_READ, hostile_label, 1);
	cr_assert(harness_wait_count(&h, x->file, COORD_READ, 1, 1), "the reader must queue");
	holder_start(&x->key_holder, hostile_key, COORD_READ, hostile_label, 0);
	run_holder_start(&x->runner, "key:runner");
	cr_assert(harness_wait_count(&h, "key:runner", COORD_WRITE, 0, 1),
	          "coordctl run must hold key:runner");
	cr_assert(harness_wait(list_shows_the_command, NULL, 5000),
	          "list must show the command coordctl run runs");
	hex(hostile_comm, x->comm_hex, sizeof x->comm_hex);
	hex(hostile_label, x->label_hex, sizeof x->label_hex);
	hex(hostile_arg, x->arg_hex, sizeof x->arg_hex);
	hex(x->file, x->file_hex, sizeof x->file_hex);
	hex(hostile_key, x->key_hex, sizeof x->key_hex);
}

static void hostile_stop(struct hostile *x)
{
	holder_stop(&x->file_holder);
	holder_stop(&x->waiter);
	holder_stop(&x->key_holder);
	close(x->runner.hold);
	cr_assert_eq(waitpid(x->runner.pid, NULL, 0), x->runner.pid, "reap coordctl run");
}

Test(output, list_json_survives_hostile_text)
{
	struct hostile x;
	char json[65536], out[4096];
	const char *args[] = { x.label_hex, x.comm_hex, x.file_hex, x.key_hex, x.arg_hex, NULL };
	hostile_start(&x);
	cr_assert_eq(ctl(json, sizeof json, NULL, "list", "--json", NULL), 0, "list --json");
	python_check(json,
	             "L = {l['resource']: l for l in d['leases']}\n"
	             "f, k, r = L[exp(a[2])], L[exp(a[3])], L['key:runner']\n"
	             "for l in (f, k):\n"
	             "    assert l['label'] == exp(a[0]) and l['label_hex'] == a[0], l\n"
	             "    assert l['command'] == exp(a[1]) and l['command_hex'] == a[1], l\n"
	             "assert f['resource_hex'] == a[2] and k['resource_hex'] == a[3]\n"
	             "assert r['command'] == 'coordctl' and 'command_hex' not in r\n"
	             "assert r['cmdline'] == ['/bin/sh', '-c', 'read x', 'sh', exp(a[4])], r\n"
	             "assert r['cmdline_hex'][4] == a[4] and r['cmdline_pid'] != r['pid'], r\n"
	             "w = d['waiters'][0]\n"
	             "assert w['resource_hex'] == a[2] and w['label_hex'] == a[0], w\n"
	             "print('ok', len(d['leases']), len(d['waiters']), end='')\n",
	             args, out, sizeof out);
	cr_assert_str_eq(out, "ok 3 1", "three holders and one waiter: %s", out);
	hostile_stop(&x);
}

Test(output, show_and_status_json_survive_hostile_text)
{
	struct hostile x;
	char json[65536], out[4096], spec[256];
	const char *args[] = { x.label_hex, x.comm_hex, x.file_hex, x.arg_hex, NULL };
	hostile_start(&x);
	/* an exec policy with a hostile command, shown back by show */
	snprintf(spec, sizeof spec, "exec:%s", hostile_arg);
	cr_assert_eq(ctl(out, sizeof out, NULL, "policy", x.file, spec, NULL), 0, "policy: %s", out);
	hex(hostile_arg, x.arg_hex, sizeof x.arg_hex);
	cr_assert_eq(ctl(json, sizeof json, NULL, "show", "--json", x.file, NULL), 0, "show --json");
	python_check(json,
	             "assert d['resource'] == exp(a[2]) and d['resource_hex'] == a[2], d\n"
	             "p = d['policy']\n"
	             "assert p['name'] == 'exec' and p['command'] == exp(a[3]), p\n"
	             "assert p['command_hex'] == a[3], p\n"
	             "assert d['holder_count'] == 1 and d['waiter_count'] == 1, d\n"
	             "assert d['leases'][0]['label_hex'] == a[0], d\n"
	             "assert d['waiters'][0]['command_hex'] == a[1], d\n"
	             "print('ok', end='')\n",
	             args, out, sizeof out);
	cr_assert_eq(ctl(json, sizeof json, NULL, "status", "--json", NULL), 0, "status --json");
	python_check(json,
	             "assert d['broker'] is True and d['leases'] == 3 and d['waiters'] == 1, d\n"
	             "print('ok', end='')\n",
	             NULL, out, sizeof out);
	hostile_stop(&x);
}

struct locale_case {
	char locale[16];
};

ParameterizedTestParameters(output, tables_never_write_control_characters)
{
	static struct locale_case cases[] = { { "C.UTF-8" }, { "C" } };
	return cr_make_param_array(struct locale_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct locale_case *lc, output, tables_never_write_control_characters)
{
	struct hostile x;
	char out[65536], spec[256];
	hostile_start(&x);
	snprintf(spec, sizeof spec, "exec:%s", hostile_arg);
	cr_assert_eq(ctl(out, sizeof out, NULL, "policy", x.file, spec, NULL), 0, "policy");

	cr_assert_eq(ctl(out, sizeof out, lc->locale, "list", NULL), 0, "list");
	assert_terminal_safe("list", out, 5);
	cr_assert(strstr(out, "\\x1b[2J\\r\\n\"q\"\\\\\\x07"),
	          "the label must be shown with visible escapes:\n%s", out);
	cr_assert(strstr(out, "/bin/sh -c 'read x' s..."), "the run holder's COMMAND is its command:\n%s",
	          out);
	cr_assert_eq(ctl(out, sizeof out, lc->locale, "list", "--wide", NULL), 0, "list --wide");
	assert_terminal_safe("list --wide", out, 5);
	cr_assert(strstr(out, "\\x1b[31mred\\x1b[0m\\t"),
	          "the wide COMMAND shows the whole hostile argument, escaped:\n%s", out);
	cr_assert_eq(ctl(out, sizeof out, lc->locale, "show", x.file, NULL), 0, "show");
	assert_terminal_safe("show", out, -1);
	cr_assert_eq(ctl(out, sizeof out, lc->locale, "show", "--wide", x.file, NULL), 0, "show");
	assert_terminal_safe("show --wide", out, -1);
	cr_assert_eq(ctl(out, sizeof out, lc->locale, "status", NULL), 0, "status");
	assert_terminal_safe("status", out, 4);
	hostile_stop(&x);
}

/* ---- text.c itself ---- */

struct escape_case {
	char in[32], json[64], human[64];
};

ParameterizedTestParameters(output, escapes_byte_for_byte)
{
	static struct escape_case cases[] = {
		{ "plain", "\"plain\"", "plain" },
		{ "a\"b\\c", "\"a\\\"b\\\\c\"", "a\"b\\\\c" },
		{ "\x1b[31m", "\"\\u001b[31m\"", "\\x1b[31m" },
		{ "\r\n\t\x07\x7f", "\"\\r\\n\\t\\u0007\\u007f\"", "\\r\\n\\t\\x07\\x7f" },
		{ "\xff\xfe", "\"\\ufffd\\ufffd\"", "\\xff\\xfe" },
		{ "\xe2\x80!", "\"\\ufffd\\ufffd!\"", "\\xe2\\x80!" },
		{ "\xc0\xaf", "\"\\ufffd\\ufffd\"", "\\xc0\\xaf" },          /* overlong '/' */
		{ "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"", "\\xed\\xa0\\x80" }, /* surrogate */
		{ "\xc2\x9b", "\"\\u009b\"", "\\u009b" },                    /* C1 CSI */
		{ "\xe2\x80\xae", "\"\xe2\x80\xae\"", "\\u202e" },           /* RLO */
		{ "\xe2\x80\xa8", "\"\\u2028\"", "\\u2028" },
		{ "caf\xc3\xa9", "\"caf\xc3\xa9\"", "caf\xc3\xa9" },
	};
	return cr_make_param_array(struct escape_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct escape_case *ec, output, escapes_byte_for_byte)
{
	char *buf = NULL, human[128];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert(f, "open_memstream");
	text_json_string(f, ec->in);
	cr_assert_eq(fclose(f), 0, "fclose");
	cr_assert_str_eq(buf, ec->json, "the JSON form of %s", ec->json);
	free(buf);
	setenv("LC_ALL", "C.UTF-8", 1);
	cr_assert(setlocale(LC_CTYPE, ""), "the C.UTF-8 locale");
	text_init();
	text_human(human, sizeof human, ec->in, 0);
	cr_assert_str_eq(human, ec->human, "the human form of JSON %s", ec->json);
}

Test(output, human_text_is_cut_at_whole_escapes)
{
	char buf[64];
	int cols = text_human(buf, sizeof buf, "abcdefgh\x1bxyz", 12);
	cr_assert_str_eq(buf, "abcdefgh...", "cut before the escape that would not fit: %s", buf);
	cr_assert_eq(cols, 11, "columns of the cut text");
	cols = text_human(buf, sizeof buf, "short", 12);
	cr_assert(!strcmp(buf, "short") && cols == 5, "what fits is not cut: %s", buf);
}

struct quote_case {
	char in[32], quoted[64];
};

ParameterizedTestParameters(output, shell_quotes_byte_for_byte)
{
	static struct quote_case cases[] = {
		{ "/srv/shop.db", "'/srv/shop.db'" },
		{ "it's", "'it'\\''s'" },
		{ "a\\b c", "'a\\b c'" },                       /* a backslash alone stays plain */
		{ "caf\xc3\xa9", "'caf\xc3\xa9'" },              /* printable under UTF-8 */
		{ "x\x1b[1m'\\\n", "$'x\\x1b[1m\\'\\\\\\x0a'" }, /* ESC, quote, backslash, newline */
		{ "\xff\xc2\x9b", "$'\\xff\\xc2\\x9b'" },        /* invalid UTF-8, C1 CSI */
		{ "rlo\xe2\x80\xae", "$'rlo\\xe2\\x80\\xae'" },   /* a bidirectional override */
	};
	return cr_make_param_array(struct quote_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct quote_case *qc, output, shell_quotes_byte_for_byte)
{
	char *q;
	setenv("LC_ALL", "C.UTF-8", 1);
	cr_assert(setlocale(LC_CTYPE, ""), "the C.UTF-8 locale");
	text_init();
	q = text_shell_quote(qc->in);
	cr_assert(q, "text_shell_quote: out of memory");
	cr_assert_str_eq(q, qc->quoted, "the shell word for %s", qc->quoted);
	free(q);
}

struct duration_case {
	uint64_t ms;
	char text[16];
};

ParameterizedTestParameters(output, human_durations)
{
	static struct duration_case cases[] = {
		{ 0, "0ms" },       { 450, "450ms" },    { 3250, "3.2s" },     { 42999, "42s" },
		{ 192000, "3m12s" }, { 7500000, "2h05m" }, { 273600000, "3d04h" },
	};
	return cr_make_param_array(struct duration_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct duration_case *dc, output, human_durations)
{
	char buf[32];
	text_duration(buf, sizeof buf, dc->ms);
	cr_assert_str_eq(buf, dc->text, "%llu ms", (unsigned long long)dc->ms);
}
