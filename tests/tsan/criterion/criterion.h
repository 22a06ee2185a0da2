/* A stand-in for the part of Criterion that tests/test_threads.c and
 * tests/harness.c use, for the ThreadSanitizer build only (tests/tsan/,
 * put first on the include path by tests/meson.build).
 *
 * Criterion cannot start under TSan: its BoxFort arena is mapped at a
 * random fixed address outside the ranges TSan lets a program map, so
 * every test binary aborts with "Could not initialize inheritable arena"
 * before running a test (Snaipe/Criterion#274).  The tests themselves
 * need nothing of Criterion but registration, fixtures and assertions, so
 * this header gives those, with Criterion's names and meaning, and
 * driver.c runs each test in a child process of its own: the suite's
 * .init, the body, the suite's .fini.  A failed assertion prints its
 * message, runs .fini and fails that test, as under Criterion.
 *
 * Only what those two files use is here: a file that needs more of
 * Criterion fails to compile in the TSan build instead of running
 * differently. */
#ifndef COORD_TEST_TSAN_CRITERION_H
#define COORD_TEST_TSAN_CRITERION_H

#include <string.h>

struct cr_shim_suite {
	void (*init)(void);
	void (*fini)(void);
	double timeout; /* seconds, 0: none */
};

struct cr_shim_test {
	const char *suite, *name;
	void (*body)(void);
	const struct cr_shim_suite *fixture;
	struct cr_shim_test *next;
};

void cr_shim_register(struct cr_shim_test *t);
_Noreturn void cr_shim_fail(const char *file, int line, const char *cond, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
void cr_shim_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* TestSuite(name, .init = f, .fini = g, .timeout = s); must come before
 * the suite's tests. */
#define TestSuite(suite, ...) static const struct cr_shim_suite cr_shim_suite_##suite = { __VA_ARGS__ }

#define Test(suite, name)                                                                  \
	static void cr_shim_body_##suite##_##name(void);                                   \
	static struct cr_shim_test cr_shim_test_##suite##_##name = {                       \
		#suite, #name, cr_shim_body_##suite##_##name, &cr_shim_suite_##suite, NULL \
	};                                                                                 \
	__attribute__((constructor)) static void cr_shim_register_##suite##_##name(void)  \
	{                                                                                  \
		cr_shim_register(&cr_shim_test_##suite##_##name);                          \
	}                                                                                  \
	static void cr_shim_body_##suite##_##name(void)

/* Every assertion takes a message (house style), so the format is not
 * optional here as it is in Criterion. */
#define cr_assert(cond, ...) \
	((cond) ? (void)0 : cr_shim_fail(__FILE__, __LINE__, #cond, __VA_ARGS__))
#define cr_assert_eq(a, b, ...) \
	(((a) == (b)) ? (void)0 : cr_shim_fail(__FILE__, __LINE__, #a " == " #b, __VA_ARGS__))
#define cr_assert_str_eq(a, b, ...)                                                       \
	(strcmp((a), (b)) == 0 ? (void)0                                                   \
	                       : cr_shim_fail(__FILE__, __LINE__, #a " equals " #b, __VA_ARGS__))
#define cr_assert_geq(a, b, ...) \
	(((a) >= (b)) ? (void)0 : cr_shim_fail(__FILE__, __LINE__, #a " >= " #b, __VA_ARGS__))
#define cr_log_warn(...) cr_shim_warn(__VA_ARGS__)

#endif
