/* The one translation unit of the built library: libcoord.a and
 * libcoord.so.0 are this file, the implementation section of coord.h, for
 * programs that link the library instead of defining COORD_IMPLEMENTATION
 * themselves.  It must define nothing of its own: the library's ABI is
 * exactly what coord.h declares (coord.syms exports it, and
 * tests/exported-symbols.sh checks that nothing else leaks). */
#define _GNU_SOURCE
#define COORD_IMPLEMENTATION
#include "coord.h"
