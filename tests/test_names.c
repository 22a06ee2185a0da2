/* Unit tests of coord_canonicalize(): every spelling of one file is one
 * resource, before the file exists and after, keys are exactly the names
 * written key:NAME, and bad names fail clearly.  No broker: only the
 * harness's private directory.  (Bind mounts and the broker's view are in
 * test_names_broker.c.) */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[PATH_MAX];
static char cwd[PATH_MAX];

static void setup(void)
{
	char real[PATH_MAX], path[PATH_MAX + 32];
	harness_tmpdir(dir, sizeof dir, "coord-names");
	cr_assert(realpath(dir, real), "realpath of the test dir failed");
	snprintf(dir, sizeof dir, "%s", real);
	snprintf(path, sizeof path, "%s/sub", dir);
	cr_assert_eq(mkdir(path, 0700), 0, "mkdir sub failed");
	snprintf(path, sizeof path, "%s/sub/app.db", dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	cr_assert_eq(symlink("sub/app.db", strcat(strcpy(real, dir), "/link.db")), 0, "symlink failed");
	cr_assert(getcwd(cwd, sizeof cwd), "getcwd failed");
	cr_assert_eq(chdir(dir), 0, "chdir to the test dir failed");
}

static void teardown(void)
{
	if (chdir(cwd) != 0)
		cr_log_warn("cannot go back to %s: %s", cwd, strerror(errno));
	harness_rmtree(dir);
}

TestSuite(names, .init = setup, .fini = teardown);

Test(names, spellings_of_one_file_agree)
{
	const char *spellings[] = { "sub/app.db", "./sub/app.db", "sub/../sub/app.db", "link.db",
		                    "sub//app.db" };
	char want[PATH_MAX + 32], got[COORD_NAME_MAX + 1];
	snprintf(want, sizeof want, "%s/sub/app.db", dir);
	for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
		int rc = coord_canonicalize(spellings[i], got, sizeof got);
		cr_assert_gt(rc, 0, "'%s' failed: %s", spellings[i], coord_strerror(rc));
		cr_assert_str_eq(got, want, "'%s' must canonicalise to the real path", spellings[i]);
	}
	coord_canonicalize(want, got, sizeof got);
	cr_assert_str_eq(got, want, "an absolute canonical path must map to itself");
}

Test(names, existing_file_without_slash_is_a_path)
{
	char got[COORD_NAME_MAX + 1], want[PATH_MAX + 32];
	cr_assert_eq(chdir("sub"), 0, "chdir sub");
	snprintf(want, sizeof want, "%s/sub/app.db", dir);
	cr_assert_gt(coord_canonicalize("app.db", got, sizeof got), 0, "app.db must canonicalise");
	cr_assert_str_eq(got, want, "an existing file named without '/' is still a path");
}

Test(names, missing_file_in_existing_dir)
{
	char got[COORD_NAME_MAX + 1], want[PATH_MAX + 32];
	snprintf(want, sizeof want, "%s/sub/new.db", dir);
	cr_assert_gt(coord_canonicalize("sub/new.db", got, sizeof got), 0,
	             "a database that does not exist yet must still be leasable");
	cr_assert_str_eq(got, want, "missing file canonicalised wrongly");
}

/* The bug this guards (issue 8 item 7): "new.db" named before the file
 * existed was a key, and a path once it did, so two writers could hold
 * one file.  Every spelling, symlinks made before the target included,
 * must give one name, and the same name before and after creation. */
Test(names, missing_file_has_one_name_before_and_after_it_exists)
{
	const char *spellings[] = { "new.db",      "./new.db",    "sub/../new.db", "dangling.db",
		                    "chain.db",    "abslink.db",  "sub/up.db",     "sublink/../new.db",
		                    NULL /* the absolute path, below */ };
	const size_t count = sizeof spellings / sizeof spellings[0];
	char want[PATH_MAX + 32], got[COORD_NAME_MAX + 1];
	snprintf(want, sizeof want, "%s/new.db", dir);
	spellings[count - 1] = want;
	/* symlinks made before their target exists */
	cr_assert_eq(symlink("new.db", "dangling.db"), 0, "symlink dangling.db");
	cr_assert_eq(symlink("dangling.db", "chain.db"), 0, "symlink chain.db");
	cr_assert_eq(symlink(want, "abslink.db"), 0, "symlink abslink.db");
	cr_assert_eq(symlink("../new.db", "sub/up.db"), 0, "symlink sub/up.db (relative to sub/)");
	cr_assert_eq(symlink("sub", "sublink"), 0, "symlink sublink");
	for (int created = 0; created <= 1; created++) {
		if (created)
			close(open("new.db", O_CREAT | O_WRONLY, 0600));
		for (size_t i = 0; i < count; i++) {
			int rc = coord_canonicalize(spellings[i], got, sizeof got);
			cr_assert_gt(rc, 0, "'%s' %s the file exists failed: %s", spellings[i],
			             created ? "after" : "before", coord_strerror(rc));
			cr_assert_str_eq(got, want,
			                 "'%s' %s new.db exists must name the file itself: two names "
			                 "for one file let two writers in",
			                 spellings[i], created ? "after" : "before");
		}
	}
}

Test(names, symlink_loops_are_bad_names)
{
	char got[COORD_NAME_MAX + 1];
	cr_assert_eq(symlink("loop2", "loop1"), 0, "symlink loop1");
	cr_assert_eq(symlink("loop1", "loop2"), 0, "symlink loop2");
	cr_assert_eq(symlink("self", "self"), 0, "symlink self");
	cr_assert_eq(coord_canonicalize("loop1", got, sizeof got), COORD_ENAME,
	             "a symlink loop names no file: COORD_ENAME, not a name of its own");
	cr_assert_eq(coord_canonicalize("self", got, sizeof got), COORD_ENAME,
	             "a symlink to itself names no file");
}

Test(names, keys_need_their_prefix)
{
	char got[COORD_NAME_MAX + 1], want[PATH_MAX + 32], big[COORD_NAME_MAX + 2];
	cr_assert_eq(coord_canonicalize("key:foo", got, sizeof got), 7, "key:foo is a key");
	cr_assert_str_eq(got, "key:foo", "a key's canonical form is key:NAME itself");
	cr_assert_gt(coord_canonicalize("foo", got, sizeof got), 0, "foo is a path");
	snprintf(want, sizeof want, "%s/foo", dir);
	cr_assert_str_eq(got, want, "a bare name is a path in the cwd even if nothing is there");
	cr_assert_gt(coord_canonicalize("./key:foo", got, sizeof got), 0, "./key:foo");
	snprintf(want, sizeof want, "%s/key:foo", dir);
	cr_assert_str_eq(got, want, "a file named key:foo is reached as ./key:foo");
	cr_assert_gt(coord_canonicalize("KEY:foo", got, sizeof got), 0, "KEY:foo");
	snprintf(want, sizeof want, "%s/KEY:foo", dir);
	cr_assert_str_eq(got, want, "only lower-case key: makes a key");
	cr_assert_eq(coord_canonicalize("key:", got, sizeof got), COORD_ENAME, "key: names nothing");
	cr_assert_eq(coord_canonicalize("key:a/b", got, sizeof got), COORD_ENAME,
	             "a key may not contain '/'");
	memcpy(big, "key:", 4);
	memset(big + 4, 'k', COORD_NAME_MAX - 4);
	big[COORD_NAME_MAX] = 0;
	cr_assert_eq(coord_canonicalize(big, got, sizeof got), COORD_NAME_MAX,
	             "a key of COORD_NAME_MAX bytes, prefix included, fits");
	cr_assert_eq(coord_canonicalize(big, got, 100), COORD_EINVAL, "a buffer too small");
	big[COORD_NAME_MAX] = 'k';
	big[COORD_NAME_MAX + 1] = 0;
	cr_assert_eq(coord_canonicalize(big, got, sizeof got), COORD_ENAME, "a key one byte too long");
}

Test(names, keys_and_bad_names)
{
	char got[COORD_NAME_MAX + 1], big[COORD_NAME_MAX + 2];
	cr_assert_eq(coord_canonicalize("key:nightly-job", got, sizeof got), 15,
	             "a key keeps its length, prefix included");
	cr_assert_str_eq(got, "key:nightly-job", "a key must be kept as is");
	cr_assert_eq(coord_canonicalize("", got, sizeof got), COORD_ENAME, "empty name");
	memset(big, 'k', sizeof big - 1);
	big[sizeof big - 1] = 0;
	cr_assert_eq(coord_canonicalize(big, got, sizeof got), COORD_ENAME, "too long");
	cr_assert_eq(coord_canonicalize("nodir/x.db", got, sizeof got), COORD_ENAME,
	             "a path whose directory is missing");
	cr_assert_eq(coord_canonicalize("sub/app.db/x.db", got, sizeof got), COORD_ENAME,
	             "a path whose directory is a file");
	cr_assert_eq(coord_canonicalize("sub/", got, sizeof got) > 0, 1, "an existing directory");
	cr_assert_eq(coord_canonicalize("new/", got, sizeof got), COORD_ENAME,
	             "a missing name with a trailing '/' has no last component");
	cr_assert_eq(coord_canonicalize(NULL, got, sizeof got), COORD_EINVAL, "NULL name");
}

Test(names, strerror_names_the_code)
{
	cr_assert(strncmp(coord_strerror(COORD_ETIMEDOUT), "COORD_ETIMEDOUT: ", 17) == 0,
	          "coord_strerror must start with the code name, got '%s'",
	          coord_strerror(COORD_ETIMEDOUT));
	cr_assert_str_eq(coord_errname(12345), "COORD_E?", "unknown codes must be named COORD_E?");
}
