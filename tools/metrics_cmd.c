/* coordctl metrics: prints what coord_metrics() returns, the broker's
 * metrics in the Prometheus text format, for `promtool check metrics`, a
 * node exporter's textfile collector or a look by hand.  It never starts
 * a broker: with none running there is nothing to measure (exit 69). */
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "metrics_cmd.h"

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 64, EX_UNAVAILABLE = 69 };

static void usage(FILE *f)
{
	fprintf(f, "usage: coordctl metrics\n"
	           "Prints the broker's metrics in the Prometheus text format (see coordctl(1)).\n");
}

int cmd_metrics(int argc, char **argv, const char *dir)
{
	coord_options_t o = { .dir = dir, .no_autostart = 1 };
	coord_t *c = NULL;
	char *text = NULL;
	int rc;
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return EX_OK;
	}
	if (argc != 1) {
		usage(stderr);
		return EX_USAGE;
	}
	rc = coord_connect(&c, &o);
	if (rc < 0) {
		fprintf(stderr, "coordctl: metrics: connect: %s\n", coord_strerror(rc));
		if (rc == COORD_ENOBROKER)
			fprintf(stderr, "coordctl: hint: no broker runs for this instance directory; "
			                "start one with `coordd --daemon`\n");
		return rc == COORD_ENOBROKER || rc == COORD_EPERM || rc == COORD_EIO ? EX_UNAVAILABLE
		                                                                       : EX_FAIL;
	}
	rc = coord_metrics(c, &text);
	coord_disconnect(c);
	if (rc < 0) {
		fprintf(stderr, "coordctl: metrics: %s\n", coord_strerror(rc));
		if (rc == COORD_EPROTO)
			fprintf(stderr, "coordctl: hint: coordctl and coordd are different versions; "
			                "restart coordd\n");
		return rc == COORD_EIO ? EX_UNAVAILABLE : EX_FAIL;
	}
	fputs(text, stdout);
	coord_free(text);
	return fflush(stdout) == 0 ? EX_OK : EX_FAIL;
}
