"""A stand-in for the `duckdb` Python module, for the tests only.

The `duckdb` wheel cannot be installed here, but scripts/install-duckdb.sh
puts the real libduckdb.so on the machine (the broker's checkpoints use
it).  This module drives that library through ctypes with just the part
of the Python API that coord.duckdb and the examples use:

    con = connect(database, read_only=False)
    con.execute(sql)            # returns con, like duckdb's
    con.fetchone(), con.fetchall()
    con.close()

Values come back as int (BIGINT-like columns), None (NULL) or str
(everything else, as DuckDB renders it).  Query parameters are not
supported.  It is not part of the package: users have the real module.
"""
import ctypes
import os
import threading

_lib = None
_lib_lock = threading.Lock()

# duckdb_type values of the integer types (duckdb.h, enum DUCKDB_TYPE).
_INTEGER_TYPES = {2, 3, 4, 5, 6, 7, 8, 9}  # TINYINT .. UBIGINT
_HUGEINT = 16


class Error(Exception):
    """What DuckDB reported (duckdb.Error in the real module)."""


class _Result(ctypes.Structure):
    # struct duckdb_result: deprecated counts and pointers, then
    # internal_data; only freed through duckdb_destroy_result().
    _fields_ = [
        ("column_count", ctypes.c_uint64),
        ("row_count", ctypes.c_uint64),
        ("rows_changed", ctypes.c_uint64),
        ("columns", ctypes.c_void_p),
        ("error_message", ctypes.c_char_p),
        ("internal_data", ctypes.c_void_p),
    ]


def _load():
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        lib = ctypes.CDLL(os.environ.get("COORD_DUCKDB_LIB") or "libduckdb.so")
        p, pp, u64 = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint64
        rp = ctypes.POINTER(_Result)
        sigs = {
            "duckdb_create_config": (ctypes.c_int, [pp]),
            "duckdb_set_config": (ctypes.c_int, [p, ctypes.c_char_p, ctypes.c_char_p]),
            "duckdb_destroy_config": (None, [pp]),
            "duckdb_open_ext": (ctypes.c_int, [ctypes.c_char_p, pp, p, ctypes.POINTER(ctypes.c_void_p)]),
            "duckdb_close": (None, [pp]),
            "duckdb_connect": (ctypes.c_int, [p, pp]),
            "duckdb_disconnect": (None, [pp]),
            "duckdb_query": (ctypes.c_int, [p, ctypes.c_char_p, rp]),
            "duckdb_destroy_result": (None, [rp]),
            "duckdb_result_error": (ctypes.c_char_p, [rp]),
            "duckdb_column_count": (u64, [rp]),
            "duckdb_row_count": (u64, [rp]),
            "duckdb_column_type": (ctypes.c_int, [rp, u64]),
            "duckdb_value_is_null": (ctypes.c_bool, [rp, u64, u64]),
            "duckdb_value_int64": (ctypes.c_int64, [rp, u64, u64]),
            "duckdb_value_varchar": (p, [rp, u64, u64]),
            "duckdb_free": (None, [p]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
        return lib


class Connection:
    """One duckdb_database with one duckdb_connection on it."""

    def __init__(self, database, read_only):
        lib = _load()
        self._lib = lib
        self._db = ctypes.c_void_p()
        self._conn = ctypes.c_void_p()
        self._rows = []
        config = ctypes.c_void_p()
        if lib.duckdb_create_config(ctypes.byref(config)) != 0:
            raise Error("duckdb_create_config failed")
        try:
            mode = b"READ_ONLY" if read_only else b"READ_WRITE"
            if lib.duckdb_set_config(config, b"access_mode", mode) != 0:
                raise Error("duckdb_set_config access_mode failed")
            err = ctypes.c_void_p()
            if lib.duckdb_open_ext(os.fsencode(database), ctypes.byref(self._db), config,
                                   ctypes.byref(err)) != 0:
                msg = ctypes.string_at(err.value).decode(errors="replace") if err.value else "failed"
                lib.duckdb_free(err)
                raise Error(f"open {database}: {msg}")
        finally:
            lib.duckdb_destroy_config(ctypes.byref(config))
        if lib.duckdb_connect(self._db, ctypes.byref(self._conn)) != 0:
            lib.duckdb_close(ctypes.byref(self._db))
            raise Error(f"connect to {database} failed")

    def execute(self, sql, parameters=None):
        if parameters:
            raise NotImplementedError("duckdb_ctypes: query parameters are not supported")
        if not self._conn:
            raise Error("connection closed")
        lib, res = self._lib, _Result()
        try:
            if lib.duckdb_query(self._conn, sql.encode(), ctypes.byref(res)) != 0:
                msg = lib.duckdb_result_error(ctypes.byref(res))
                raise Error(msg.decode(errors="replace") if msg else f"`{sql}` failed")
            self._rows = self._fetch(res)
        finally:
            lib.duckdb_destroy_result(ctypes.byref(res))
        return self

    def _fetch(self, res):
        lib, ref = self._lib, ctypes.byref(res)
        ncols, nrows = lib.duckdb_column_count(ref), lib.duckdb_row_count(ref)
        types = [lib.duckdb_column_type(ref, c) for c in range(ncols)]
        rows = []
        for r in range(nrows):
            row = []
            for c in range(ncols):
                if lib.duckdb_value_is_null(ref, c, r):
                    row.append(None)
                elif types[c] in _INTEGER_TYPES or types[c] == _HUGEINT:
                    row.append(lib.duckdb_value_int64(ref, c, r))
                else:
                    s = lib.duckdb_value_varchar(ref, c, r)
                    row.append(ctypes.string_at(s).decode(errors="replace"))
                    lib.duckdb_free(s)
            rows.append(tuple(row))
        return rows

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def close(self):
        if self._conn:
            self._lib.duckdb_disconnect(ctypes.byref(self._conn))
        if self._db:
            self._lib.duckdb_close(ctypes.byref(self._db))
        self._conn = self._db = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(database, read_only=False):
    """duckdb.connect(database, read_only=...) over libduckdb.so."""
    return Connection(database, read_only)
