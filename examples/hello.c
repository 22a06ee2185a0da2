/* The README's C example, used the way of a program that copied the
 * installed coord.h and nothing else: it is built against the generated
 * single-file header, with -std=c11 and no feature macros, so the
 * header-only form and its strict-mode path are compiled on every build.
 * Run it with a broker reachable (it starts one): ./hello */
#define COORD_IMPLEMENTATION
#include "coord.h"
#include <stdio.h>

int main(void)
{
	coord_t *c;
	coord_lease_t *l;
	int rc = coord_connect(&c, NULL);          /* starts coordd if needed */
	if (rc < 0) {
		fprintf(stderr, "coord: %s\n", coord_strerror(rc));
		return 69;
	}
	rc = coord_acquire(c, "shop.db", COORD_WRITE, 5000, "nightly", &l);
	if (rc == 0) {
		/* ... write shop.db; coord_lease_valid(l) is free to call ... */
		printf("writing with fencing token %llu\n",
		       (unsigned long long)coord_lease_token(l));
		coord_release(l);
	} else {
		fprintf(stderr, "shop.db: %s\n", coord_strerror(rc));
	}
	coord_disconnect(c);
	return rc < 0;
}
