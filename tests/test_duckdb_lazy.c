/* The broker never maps libduckdb.so: only the checkpoint child loads it.
 * Availability is what the broker can tell without loading it (the file
 * is there and readable), and a child that cannot load it is believed
 * until the file changes: `coordctl show` then says why DuckDB
 * checkpoints are off, with the child's dlopen() error. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "dbutil.h"
#include "harness.h"

static struct harness h;

static void setup(void)
{
	harness_init(&h);
}

static void teardown(void)
{
	harness_fini(&h);
}

TestSuite(duckdb_lazy, .init = setup, .fini = teardown, .timeout = 60);

/* 1 if the broker's /proc/PID/maps names a DuckDB library. */
static int broker_maps_duckdb(void)
{
	static char maps[1 << 20];
	cr_assert(harness_read_proc(h.broker, "maps", maps, sizeof maps) > 0,
	          "read /proc/%d/maps", (int)h.broker);
	return strstr(maps, "duckdb") != NULL;
}

Test(duckdb_lazy, broker_does_not_map_libduckdb)
{
	harness_start_broker(&h, NULL);
	cr_assert(!broker_maps_duckdb(),
	          "the broker maps libduckdb.so; only the checkpoint child may load it");
}

static int show_says_off(void *path)
{
	char out[4096];
	harness_coordctl(out, sizeof out, "show '%s'", (const char *)path);
	return strstr(out, "checkpoints are off") != NULL;
}

Test(duckdb_lazy, child_load_failure_is_shown)
{
	const char *fake = harness_path(&h, "libduckdb.so");
	const char *path = harness_path(&h, "x.duckdb");
	char head[4096] = { 0 }, out[4096];
	coord_t *c;
	coord_lease_t *l;
	write_file(fake, "not a shared object\n", 20);
	memcpy(head + 8, "DUCK", 4);
	write_file(path, head, sizeof head);
	harness_start_broker(&h, "--duckdb-lib", fake, NULL);
	harness_coordctl(out, sizeof out, "show '%s'", path);
	cr_assert(!strstr(out, "checkpoints are off"),
	          "a readable --duckdb-lib counts as there until a child fails to load it:\n%s", out);
	cr_assert_eq(coord_connect(&c, NULL), 0, "connect");
	cr_assert_eq(coord_acquire(c, path, COORD_WRITE, 5000, NULL, &l), 0, "write lease");
	coord_release(l); /* a DuckDB checkpoint starts, and its child fails to load */
	coord_disconnect(c);
	harness_wait(show_says_off, (void *)path, 10000); /* the checkpoint's end */
	harness_coordctl(out, sizeof out, "show '%s'", path);
	cr_assert(strstr(out, "DuckDB checkpoints are off") && strstr(out, "not loadable"),
	          "after a child failed to load %s, show must say why:\n%s", fake, out);
	cr_assert(!broker_maps_duckdb(), "the broker must not map DuckDB, even after a checkpoint");
}
