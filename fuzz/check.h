/* What the fuzz targets share: the libFuzzer entry point each of them
 * defines, and FUZZ_CHECK, which aborts on a broken promise so that
 * libFuzzer (or the replay program) reports the input that broke it. */
#ifndef COORD_FUZZ_CHECK_H
#define COORD_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* One input, from libFuzzer or from replay.c.  Returns 0; a violated
 * promise aborts. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The file being replayed, for the failure message; NULL under libFuzzer,
 * which saves the input itself. */
extern const char *fuzz_input_name;

/* Prints where and what failed, then abort(). */
_Noreturn void fuzz_fail(const char *file, int line, const char *expr, const char *why);

#define FUZZ_CHECK(cond, why)                                                                    \
	do {                                                                                     \
		if (!(cond))                                                                     \
			fuzz_fail(__FILE__, __LINE__, #cond, why);                               \
	} while (0)

#endif
