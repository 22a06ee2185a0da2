/* The one translation unit that holds the implementation of coord.h, for
 * programs and tests that link the library instead of including it with
 * COORD_IMPLEMENTATION themselves. */
#define _GNU_SOURCE
#define COORD_IMPLEMENTATION
#include "coord.h"
