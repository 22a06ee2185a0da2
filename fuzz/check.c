/* The failure path of the fuzz targets: one line on stderr naming the
 * check, the promise it guards and, when replaying, the input file; then
 * abort(), which libFuzzer and the sanitizers treat as a crash. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

const char *fuzz_input_name;

void fuzz_fail(const char *file, int line, const char *expr, const char *why)
{
	fprintf(stderr, "fuzz: %s:%d: check failed: %s: %s%s%s\n", file, line, expr, why,
	        fuzz_input_name ? "; input " : "", fuzz_input_name ? fuzz_input_name : "");
	abort();
}
