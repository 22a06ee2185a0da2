/* The broker's log (broker/log.c) on its own: a file rotated at its cap
 * only between whole batches, reopened after it was moved away, never
 * opened through a symlink or as a FIFO; and the journal's native
 * protocol, each key=value a field, with a line the journal refuses
 * written to stderr with its priority. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"

static char dir[256];
static struct log lg; /* large: not on the stack */

static void setup(void)
{
	harness_tmpdir(dir, sizeof dir, "coord-log");
	memset(&lg, 0, sizeof lg);
}

static void teardown(void)
{
	free(lg.buf);
	free(lg.jbuf);
	if (lg.target == LOG_FILE)
		close(lg.fd);
	if (lg.target == LOG_JOURNAL)
		close(lg.journal_fd);
	harness_rmtree(dir);
}

TestSuite(log, .init = setup, .fini = teardown, .timeout = 60);

/* The whole of a file, NUL-terminated (malloc'd); *len its size. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;
	cr_assert(f, "%s must exist: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
	buf[n] = 0;
	fclose(f);
	*len = (size_t)n;
	return buf;
}

struct seen {
	long first_i, last_i;      /* of the grant lines, -1: none */
	long lines;
	int starts_rotated;        /* the first line is event=log-rotated */
};

/* Checks that every line of path is whole and that i= counts up by one
 * without a gap; a file past the cap must hold a single batch (one b=)
 * beside the log's own line. */
static struct seen check_file(const char *path, uint64_t cap, long expect_first)
{
	struct seen s = { -1, -1, 0, 0 };
	size_t len;
	char *buf = slurp(path, &len), *p = buf;
	long batch = -1;
	int batches = 0;
	cr_assert(len == 0 || buf[len - 1] == '\n', "%s ends in the middle of a line", path);
	while (*p) {
		char *nl = strchr(p, '\n');
		long i, b;
		*nl = 0;
		cr_assert(!strncmp(p, "ts=", 3) && strstr(p, " event="),
		          "%s holds a line that is not whole: '%s'", path, p);
		if (s.lines == 0 && strstr(p, " event=log-rotated "))
			s.starts_rotated = 1;
		s.lines++;
		i = harness_log_field(p, "i");
		b = harness_log_field(p, "b");
		if (i >= 0) {
			long want = s.last_i < 0 ? expect_first : s.last_i + 1;
			cr_assert(want < 0 || i == want,
			          "%s: line i=%ld follows i=%ld: a line was lost or repeated", path, i,
			          s.last_i);
			if (s.first_i < 0)
				s.first_i = i;
			s.last_i = i;
			if (b != batch)
				batches++;
			batch = b;
		}
		p = nl + 1;
	}
	if (len > cap)
		cr_assert_eq(batches, 1,
		             "%s is %zu bytes, past the cap of %llu, with %d batches in it: only a "
		             "single batch larger than the cap may take a file past it",
		             path, len, (unsigned long long)cap, batches);
	free(buf);
	return s;
}

Test(log, a_file_is_rotated_between_whole_batches_and_stays_within_its_cap)
{
	const uint64_t cap = 3000;
	char path[512], old[520];
	struct seen cur, prev;
	long i = 0, batches = 400, big = 250;
	snprintf(path, sizeof path, "%s/coordd.log", dir);
	snprintf(old, sizeof old, "%s.1", path);
	cr_assert_eq(log_open_file(&lg, path, cap, 0), 0, "log_open_file: %s", strerror(errno));
	lg.buffered = 1;
	for (long b = 0; b < batches; b++) {
		/* 1 to 9 lines a batch, and once a batch larger than the cap */
		long n = b == big ? 40 : 1 + b % 9;
		for (long k = 0; k < n; k++, i++)
			log_event(&lg, "grant", "i=%ld b=%ld resource=%s pad=%s", i, b,
			          log_quote(&lg, "/srv/data/a file.db"), "0123456789abcdef0123456789");
		log_flush(&lg);
		if (b == big) {
			/* That batch began a file of its own, past the cap. */
			struct stat st;
			cr_assert_eq(stat(path, &st), 0, "coordd.log must exist");
			cr_assert_gt((uint64_t)st.st_size, cap, "a 40-line batch is larger than the cap");
			check_file(path, cap, -1);
		}
	}
	prev = check_file(old, cap, -1);
	cur = check_file(path, cap, prev.last_i + 1);
	cr_assert_eq(cur.last_i, i - 1, "the last line logged (i=%ld) must be in coordd.log, not "
	             "i=%ld", i - 1, cur.last_i);
	cr_assert(cur.starts_rotated && prev.starts_rotated,
	          "each file begun by a rotation starts with event=log-rotated");
	cr_assert_eq(cur.first_i, prev.last_i + 1, "coordd.log.1 must end where coordd.log begins");
}

Test(log, no_cap_means_no_rotation)
{
	char path[512], old[520];
	struct stat st;
	snprintf(path, sizeof path, "%s/coordd.log", dir);
	snprintf(old, sizeof old, "%s.1", path);
	cr_assert_eq(log_open_file(&lg, path, 0, 0), 0, "log_open_file: %s", strerror(errno));
	for (int i = 0; i < 2000; i++)
		log_event(&lg, "grant", "i=%d pad=%s", i, "0123456789abcdef0123456789abcdef");
	cr_assert_eq(stat(path, &st), 0, "coordd.log must exist");
	cr_assert_gt(st.st_size, 100000, "2000 lines were written unbuffered");
	cr_assert(stat(old, &st) < 0 && errno == ENOENT, "--log-max-bytes 0 never rotates");
}

Test(log, reopen_after_a_move_begins_a_new_file_with_the_old_mode)
{
	char path[512], moved[520];
	size_t len;
	struct stat st;
	char *buf;
	snprintf(path, sizeof path, "%s/coordd.log", dir);
	snprintf(moved, sizeof moved, "%s/coordd.log-20260101", dir);
	cr_assert_eq(log_open_file(&lg, path, 0, 0), 0, "log_open_file: %s", strerror(errno));
	fchmod(lg.fd, 0640);
	log_event(&lg, "grant", "i=1");
	cr_assert_eq(rename(path, moved), 0, "mv coordd.log: %s", strerror(errno));
	log_event(&lg, "grant", "i=2"); /* still the moved file */
	log_reopen(&lg);
	log_event(&lg, "grant", "i=3");
	buf = slurp(moved, &len);
	cr_assert(strstr(buf, " i=1\n") && strstr(buf, " i=2\n") && !strstr(buf, " i=3"),
	          "the moved file holds what was logged before the reopen, only: %s", buf);
	free(buf);
	buf = slurp(path, &len);
	cr_assert(strstr(buf, " event=log-reopened ") && strstr(buf, " i=3\n") && !strstr(buf, "i=2"),
	          "the new coordd.log holds the reopen and what came after: %s", buf);
	free(buf);
	cr_assert_eq(stat(path, &st), 0, "coordd.log must exist again");
	cr_assert_eq(st.st_mode & 0777, 0640, "the new file keeps the old one's mode, not %o",
	             st.st_mode & 0777);
}

Test(log, a_symlink_or_a_fifo_is_never_opened_as_the_log)
{
	char path[512], target[512];
	snprintf(path, sizeof path, "%s/coordd.log", dir);
	snprintf(target, sizeof target, "%s/elsewhere", dir);
	cr_assert_eq(symlink(target, path), 0, "symlink: %s", strerror(errno));
	errno = 0;
	cr_assert_eq(log_open_file(&lg, path, 0, 0), -1, "a symlink at the log's path is refused");
	cr_assert_eq(errno, ELOOP, "refused as a symlink (ELOOP), not: %s", strerror(errno));
	cr_assert(access(target, F_OK) < 0, "nothing was created through the symlink");
	unlink(path);
	cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo: %s", strerror(errno));
	/* With no reader, a plain open for writing would block forever. */
	cr_assert_eq(log_open_file(&lg, path, 0, 0), -1, "a FIFO at the log's path is refused");
	cr_assert_eq(lg.target, LOG_STDERR, "a refused open changes nothing");
}

/* ---- the journal ---- */

struct field {
	char name[64];
	char value[4096];
	size_t len;
};

/* Parses one datagram of the native journal protocol into fields: NAME=VALUE\n,
 * or NAME\n, a 64-bit little-endian length, the value and \n.  Returns the
 * count; asserts the framing. */
static int parse_datagram(const char *p, size_t n, struct field *f, int max)
{
	const char *end = p + n;
	int k = 0;
	while (p < end && k < max) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *eq = memchr(p, '=', (size_t)(end - p));
		cr_assert(nl, "a journal field must end in a newline");
		if (eq && eq < nl) {
			snprintf(f[k].name, sizeof f[k].name, "%.*s", (int)(eq - p), p);
			f[k].len = (size_t)(nl - eq - 1);
			memcpy(f[k].value, eq + 1, f[k].len);
			p = nl + 1;
		} else {
			uint64_t len = 0;
			snprintf(f[k].name, sizeof f[k].name, "%.*s", (int)(nl - p), p);
			cr_assert(end - nl > 9, "a binary field needs its length");
			for (int i = 0; i < 8; i++)
				len |= (uint64_t)(unsigned char)nl[1 + i] << (8 * i);
			cr_assert(len < sizeof f[k].value && nl + 9 + len < end && nl[9 + len] == '\n',
			          "binary field %s: bad length %llu", f[k].name, (unsigned long long)len);
			f[k].len = len;
			memcpy(f[k].value, nl + 9, len);
			p = nl + 9 + len + 1;
		}
		f[k].value[f[k].len] = 0;
		for (const char *c = f[k].name; *c; c++)
			cr_assert((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_',
			          "journal field name %s may hold only A-Z, 0-9 and _", f[k].name);
		k++;
	}
	return k;
}

static const char *field(struct field *f, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(f[i].name, name))
			return f[i].value;
	return NULL;
}

static int bind_dgram(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
	          "cannot bind a datagram socket at %s: %s", path, strerror(errno));
	return fd;
}

static ssize_t recv_one(int fd, char *buf, size_t size)
{
	struct pollfd p = { fd, POLLIN, 0 };
	cr_assert_eq(poll(&p, 1, 5000), 1, "no datagram reached the journal's socket in 5 s");
	return recv(fd, buf, size, 0);
}

Test(log, each_line_is_a_journal_datagram_with_its_fields)
{
	static char buf[1 << 16];
	static struct field f[64];
	char path[512];
	int rx, n;
	ssize_t len;
	snprintf(path, sizeof path, "%s/journal.sock", dir);
	rx = bind_dgram(path);
	cr_assert_eq(log_open_journal(&lg, path), 0, "log_open_journal: %s", strerror(errno));
	lg.buffered = 1;
	log_event(&lg, "grant", "lease=7 resource=%s mode=write token=42 max-clients=3 label=%s",
	          log_quote(&lg, "/srv/a b.db"), log_quote(&lg, "two\nlines \"quoted\" \\ end"));
	log_event(&lg, "error", "op=startup reason=%s", log_quote(&lg, "disk full"));
	log_flush(&lg);

	len = recv_one(rx, buf, sizeof buf);
	n = parse_datagram(buf, (size_t)len, f, 64);
	cr_assert_str_eq(field(f, n, "COORD_EVENT"), "grant", "COORD_EVENT is the event");
	cr_assert_str_eq(field(f, n, "COORD_RESOURCE"), "/srv/a b.db", "a quoted value is unquoted");
	cr_assert_str_eq(field(f, n, "COORD_TOKEN"), "42", "a plain value is as it is");
	cr_assert_str_eq(field(f, n, "COORD_MAX_CLIENTS"), "3", "'-' in a key becomes '_'");
	cr_assert_str_eq(field(f, n, "COORD_LABEL"), "two\nlines \"quoted\" \\ end",
	                 "escapes are undone: a newline travels in the binary form");
	cr_assert_str_eq(field(f, n, "PRIORITY"), "6", "a grant is info");
	cr_assert_str_eq(field(f, n, "SYSLOG_IDENTIFIER"), "coordd", "the identifier is coordd");
	cr_assert_null(field(f, n, "COORD_TS"), "the journal stamps the time itself");
	cr_assert(!strncmp(field(f, n, "MESSAGE"), "event=grant lease=7 resource=\"/srv/a b.db\"", 41),
	          "MESSAGE is the line without ts=: %s", field(f, n, "MESSAGE"));

	len = recv_one(rx, buf, sizeof buf);
	n = parse_datagram(buf, (size_t)len, f, 64);
	cr_assert_str_eq(field(f, n, "COORD_EVENT"), "error", "one datagram per line, in order");
	cr_assert_str_eq(field(f, n, "PRIORITY"), "3", "an error is priority 3");
	cr_assert_str_eq(field(f, n, "COORD_REASON"), "disk full", "the reason, unquoted");
	close(rx);
}

Test(log, a_line_the_journal_refuses_goes_to_the_journal_stream_with_its_priority)
{
	char path[512], err_path[512], stream[64];
	struct stat st;
	size_t len;
	char *buf;
	int rx, saved = dup(2), errfd;
	snprintf(path, sizeof path, "%s/journal.sock", dir);
	snprintf(err_path, sizeof err_path, "%s/stderr", dir);
	rx = bind_dgram(path);
	errfd = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	cr_assert(errfd >= 0 && fstat(errfd, &st) == 0, "cannot open %s", err_path);
	snprintf(stream, sizeof stream, "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	dup2(errfd, 2);
	setenv("JOURNAL_STREAM", stream, 1);
	cr_assert_eq(log_open_journal(&lg, path), 0, "log_open_journal: %s", strerror(errno));
	cr_assert_eq(lg.stderr_is_journal, 1, "JOURNAL_STREAM names stderr: a journal stream");
	close(rx); /* the journal goes away */
	unlink(path);
	log_event(&lg, "instance-unwritable", "dir=/x");
	dup2(saved, 2);
	close(saved);
	close(errfd);
	unsetenv("JOURNAL_STREAM");
	buf = slurp(err_path, &len);
	cr_assert(!strncmp(buf, "<4>ts=", 6) && strstr(buf, " event=instance-unwritable dir=/x\n"),
	          "the line goes to the stream, with priority 4 (warning) as its prefix: '%s'", buf);
	free(buf);
}
