/* One file is one resource, whoever names it, seen through the real
 * broker: a writer that leases a database before it exists and creates it
 * under the lease keeps out a second writer who names the file another way
 * (from another cwd, by its absolute path, through a symlink made before
 * the file); the same file through a bind mount is the same resource; and
 * key:foo is not the file foo.  Bind mounts are made in a private mount
 * namespace of a child process, so nothing leaks out of the test; they
 * need root, and are skipped without it. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

HARNESS_SUITE(names_broker, 60);

#define REPLY_MS 10000

/* realpath of the test directory (it may sit under a symlinked $TMPDIR),
 * and "that/NAME", in one of 16 rotating buffers. */
static const char *real_path(const char *name)
{
	static char buf[16][PATH_MAX + 64];
	static unsigned n;
	char real[PATH_MAX], *b = buf[n++ % 16];
	cr_assert(realpath(h.dir, real), "realpath of the test directory: %s", strerror(errno));
	snprintf(b, sizeof buf[0], "%s%s%s", real, *name ? "/" : "", name);
	return b;
}

/* Runs fn in the cwd `cwd` for the length of the call (actors forked in it
 * keep it). */
static void in_dir(const char *cwd, void (*fn)(struct actor *), struct actor *a)
{
	char back[PATH_MAX];
	cr_assert(getcwd(back, sizeof back), "getcwd: %s", strerror(errno));
	cr_assert_eq(chdir(cwd), 0, "chdir %s: %s", cwd, strerror(errno));
	fn(a);
	cr_assert_eq(chdir(back), 0, "chdir back to %s: %s", back, strerror(errno));
}

/* ---- a writer that creates the file it holds ----
 *
 * A child with the actor's pipes (so actor_send(), actor_reply() and
 * actor_stop() drive it): it connects, takes a write lease on "new.db" in
 * its cwd, where the file does not exist, and answers "acquired TOKEN".
 * Then "create" makes the file through the same relative name ("created"),
 * and "release" gives the lease back ("released"). */
static void creator_main(int in, int out)
{
	coord_t *c = NULL;
	coord_lease_t *l = NULL;
	char line[64];
	FILE *f = fdopen(in, "r");
	int rc = coord_connect(&c, NULL);
	if (rc == 0)
		rc = coord_acquire(c, "new.db", COORD_WRITE, REPLY_MS, "creator", &l);
	if (rc < 0) {
		dprintf(out, "err %s\n", coord_errname(rc));
		_exit(1);
	}
	dprintf(out, "acquired %llu\n", (unsigned long long)coord_lease_token(l));
	while (f && fgets(line, sizeof line, f)) {
		if (!strcmp(line, "create\n")) {
			int fd = open("new.db", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
			int ok = fd >= 0 && write(fd, "A", 1) == 1;
			if (fd >= 0)
				close(fd);
			dprintf(out, ok ? "created\n" : "err create %s\n", strerror(errno));
		} else if (!strcmp(line, "release\n")) {
			rc = coord_release(l);
			dprintf(out, rc == 0 ? "released\n" : "err %s\n", coord_errname(rc));
		} else if (!strcmp(line, "exit\n")) {
			break;
		}
	}
	coord_disconnect(c);
	_exit(0);
}

static void creator_start(struct actor *a)
{
	int cmd[2], rep[2];
	cr_assert(pipe(cmd) == 0 && pipe(rep) == 0, "pipe failed");
	a->pid = fork();
	cr_assert(a->pid >= 0, "fork failed");
	if (a->pid == 0) {
		close(cmd[1]);
		close(rep[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		creator_main(cmd[0], rep[1]);
	}
	close(cmd[0]);
	close(rep[1]);
	a->cmd_fd = cmd[1];
	a->reply_fd = rep[0];
}

static void actor_start_here(struct actor *a)
{
	actor_start(a, &h);
}

/* How the second writer names the file, and when it asks. */
struct spelling {
	char how[40];     /* what the case is, for messages */
	char name[16];    /* relative to b/; "" means a/new.db's absolute path */
	int before;       /* 1: asks before the creator made the file */
};

ParameterizedTestParameters(names_broker, create_while_waiting)
{
	static struct spelling cases[] = {
		{ "its absolute path", "", 0 },
		{ "a relative path from another cwd", "../a/new.db", 0 },
		{ "a symlink made before the file", "link.db", 0 },
		{ "a dangling symlink", "link.db", 1 },
		{ "a relative path, before creation", "../a/new.db", 1 },
	};
	return cr_make_param_array(struct spelling, cases, sizeof cases / sizeof cases[0]);
}

/* Writer A leases new.db from a/ before it exists and creates it; writer B,
 * in b/, asks for the same file its own way and must wait for A: never two
 * writers.  Then B is granted, with the next fencing token. */
ParameterizedTest(struct spelling *s, names_broker, create_while_waiting)
{
	struct actor a, b;
	const char *want = real_path("a/new.db"), *got;
	char name[PATH_MAX + 64];
	cr_assert_eq(mkdir(harness_path(&h, "a"), 0700), 0, "mkdir a");
	cr_assert_eq(mkdir(harness_path(&h, "b"), 0700), 0, "mkdir b");
	cr_assert_eq(symlink("../a/new.db", harness_path(&h, "b/link.db")), 0,
	             "the symlink, made before its target");
	snprintf(name, sizeof name, "%s", *s->name ? s->name : want);

	in_dir(harness_path(&h, "a"), creator_start, &a);
	got = actor_reply(&a, REPLY_MS);
	cr_assert_str_eq(got, "acquired 1", "writer A could not lease new.db before it exists: '%s'",
	                 got);
	if (!s->before) {
		actor_send(&a, "create");
		got = actor_reply(&a, REPLY_MS);
		cr_assert_str_eq(got, "created", "writer A could not create new.db: '%s'", got);
	}
	in_dir(harness_path(&h, "b"), actor_start_here, &b);
	actor_send(&b, "acquire write -1 %s", name);
	cr_assert(harness_wait_count(&h, want, COORD_WRITE, 1, 1),
	          "writer B, naming %s through %s (%s), must queue behind writer A on %s; the broker "
	          "lists %d waiter(s) there and B says '%s'",
	          want, s->how, name, want, harness_count(&h, want, COORD_WRITE, 1),
	          actor_has_reply(&b) ? actor_reply(&b, 0) : "nothing");
	if (s->before) {
		actor_send(&a, "create");
		got = actor_reply(&a, REPLY_MS);
		cr_assert_str_eq(got, "created", "writer A could not create new.db: '%s'", got);
	}
	cr_assert(!actor_has_reply(&b), "writer B got an answer while A holds the file: '%s'",
	          actor_reply(&b, 0));
	cr_assert_eq(harness_count(&h, want, COORD_WRITE, 0), 1, "A alone must hold %s", want);

	actor_send(&a, "release");
	got = actor_reply(&a, REPLY_MS);
	cr_assert_str_eq(got, "released", "writer A's release: '%s'", got);
	got = actor_reply(&b, REPLY_MS);
	cr_assert_str_eq(got, "ok 2",
	                 "once A let go, B must get the file with the next token (one resource, "
	                 "one token sequence), got '%s'",
	                 got);
	actor_stop(&a);
	actor_stop(&b);
}

/* key:foo is a key, foo the file foo in the cwd: two resources.  A key's
 * kernel lock file is keys/k-foo, without the prefix. */
Test(names_broker, key_and_file_of_one_name_are_two_resources)
{
	coord_t *c1, *c2;
	coord_lease_t *k, *f, *l;
	char back[PATH_MAX];
	int rc;
	cr_assert(getcwd(back, sizeof back), "getcwd");
	cr_assert_eq(chdir(h.dir), 0, "chdir to the test directory");
	cr_assert_eq(coord_connect(&c1, NULL), 0, "connect 1");
	cr_assert_eq(coord_connect(&c2, NULL), 0, "connect 2");
	rc = coord_acquire(c1, "key:foo", COORD_WRITE, 0, NULL, &k);
	cr_assert_eq(rc, 0, "write on key:foo: %s", coord_strerror(rc));
	cr_assert_str_eq(coord_lease_resource(k), "key:foo", "the lease names the key as written");
	cr_assert_eq(access(harness_path(&h, "keys/k-foo"), F_OK), 0,
	             "the key's kernel lock must be keys/k-foo (no ':' in its file name)");
	rc = coord_acquire(c2, "foo", COORD_WRITE, 0, NULL, &f);
	cr_assert_eq(rc, 0, "the file foo is another resource than key:foo, yet: %s",
	             coord_strerror(rc));
	cr_assert_str_eq(coord_lease_resource(f), real_path("foo"),
	                 "a bare name is a path in the cwd");
	rc = coord_acquire(c2, "key:foo", COORD_WRITE, 0, NULL, &l);
	cr_assert_eq(rc, COORD_EBUSY, "a second writer of key:foo must be refused, got %s",
	             coord_errname(rc));
	cr_assert_eq(coord_acquire(c2, "key:", COORD_WRITE, 0, NULL, &l), COORD_ENAME,
	             "key: alone names nothing");
	cr_assert_eq(coord_acquire(c2, "key:a/b", COORD_WRITE, 0, NULL, &l), COORD_ENAME,
	             "a key may not contain '/'");
	coord_release(f);
	coord_release(k);
	coord_disconnect(c2);
	coord_disconnect(c1);
	cr_assert_eq(chdir(back), 0, "chdir back");
}

/* ---- bind mounts ---- */

/* Runs check(why, size) in a child that has a private mount namespace,
 * where it may mount what it likes: the namespace dies with the child.
 * check returns 0 when all is well, else writes why.  Skips the test when
 * not root or when the namespace cannot be had. */
static void in_private_mounts(int (*check)(char *why, size_t size))
{
	char why[1024] = "";
	int fds[2], status;
	ssize_t n;
	pid_t pid;
	if (geteuid() != 0)
		cr_skip_test("bind mounts need root");
	cr_assert_eq(pipe(fds), 0, "pipe");
	pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) {
		int rc = 2;
		close(fds[0]);
		if (unshare(CLONE_NEWNS) < 0)
			snprintf(why, sizeof why, "unshare(CLONE_NEWNS): %s", strerror(errno));
		else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			snprintf(why, sizeof why, "making / private: %s", strerror(errno));
		else
			rc = check(why, sizeof why);
		if (write(fds[1], why, strlen(why)) < 0)
			rc = 1;
		_exit(rc);
	}
	close(fds[1]);
	n = read(fds[0], why, sizeof why - 1);
	why[n > 0 ? n : 0] = 0;
	close(fds[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid");
	cr_assert(WIFEXITED(status), "the child in its own mount namespace died: status %d", status);
	if (WEXITSTATUS(status) == 2)
		cr_skip_test("no private mount namespace here: %s", why);
	cr_assert_eq(WEXITSTATUS(status), 0, "%s", why);
}

/* 0 if every name in names (NULL-terminated) canonicalises to want, else
 * 1 with why written. */
static int all_name(const char *want, const char *const *names, char *why, size_t size)
{
	char got[COORD_NAME_MAX + 1];
	for (; *names; names++) {
		int rc = coord_canonicalize(*names, got, sizeof got);
		if (rc < 0 || strcmp(got, want)) {
			snprintf(why, size, "%s must be named %s, whatever mount it is reached through, got %s",
			         *names, want, rc < 0 ? coord_errname(rc) : got);
			return 1;
		}
	}
	return 0;
}

static int mount_or_say(const char *src, const char *dst, const char *type, unsigned long flags,
                        char *why, size_t size)
{
	if (mount(src, dst, type, flags, type ? "size=1m" : NULL) == 0)
		return 0;
	snprintf(why, size, "mount %s on %s: %s", src, dst, strerror(errno));
	return 2;
}

static int bind_spellings_agree(char *why, size_t size)
{
	const char *app[] = { real_path("bind/app.db"), "bind/app.db", "file-bind.db",
		              "sub/app.db", NULL };
	const char *fresh[] = { real_path("bind/new.db"), "bind/new.db", "sub/new.db", NULL };
	const char *dirs[] = { "bind", "bind/", "sub", NULL };
	int rc;
	if (chdir(h.dir) < 0) {
		snprintf(why, size, "chdir: %s", strerror(errno));
		return 1;
	}
	close(open("sub/app.db", O_CREAT | O_WRONLY, 0600));
	close(open("file-bind.db", O_CREAT | O_WRONLY, 0600));
	if ((rc = mount_or_say(real_path("sub"), real_path("bind"), NULL, MS_BIND, why, size)) ||
	    (rc = mount_or_say(real_path("sub/app.db"), real_path("file-bind.db"), NULL, MS_BIND, why,
	                       size)))
		return rc;
	if ((rc = all_name(real_path("sub/app.db"), app, why, size)) ||
	    (rc = all_name(real_path("sub/new.db"), fresh, why, size)) ||
	    (rc = all_name(real_path("sub"), dirs, why, size)))
		return rc;
	return 0;
}

/* A directory bind-mounted elsewhere, a file bind-mounted onto another
 * file: every way in gives the name through the filesystem's own mount. */
Test(names_broker, bind_mounted_spellings_agree)
{
	cr_assert_eq(mkdir(harness_path(&h, "sub"), 0700), 0, "mkdir sub");
	cr_assert_eq(mkdir(harness_path(&h, "bind"), 0700), 0, "mkdir bind");
	in_private_mounts(bind_spellings_agree);
}

static int subdir_of_tmpfs_agrees(char *why, size_t size)
{
	const char *fs = real_path("fs"), *x = real_path("fs/x"), *alias = real_path("alias");
	const char *names[] = { real_path("alias/new.db"), NULL };
	int rc;
	if ((rc = mount_or_say("tmpfs", fs, "tmpfs", 0, why, size)))
		return rc;
	if (mkdir(x, 0700) < 0) {
		snprintf(why, size, "mkdir %s: %s", x, strerror(errno));
		return 1;
	}
	if ((rc = mount_or_say(x, alias, NULL, MS_BIND, why, size)))
		return rc;
	return all_name(real_path("fs/x/new.db"), names, why, size);
}

/* A subdirectory of a filesystem bind-mounted elsewhere: the name goes
 * through the mount of the whole filesystem (root "/"). */
Test(names_broker, bind_mounted_subdirectory_names_the_whole_filesystem)
{
	cr_assert_eq(mkdir(harness_path(&h, "fs"), 0700), 0, "mkdir fs");
	cr_assert_eq(mkdir(harness_path(&h, "alias"), 0700), 0, "mkdir alias");
	in_private_mounts(subdir_of_tmpfs_agrees);
}

static int bind_writers_exclude(char *why, size_t size)
{
	coord_t *c1 = NULL, *c2 = NULL;
	coord_lease_t *l1, *l2;
	int rc;
	if ((rc = mount_or_say(real_path("sub"), real_path("bind"), NULL, MS_BIND, why, size)))
		return rc;
	rc = coord_connect(&c1, NULL);
	if (rc == 0)
		rc = coord_connect(&c2, NULL);
	if (rc == 0)
		rc = coord_acquire(c1, real_path("bind/new.db"), COORD_WRITE, 0, NULL, &l1);
	if (rc < 0) {
		snprintf(why, size, "the first writer, through the bind mount: %s", coord_strerror(rc));
		return 1;
	}
	rc = coord_acquire(c2, real_path("sub/new.db"), COORD_WRITE, 0, NULL, &l2);
	coord_disconnect(c2);
	coord_disconnect(c1);
	if (rc != COORD_EBUSY) {
		snprintf(why, size,
		         "a second writer of new.db, not through the bind mount, must be refused while "
		         "the first holds it through the mount; got %s",
		         rc == 0 ? "a grant: two writers" : coord_errname(rc));
		return 1;
	}
	return 0;
}

/* Writers of one file that doesn't exist yet, one through a bind mount:
 * the broker sees one resource and lets only one in. */
Test(names_broker, bind_mounted_writers_exclude_each_other)
{
	cr_assert_eq(mkdir(harness_path(&h, "sub"), 0700), 0, "mkdir sub");
	cr_assert_eq(mkdir(harness_path(&h, "bind"), 0700), 0, "mkdir bind");
	in_private_mounts(bind_writers_exclude);
}

/* A key that an older library named without the prefix ("legacy") keeps
 * its fencing tokens when it is named key:legacy: the new resource takes
 * over the old one's durable token ceiling, so tokens never go back. */
Test(names_broker, bare_key_tokens_carry_over_to_key_prefix)
{
	coord_msg_hello hello = { { COORD_MSG_HELLO, 1 }, COORD_PROTO_VERSION, 0 };
	union {
		coord_msg_acquire m;
		char raw[sizeof(coord_msg_acquire) + 16];
	} acq = { .m = { { COORD_MSG_ACQUIRE, 2 }, COORD_WRITE, 0, 6, 0, 0 } };
	union {
		coord_msg_hdr h;
		coord_msg_grant g;
		char raw[COORD_MSG_MAX];
	} in;
	coord_t *c;
	coord_lease_t *l;
	uint64_t old_token;
	int fd = harness_dial(h.dir);

	cr_assert_geq(fd, 0, "raw connect: %s", strerror(errno));
	memcpy(acq.raw + sizeof acq.m, "legacy", 6);
	cr_assert_eq(send(fd, &hello, sizeof hello, 0), (ssize_t)sizeof hello, "HELLO");
	cr_assert_gt(recv(fd, &in, sizeof in, 0), 0, "WELCOME");
	cr_assert_eq(send(fd, &acq, sizeof acq.m + 6, 0), (ssize_t)(sizeof acq.m + 6), "ACQUIRE");
	cr_assert_geq(recv(fd, &in, sizeof in, 0), (ssize_t)sizeof in.g, "GRANT");
	cr_assert_eq(in.h.type, COORD_MSG_GRANT, "the bare key is granted to a raw client");
	old_token = in.g.token;
	close(fd);
	/* closing the raw connection gives the lease back; the acquire below
	 * waits for that if it has to */

	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, "key:legacy", COORD_WRITE, -1, NULL, &l), 0, "key:legacy");
	cr_assert_gt(coord_lease_token(l), old_token,
	             "key:legacy must continue the tokens of the bare key legacy (%llu after %llu)",
	             (unsigned long long)coord_lease_token(l), (unsigned long long)old_token);
	coord_release(l);
	coord_disconnect(c);
}
