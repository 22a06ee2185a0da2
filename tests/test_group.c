/* Instances shared by several users: a broker started with --group serves
 * root, its own user and the group's members, and refuses everyone else;
 * --admin-group members may revoke anyone's lease; a .coord-instance
 * marker keeps a file to one instance; clients in another PID namespace
 * get leases and lose them when killed; /var/lib/coord, once shared, is
 * everyone's default instance.
 *
 * The clients run as real users made by scripts/setup.sh: coord-test-a
 * is in group coord-test, coord-test-b is not.  Without root or without
 * them the tests that need them are skipped. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define GROUP "coord-test"
#define MEMBER "coord-test-a"
#define OUTSIDER "coord-test-b"

/* Each test starts its own broker, with its own options. */
static struct harness h;
static char data[256];         /* a directory of databases, of group GROUP */

static void group_setup(void)
{
	harness_init(&h);
	harness_tmpdir(data, sizeof data, "coord-group-data");
}

static void group_teardown(void)
{
	harness_fini(&h);
	harness_rmtree(data);
}

TestSuite(group, .init = group_setup, .fini = group_teardown, .timeout = 60);

/* Skips the test without root or without the test users; else gives the
 * data directory to the group and returns its gid. */
static gid_t need_users(void)
{
	struct group *g = getgrnam(GROUP);
	if (geteuid() != 0)
		cr_skip_test("needs root: it runs clients as other users");
	if (!g || !getpwnam(MEMBER) || !getpwnam(OUTSIDER))
		cr_skip_test("needs users %s and %s and group %s: run scripts/setup.sh as root", MEMBER,
		             OUTSIDER, GROUP);
	cr_assert(chown(data, 0, g->gr_gid) == 0 && chmod(data, 02770) == 0,
	          "cannot give %s to group %s: %s", data, GROUP, strerror(errno));
	return g->gr_gid;
}

/* A database file in the data directory, readable and writable by the
 * group. */
static const char *database(const char *name)
{
	const char *path = harness_file(data, name);
	FILE *f = fopen(path, "w");
	cr_assert(f, "cannot create %s: %s", path, strerror(errno));
	fclose(f);
	cr_assert(chmod(path, 0660) == 0, "chmod %s", path);
	return path;
}

static int log_has(const char *needle)
{
	static char buf[1 << 16];
	FILE *f = fopen(harness_path(&h, "broker.log"), "r");
	size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

static int log_has_cond(void *needle)
{
	return log_has(needle);
}

/* The pid and uid of the one holder of resource, as the broker sees them;
 * 0 if there is none. */
static pid_t holder_of(const char *resource, uid_t *uid)
{
	coord_options_t o = { .dir = h.dir, .no_autostart = 1 };
	coord_lease_info_t *v = NULL;
	char name[COORD_NAME_MAX + 1];
	size_t n = 0;
	pid_t pid = 0;
	coord_t *c;
	cr_assert(coord_canonicalize(resource, name, sizeof name) > 0, "canonicalize %s", resource);
	cr_assert_eq(coord_connect(&c, &o), 0, "connect to %s as root", h.dir);
	cr_assert_eq(coord_list(c, &v, &n), 0, "list");
	coord_disconnect(c);
	for (size_t i = 0; i < n; i++) {
		if (!v[i].waiting && !strcmp(v[i].resource, name)) {
			pid = (pid_t)v[i].pid;
			*uid = (uid_t)v[i].uid;
		}
	}
	coord_free(v);
	return pid;
}

static void expect_mode(const char *name, mode_t mode, gid_t gid)
{
	struct stat st;
	const char *path = name ? harness_path(&h, name) : h.dir;
	cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	cr_assert_eq(st.st_mode & 07777, mode, "%s must have mode %o for the group, has %o", path,
	             (unsigned)mode, (unsigned)(st.st_mode & 07777));
	cr_assert_eq(st.st_gid, gid, "%s must belong to group %s (gid %u), has gid %u", path, GROUP,
	             (unsigned)gid, (unsigned)st.st_gid);
}

Test(group, the_broker_gives_the_instance_to_its_group)
{
	gid_t gid = need_users();
	harness_start_broker(&h, "--group", GROUP, NULL);
	expect_mode(NULL, 02770, gid);
	expect_mode(COORD_SOCKET_NAME, 0660, gid);
	expect_mode(COORD_SHM_NAME, 0640, gid);
	expect_mode(COORD_STATE_NAME, 0640, gid);
	expect_mode(COORD_LEASES_NAME, 0640, gid);
	expect_mode("keys", 02770, gid);
}

Test(group, root_and_a_member_take_turns_on_one_write_lease)
{
	struct actor root, member;
	const char *db, *got;
	uid_t uid = 0;
	need_users();
	harness_start_broker(&h, "--group", GROUP, NULL);
	db = database("app.db");
	actor_start(&root, &h);
	actor_start_as(&member, &h, MEMBER);
	actor_send(&root, "acquire write -1 %s", db);
	got = actor_reply(&root, 5000);
	cr_assert_str_eq(got, "ok 1", "root's write lease on %s: '%s'", db, got);
	actor_send(&member, "acquire write 20000 %s", db);
	cr_assert(harness_wait_count(&h, db, COORD_WRITE, 1, 1),
	          "%s's write request must wait behind root's lease in the same broker", MEMBER);
	cr_assert(!actor_has_reply(&member), "never two writers: %s must not be answered while root "
	          "holds %s, got '%s'", MEMBER, db, actor_reply(&member, 0));
	actor_send(&root, "release");
	cr_assert_str_eq(actor_reply(&root, 5000), "ok", "root releases");
	got = actor_reply(&member, 5000);
	cr_assert_str_eq(got, "ok 2", "%s must get the write lease (token 2) once root released: '%s'",
	                 MEMBER, got);
	holder_of(db, &uid);
	cr_assert_eq(uid, getpwnam(MEMBER)->pw_uid, "the holder must be %s", MEMBER);
	actor_stop(&member);
	actor_stop(&root);
}

Test(group, an_outsider_is_refused_with_eperm_naming_the_group)
{
	char out[4096], want[64], sock[512];
	need_users();
	harness_start_broker(&h, "--group", GROUP, NULL);
	/* The directory's mode keeps the outsider out. */
	cr_assert_eq(harness_coordctl_as(OUTSIDER, out, sizeof out, "--dir '%s' status", h.dir), 69,
	             "an outsider's coordctl status must exit 69: %s", out);
	cr_assert(strstr(out, "COORD_EPERM") && strstr(out, "group " GROUP) && strstr(out, h.dir) &&
	                  strstr(out, OUTSIDER),
	          "coordctl must name the error, the group, the instance and the user: %s", out);
	/* Open the way on purpose (a loosened mode, a bind mount): the broker
	 * must refuse by itself. */
	snprintf(sock, sizeof sock, "%s", harness_path(&h, COORD_SOCKET_NAME));
	cr_assert(chmod(h.dir, 02771) == 0 && chmod(sock, 0666) == 0 &&
	                  chmod(harness_path(&h, COORD_SHM_NAME), 0644) == 0,
	          "open up %s", h.dir);
	cr_assert_eq(harness_coordctl_as(OUTSIDER, out, sizeof out, "--dir '%s' status", h.dir), 69,
	             "the broker must refuse an outsider that reaches its socket: %s", out);
	cr_assert(strstr(out, "COORD_EPERM") && strstr(out, "group " GROUP),
	          "the refusal must be COORD_EPERM and name the group: %s", out);
	snprintf(want, sizeof want, "last_uid=%u", (unsigned)getpwnam(OUTSIDER)->pw_uid);
	cr_assert(harness_wait(log_has_cond, "event=refuse-client reason=not-in-group", 5000) &&
	                  log_has(want),
	          "the broker must log event=refuse-client reason=not-in-group with %s", want);
	cr_assert_eq(harness_coordctl_as(MEMBER, out, sizeof out, "--dir '%s' status", h.dir), 0,
	             "a member still gets in: %s", out);
	cr_assert(strstr(out, "shared by group " GROUP), "status says who shares it: %s", out);
}

/* A root process holds a write lease on db; `member` revokes it. */
static int member_revokes_roots_lease(const char *db, struct actor *holder, char *out,
                                      size_t size)
{
	const char *got;
	actor_start(holder, &h);
	actor_send(holder, "acquire write -1 %s", db);
	got = actor_reply(holder, 5000);
	cr_assert(!strncmp(got, "ok", 2), "root's write lease: '%s'", got);
	return harness_coordctl_as(MEMBER, out, size, "--dir '%s' revoke --grace 0.2 '%s'", h.dir,
	                           db);
}

Test(group, an_admin_group_member_revokes_another_users_lease)
{
	struct actor holder;
	char out[4096];
	int status = 0;
	need_users();
	harness_start_broker(&h, "--group", GROUP, "--admin-group", GROUP, NULL);
	cr_assert_eq(member_revokes_roots_lease(database("held.db"), &holder, out, sizeof out), 0,
	             "a member of --admin-group must revoke root's lease: %s", out);
	cr_assert_eq(waitpid(holder.pid, &status, 0), holder.pid, "the holder must be gone");
	holder.pid = 0;
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
	          "the root broker must have sent the holder SIGTERM (status 0x%x)", status);
	cr_assert_eq(harness_count(&h, harness_file(data, "held.db"), 0, 0), 0,
	             "the revoked lease must be gone");
}

Test(group, without_the_admin_group_a_member_may_not_revoke_others)
{
	struct actor holder;
	char out[4096];
	need_users();
	harness_start_broker(&h, "--group", GROUP, NULL);
	cr_assert_eq(member_revokes_roots_lease(database("held.db"), &holder, out, sizeof out), 1,
	             "a member outside any admin group may not revoke root's lease: %s", out);
	cr_assert(strstr(out, "COORD_EPERM"), "and is told COORD_EPERM: %s", out);
	actor_send(&holder, "valid");
	cr_assert_str_eq(actor_reply(&holder, 5000), "1", "root's lease must still be held");
	cr_assert(log_has("event=revoke-refused"), "the broker logs the refusal");
	actor_stop(&holder);
}

/* Hold limits signal holders, so only admins may set them: a member may
 * not, a member of --admin-group may. */
Test(group, only_admins_set_hold_limits)
{
	char out[4096];
	const char *db;
	need_users();
	harness_start_broker(&h, "--group", GROUP, NULL);
	db = database("limited.db");
	cr_assert_eq(harness_coordctl_as(MEMBER, out, sizeof out,
	                                 "--dir '%s' limit '%s' --max-hold 1", h.dir, db), 1,
	             "a member may not set hold limits: %s", out);
	cr_assert(strstr(out, "COORD_EPERM") && strstr(out, "admin-group"),
	          "and is told COORD_EPERM and who may: %s", out);
	cr_assert(log_has("event=limits-refused"), "the broker logs the refusal");
	cr_assert_eq(harness_coordctl(out, sizeof out, "limit '%s'", db), 0, "%s", out);
	cr_assert(strstr(out, "limits none"), "nothing was set: %s", out);
	harness_stop_broker(&h);
	harness_start_broker(&h, "--group", GROUP, "--admin-group", GROUP, NULL);
	cr_assert_eq(harness_coordctl_as(MEMBER, out, sizeof out,
	                                 "--dir '%s' limit '%s' --max-hold 1", h.dir, db), 0,
	             "an --admin-group member may: %s", out);
}

Test(group, a_marker_sends_another_instances_clients_away)
{
	struct harness other;
	coord_options_t here = { .no_autostart = 1 }, there = { .no_autostart = 1 };
	char out[4096], link[300], named[COORD_DIR_MAX + 1], real[COORD_DIR_MAX + 1];
	const char *db = database("one.db");
	coord_resource_t *r;
	coord_lease_t *l;
	coord_t *c;
	int rc;

	harness_start_broker(&h, NULL);
	harness_init(&other);
	harness_start_broker(&other, NULL);
	setenv("COORD_DIR", h.dir, 1);
	cr_assert_eq(harness_coordctl(out, sizeof out, "--dir '%s' share '%s'", h.dir, db), 0,
	             "coordctl share: %s", out);
	cr_assert(realpath(h.dir, real), "realpath %s", h.dir);
	rc = coord_file_instance(db, named, sizeof named);
	cr_assert(rc > 0 && !strcmp(named, real), "the marker must name %s, got %d '%s'", real, rc,
	          rc > 0 ? named : "");

	there.dir = other.dir;
	cr_assert_eq(coord_connect(&c, &there), 0, "connect to the other instance");
	rc = coord_resource_open(c, db, &r);
	cr_assert_eq(rc, COORD_EINSTANCE, "another instance's client must get COORD_EINSTANCE, got %s",
	             coord_errname(rc));
	rc = coord_acquire(c, db, COORD_WRITE, 0, NULL, &l);
	cr_assert_eq(rc, COORD_EINSTANCE, "and so must its coord_acquire(), got %s", coord_errname(rc));
	rc = coord_acquire(c, "a-key", COORD_WRITE, 0, NULL, &l);
	cr_assert_eq(rc, 0, "keys have no marker: %s", coord_errname(rc));
	coord_release(l);
	coord_disconnect(c);

	/* The instance named, through another spelling of its directory. */
	snprintf(link, sizeof link, "%s/inst-link", data);
	cr_assert(symlink(h.dir, link) == 0, "symlink %s", link);
	here.dir = link;
	cr_assert_eq(coord_connect(&c, &here), 0, "connect through %s", link);
	rc = coord_acquire(c, db, COORD_WRITE, 0, NULL, &l);
	cr_assert_eq(rc, 0, "the instance the marker names must grant, got %s", coord_errname(rc));
	coord_release(l);
	coord_disconnect(c);

	rc = harness_coordctl(out, sizeof out, "--dir '%s' run --write '%s' -- true", other.dir, db);
	cr_assert_eq(rc, 1, "coordctl run through another instance must exit 1: %s", out);
	cr_assert(strstr(out, "COORD_EINSTANCE") && strstr(out, real),
	          "and say COORD_EINSTANCE and which instance to use (%s): %s", real, out);
	cr_assert_eq(coord_file_instance(harness_path(&other, "x.db"), named, sizeof named),
	             COORD_ENOENT, "a directory without a marker has no instance");
	harness_fini(&other);
}

/* Runs `unshare --pid --fork` with the NULL-terminated command after it;
 * returns the unshare process. */
static pid_t start_unshared(const char *const *cmd)
{
	const char *argv[32] = { "unshare", "--pid", "--fork" };
	int n = 3;
	pid_t pid;
	while (*cmd && n < 31)
		argv[n++] = *cmd++;
	argv[n] = NULL;
	pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) {
		execvp(argv[0], (char **)argv);
		_exit(127);
	}
	return pid;
}

static int pid_namespaces_work(void)
{
	const char *const cmd[] = { "true", NULL };
	int status = 0;
	pid_t pid = start_unshared(cmd);
	return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

Test(group, a_holder_in_another_pid_namespace_is_reclaimed_when_killed)
{
	struct passwd *pw;
	struct actor next;
	char uid[16], gid[16], nspid[4096], script[600], pidfile[300], want[64];
	const char *db, *got, *line;
	uid_t holder_uid = 0;
	pid_t unshared, holder;
	long here = 0, inner = 0;
	int status;

	need_users();
	if (!pid_namespaces_work())
		cr_skip_test("unshare --pid --fork does not work here");
	harness_start_broker(&h, "--group", GROUP, NULL);
	db = database("ns.db");
	pw = getpwnam(MEMBER);
	snprintf(uid, sizeof uid, "--reuid=%u", (unsigned)pw->pw_uid);
	snprintf(gid, sizeof gid, "--regid=%u", (unsigned)pw->pw_gid);
	snprintf(pidfile, sizeof pidfile, "%s/ns.pid", data);
	snprintf(script, sizeof script, "echo $$ > '%s'; exec sleep 600", pidfile);
	{
		const char *const cmd[] = { "setpriv", uid, gid, "--init-groups",
			                    getenv("COORD_TEST_COORDCTL"), "--dir", h.dir, "run",
			                    "--write", db, "--", "sh", "-c", script, NULL };
		unshared = start_unshared(cmd);
	}
	cr_assert(harness_wait(harness_pid_in_file, pidfile, 10000),
	          "the command in the new PID namespace must start under its lease");
	holder = holder_of(db, &holder_uid);
	cr_assert(holder > 0, "the broker must list the namespaced holder of %s", db);
	cr_assert_eq(holder_uid, pw->pw_uid, "the holder is %s", MEMBER);
	cr_assert(harness_read_proc(holder, "status", nspid, sizeof nspid) > 0 &&
	                  (line = strstr(nspid, "NSpid:")),
	          "/proc/%d/status must exist: the broker's pid is our namespace's", (int)holder);
	cr_assert(sscanf(line, "NSpid: %ld %ld", &here, &inner) == 2 && here == holder && inner == 1,
	          "the holder (pid %d here) must be pid 1 of its own namespace: %.40s", (int)holder,
	          line);

	actor_start(&next, &h);
	actor_send(&next, "acquire write 20000 %s", db);
	cr_assert(harness_wait_count(&h, db, COORD_WRITE, 1, 1), "the next writer must wait");
	cr_assert_eq(kill(holder, SIGKILL), 0, "SIGKILL the namespaced holder %d", (int)holder);
	got = actor_reply(&next, 10000);
	cr_assert_str_eq(got, "ok 2",
	                 "the next writer must be granted once the namespaced holder is killed: '%s'",
	                 got);
	snprintf(want, sizeof want, "pid=%d", (int)holder);
	cr_assert(log_has("event=reclaim") && log_has(want), "the broker logs the reclaim of %s", want);
	cr_assert_eq(waitpid(unshared, &status, 0), unshared, "unshare ends with its namespace");
	actor_stop(&next);
}

/* What coord_default_dir() says as `user`, in a child: written to fd. */
static void default_dir_as(const char *user, int fd)
{
	char buf[COORD_DIR_MAX + 1];
	int status;
	pid_t pid = fork();
	if (pid == 0) {
		if (harness_become(user) < 0)
			_exit(1);
		unsetenv("XDG_STATE_HOME");
		setenv("HOME", "/nonexistent", 1);
		if (coord_default_dir(buf, sizeof buf) < 0)
			_exit(1);
		dprintf(fd, "%s %s\n", user, buf);
		_exit(0);
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
}

/* In a private mount namespace with a tmpfs on /var/lib, so the machine's
 * /var/lib/coord is never touched. */
Test(group, a_shared_var_lib_coord_is_everyones_default)
{
	char out[1024] = "";
	int fds[2], status = 0;
	ssize_t n;
	gid_t gid = need_users();
	pid_t pid;

	cr_assert(pipe(fds) == 0, "pipe");
	pid = fork();
	cr_assert(pid >= 0, "fork");
	if (pid == 0) {
		close(fds[0]);
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("tmpfs", "/var/lib", "tmpfs", 0, "mode=0755") < 0)
			_exit(77);
		if (mkdir(COORD_SYSTEM_DIR, 0700) < 0)
			_exit(1);
		dprintf(fds[1], "private:\n");
		default_dir_as(MEMBER, fds[1]);
		if (chown(COORD_SYSTEM_DIR, 0, gid) < 0 || chmod(COORD_SYSTEM_DIR, 02770) < 0)
			_exit(1);
		dprintf(fds[1], "shared:\n");
		default_dir_as(MEMBER, fds[1]);
		default_dir_as(OUTSIDER, fds[1]);
		_exit(0);
	}
	close(fds[1]);
	n = read(fds[0], out, sizeof out - 1);
	while (n > 0 && (size_t)n < sizeof out - 1) {
		ssize_t more = read(fds[0], out + n, sizeof out - 1 - (size_t)n);
		if (more <= 0)
			break;
		n += more;
	}
	close(fds[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid, "the namespace child");
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		cr_skip_test("no private mount namespace here");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the namespace child failed: 0x%x",
	          status);
	cr_assert(strstr(out, "private:\n" MEMBER " /nonexistent/.local/state/coord\n"),
	          "a private /var/lib/coord (0700) must not be a user's default: %s", out);
	cr_assert(strstr(out, "shared:\n" MEMBER " " COORD_SYSTEM_DIR "\n" OUTSIDER " " COORD_SYSTEM_DIR
	                      "\n"),
	          "a shared /var/lib/coord (2770) must be every user's default, members or not "
	          "(an outsider is then refused, never given a private instance): %s", out);
}
