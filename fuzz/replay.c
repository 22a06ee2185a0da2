/* Runs a fuzz target over files, without libFuzzer: the committed corpus
 * replayed as a unit test by any compiler, or one crash reproduced.
 *
 * usage: replay-NAME [-v] FILE|DIR...
 *
 * Every regular file named, and every regular file directly inside a
 * directory named (in name order, dot files skipped), is one input.  -v
 * prints each name before it runs.  Prints "N passed, M failed" last;
 * exits 1 if a file cannot be read or no input was found (a wrong corpus
 * path must not pass).  A broken promise aborts inside the target, so a
 * failing input ends the run with its name on stderr. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static int verbose;
static size_t passed, failed;

/* Reads the whole file into a buffer of exactly its size, so ASan sees a
 * read past the end, and runs the target on it. */
static void run_file(const char *path)
{
	struct stat st;
	unsigned char *buf = NULL;
	size_t size, done = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		goto fail;
	size = (size_t)st.st_size;
	buf = malloc(size ? size : 1);
	if (!buf)
		goto fail;
	while (done < size) {
		ssize_t n = read(fd, buf + done, size - done);
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			goto fail;
		}
		done += (size_t)n;
	}
	close(fd);
	if (verbose)
		fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
	fuzz_input_name = path;
	LLVMFuzzerTestOneInput(buf, size);
	fuzz_input_name = NULL;
	free(buf);
	passed++;
	return;
fail:
	printf("FAIL: %s: %s\n", path, strerror(errno));
	failed++;
	free(buf);
	if (fd >= 0)
		close(fd);
}

static int visible_file(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static void run_dir(const char *dir)
{
	struct dirent **names;
	int n = scandir(dir, &names, visible_file, alphasort);
	if (n < 0) {
		printf("FAIL: %s: %s\n", dir, strerror(errno));
		failed++;
		return;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			run_file(path);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (strcmp(argv[i], "-v") == 0) {
			verbose = 1;
		} else if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			run_dir(argv[i]);
		} else {
			run_file(argv[i]);
		}
	}
	if (passed + failed == 0) {
		printf("FAIL: no input files (usage: %s [-v] FILE|DIR...)\n", argv[0]);
		failed++;
	}
	printf("%zu passed, %zu failed\n", passed, failed);
	return failed ? 1 : 0;
}
