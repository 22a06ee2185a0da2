"""The ctypes declarations of libcoord.so.0 (coord.h), and nothing else.

The library is found, in this order:

1. ``$COORD_LIBRARY``, the path of a libcoord.so.0 (the build tree's tests
   set it to ``build/libcoord/libcoord.so.0``);
2. ``libcoord.so.0`` through the dynamic loader (the installed library).

Every function gets its argtypes and restype here, so that a wrong call
fails in Python instead of corrupting memory.  ctypes releases the GIL
during every call, so a thread blocked in libcoord never stops another
thread's Python code.
"""

import ctypes
import os

SONAME = "libcoord.so.0"

COORD_READ = 1
COORD_WRITE = 2
COORD_NAME_MAX = 511
COORD_LABEL_MAX = 127
COORD_DIR_MAX = 4095
COORD_COMMAND_NAME_MAX = 15

# The reserved range of COORD_E* codes (coord.h, section 1).
ERROR_RANGE = range(-7001, -7100, -1)


def _load():
    path = os.environ.get("COORD_LIBRARY")
    name = path if path else SONAME
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        where = f"$COORD_LIBRARY={path}" if path else f"{SONAME} (the dynamic loader's path)"
        raise ImportError(
            f"coord: cannot load libcoord from {where}: {e}; install coord "
            f"(meson install) or set COORD_LIBRARY to the path of {SONAME}"
        ) from e


lib = _load()

c_coord_p = ctypes.c_void_p
c_resource_p = ctypes.c_void_p
c_lease_p = ctypes.c_void_p
c_pending_p = ctypes.c_void_p
LOG_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)


class Options(ctypes.Structure):
    """coord_options_t"""

    _fields_ = [
        ("dir", ctypes.c_char_p),
        ("broker", ctypes.c_char_p),
        ("no_autostart", ctypes.c_int),
        ("connect_timeout_ms", ctypes.c_int),
        ("log", ctypes.c_void_p),
        ("log_userdata", ctypes.c_void_p),
        ("no_cache", ctypes.c_int),
    ]


class Status(ctypes.Structure):
    """coord_status_t"""

    _fields_ = [
        ("protocol", ctypes.c_uint32),
        ("broker_pid", ctypes.c_uint64),
        ("uptime_ms", ctypes.c_uint64),
        ("clients", ctypes.c_uint64),
        ("leases", ctypes.c_uint64),
        ("waiters", ctypes.c_uint64),
        ("resources", ctypes.c_uint64),
        ("dir", ctypes.c_char * (COORD_DIR_MAX + 1)),
    ]


class LeaseInfo(ctypes.Structure):
    """coord_lease_info_t"""

    _fields_ = [
        ("waiting", ctypes.c_int),
        ("mode", ctypes.c_int),
        ("lease_id", ctypes.c_uint64),
        ("token", ctypes.c_uint64),
        ("pid", ctypes.c_uint64),
        ("uid", ctypes.c_uint64),
        ("age_ms", ctypes.c_uint64),
        ("recalled_ms", ctypes.c_int64),
        ("resource", ctypes.c_char * (COORD_NAME_MAX + 1)),
        ("command", ctypes.c_char * (COORD_COMMAND_NAME_MAX + 1)),
        ("label", ctypes.c_char * (COORD_LABEL_MAX + 1)),
        ("adopted", ctypes.c_int),
        ("cached", ctypes.c_int),
        ("kernel_wait", ctypes.c_int),
    ]


def _declare(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_int, _u64, _charp = ctypes.c_int, ctypes.c_uint64, ctypes.c_char_p
P = ctypes.POINTER

coord_strerror = _declare("coord_strerror", _charp, _int)
coord_errname = _declare("coord_errname", _charp, _int)
coord_connect = _declare("coord_connect", _int, P(c_coord_p), P(Options))
coord_disconnect = _declare("coord_disconnect", None, c_coord_p)
coord_dir = _declare("coord_dir", _charp, c_coord_p)
coord_resource_open = _declare("coord_resource_open", _int, c_coord_p, _charp, P(c_resource_p))
coord_resource_close = _declare("coord_resource_close", None, c_resource_p)
coord_resource_name = _declare("coord_resource_name", _charp, c_resource_p)
coord_resource_acquire = _declare("coord_resource_acquire", _int, c_resource_p, _int, _int,
                                  _charp, P(c_lease_p))
coord_resource_read_cached = _declare("coord_resource_read_cached", _int, c_resource_p,
                                      P(c_lease_p))
coord_release = _declare("coord_release", _int, c_lease_p)
coord_lease_token = _declare("coord_lease_token", _u64, c_lease_p)
coord_lease_id = _declare("coord_lease_id", _u64, c_lease_p)
coord_lease_mode = _declare("coord_lease_mode", _int, c_lease_p)
coord_lease_resource = _declare("coord_lease_resource", _charp, c_lease_p)
coord_lease_recalled = _declare("coord_lease_recalled", _int, c_lease_p)
coord_lease_valid = _declare("coord_lease_valid", _int, c_lease_p)
coord_lease_fd = _declare("coord_lease_fd", _int, c_lease_p)
coord_recall_fd = _declare("coord_recall_fd", _int, c_coord_p)
coord_recall_clear = _declare("coord_recall_clear", _int, c_coord_p)
coord_status = _declare("coord_status", _int, c_coord_p, P(Status))
coord_list = _declare("coord_list", _int, c_coord_p, P(P(LeaseInfo)), P(ctypes.c_size_t))
coord_free = _declare("coord_free", None, ctypes.c_void_p)
coord_canonicalize = _declare("coord_canonicalize", _int, _charp, _charp, ctypes.c_size_t)

# The non-blocking acquire, which makes waits interruptible and
# asyncio-friendly (coord.h, "Waiting without blocking").
coord_acquire_start = _declare("coord_acquire_start", _int, c_resource_p, _int, _int, _charp,
                               P(c_lease_p), P(c_pending_p))
coord_pending_fd = _declare("coord_pending_fd", _int, c_pending_p)
coord_pending_wait = _declare("coord_pending_wait", _int, c_pending_p, _int, P(c_lease_p))
coord_pending_cancel = _declare("coord_pending_cancel", _int, c_pending_p)
