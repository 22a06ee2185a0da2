/* Unit tests of coord_canonicalize(): every spelling of one file is one
 * resource, keys stay keys, and bad names fail clearly.  No broker: only
 * the harness's private directory. */
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
	cr_assert_eq(coord_canonicalize(NULL, got, sizeof got), COORD_EINVAL, "NULL name");
}

Test(names, strerror_names_the_code)
{
	cr_assert(strncmp(coord_strerror(COORD_ETIMEDOUT), "COORD_ETIMEDOUT: ", 17) == 0,
	          "coord_strerror must start with the code name, got '%s'",
	          coord_strerror(COORD_ETIMEDOUT));
	cr_assert_str_eq(coord_errname(12345), "COORD_E?", "unknown codes must be named COORD_E?");
}
