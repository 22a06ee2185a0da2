/* coordctl doctor: what is wrong with a database file, in plain words. */
#ifndef COORD_DOCTOR_H
#define COORD_DOCTOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A lease the broker reports on the file. */
struct doctor_lease {
	const char *mode;       /* "read" or "write" */
	long pid;
	const char *command;
	uint64_t token;
};

/* Inspects `path` and its side files and writes a report to out.  It
 * opens files read-only and changes nothing.  `leases` are the broker's
 * leases on the file (broker_up says whether it could be asked).
 * Returns the exit status: 0 healthy, 1 problems found, 2 could not
 * inspect (no such file, unreadable). */
int doctor_run(FILE *out, const char *path, const struct doctor_lease *leases, size_t nleases,
               int broker_up);

#endif
