/* A program built against an installed coord the way its users build:
 * `cc app.c $(pkg-config --cflags --libs coord)`, or linked with
 * libcoord.a.  It calls the library for real and exits 1 on a wrong
 * answer, printing which; install-check.sh builds and runs it.
 *
 * usage: install-app EMPTY_DIR   (a fresh directory with no broker) */
#include <coord.h>

#include <stdio.h>
#include <string.h>

static int failures;

static void expect(int ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	failures += !ok;
}

int main(int argc, char **argv)
{
	coord_options_t o = { .no_autostart = 1 };
	coord_policy_t p;
	coord_t *c = NULL;
	char dir[4096];
	int n;

	if (argc != 2) {
		fprintf(stderr, "usage: install-app EMPTY_DIR\n");
		return 2;
	}
	n = coord_instance_dir(argv[1], dir, sizeof dir);
	expect(n == (int)strlen(argv[1]) && !strcmp(dir, argv[1]),
	       "coord_instance_dir() returns an explicit directory as is");
	expect(!strncmp(coord_strerror(COORD_ENOBROKER), "COORD_ENOBROKER: ", 17),
	       "coord_strerror() starts with the code's name");
	expect(coord_policy_parse("sqlite:truncate", &p) == 0 && p.policy == COORD_POLICY_SQLITE &&
	               p.sqlite_mode == COORD_SQLITE_TRUNCATE,
	       "coord_policy_parse() reads sqlite:truncate");
	o.dir = argv[1];
	n = coord_connect(&c, &o);
	expect(n == COORD_ENOBROKER && c == NULL,
	       "coord_connect() without a broker and without autostart is COORD_ENOBROKER");
	if (n != COORD_ENOBROKER)
		printf("  coord_connect() returned %s\n", coord_errname(n));
	return failures ? 1 : 0;
}
