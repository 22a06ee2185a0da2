"""The exceptions: one class per COORD_E* code of coord.h, all under Error.

Each exception carries ``code`` (the negative COORD_E* value), ``name``
("COORD_ETIMEDOUT"), ``resource`` (or None) and ``hint`` (what to do, in
the words coordctl uses), and its message reads like coordctl's:

    write /srv/shop.db: COORD_ETIMEDOUT: the lease was not granted before
    the timeout (after 30 s); hint: see who holds it with `coordctl list`

The table below names a class for every code of coord.h's X-macro list.
At import, every code the loaded library knows (coord_errname() over the
reserved range) is checked against it; a code this module does not know
(a newer libcoord) gets a generated subclass of Error named after the
code, so nothing is ever reported as an unknown error.
"""

import ctypes
import os

from . import _lib

_SEE_HOLDERS = "see who holds it with `coordctl list`"


class Error(Exception):
    """A libcoord call failed.  ``code``, ``name``, ``resource``, ``hint``."""

    code = 0
    name = "COORD_E?"
    hint = None

    def __init__(self, message, *, code=None, resource=None, hint=None):
        super().__init__(message)
        if code is not None:
            self.code = code
            self.name = _lib.coord_errname(code).decode()
        if hint is not None:
            self.hint = hint
        self.resource = resource


class InvalidArgument(Error, ValueError):
    """COORD_EINVAL"""


class BadName(Error, ValueError):
    """COORD_ENAME"""

    hint = ("a resource is key:NAME (NAME not empty, no '/') or a file path whose "
            "directory exists, at most 511 bytes")


class NoBroker(Error, ConnectionError):
    """COORD_ENOBROKER"""

    hint = ("start one with `coordd --daemon` (or unset COORD_NO_AUTOSTART, or pass "
            "autostart=True), and check that coordd is on PATH or COORD_BROKER names it")


class Timeout(Error, TimeoutError):
    """COORD_ETIMEDOUT: not granted in time.  Also a TimeoutError.

    Shaped like filelock.Timeout: ``lock_file`` is the resource.
    """

    hint = _SEE_HOLDERS

    def __init__(self, message, **kw):
        super().__init__(message, **kw)
        self.lock_file = self.resource


class Busy(Timeout):
    """COORD_EBUSY: held in a conflicting mode and timeout was 0.  A Timeout."""


class Deadlock(Error):
    """COORD_EDEADLK"""

    hint = ("this thread already holds the resource, or waiting would close a wait-for "
            "cycle; the broker log names it (event=deadlock)")


class NoLease(Error):
    """COORD_ENOLEASE: the broker took the lease back before its release."""

    hint = "the lease was revoked or reclaimed; treat what was written under it as unfenced"


class ProtocolError(Error):
    """COORD_EPROTO"""

    hint = "libcoord and coordd are different versions; restart coordd"


class ConnectionLost(Error, ConnectionError):
    """COORD_EIO"""

    hint = "the broker went away; try again (the library reconnects on the next call)"


class OutOfMemory(Error, MemoryError):
    """COORD_ENOMEM"""


class PermissionDenied(Error, PermissionError):
    """COORD_EPERM"""

    hint = "you may not use this instance directory; check its owner, mode and group"


class LimitReached(Error):
    """COORD_ELIMIT"""

    hint = "the broker is at its client, lease or waiter limit; see `coordctl status`"


class Forked(Error):
    """COORD_EFORKED"""

    hint = "a child process after fork() must take its own leases"


class SystemCallFailed(Error, OSError):
    """COORD_ESYS"""


class NotSupported(Error):
    """COORD_ENOTSUP"""


class CheckpointFailed(Error):
    """COORD_ECHECKPOINT"""

    hint = "see the broker log and `coordctl show`"


class ConnectionBusy(Error):
    """COORD_EBUSYCONN"""
    hint = ("a connection waits for one lease at a time: wait in another thread (each "
            "thread has its own connection) or give the first request up")


class NotFound(Error):
    """COORD_ENOENT"""


class LeaseLost(Error):
    """COORD_ELOST"""

    hint = "the broker restarted without the lease; treat what was written under it as unfenced"


class OtherInstance(Error):
    """COORD_EINSTANCE"""

    hint = ("the file's directory has a .coord-instance naming another instance; use that "
            "one with Client(dir=...) or COORD_DIR")


class StoreFull(Error):
    """COORD_EFULL"""

    hint = "restart coordd with a larger --map-size"


class NoSpace(Error):
    """COORD_ENOSPC"""

    hint = "free space on the instance directory's filesystem"


class RegionReplaced(Error):
    """COORD_EREGION"""

    hint = "try again; the broker restores its shared region within a second"


class Canceled(Error):
    """COORD_ECANCELED"""


_BY_NAME = {
    "COORD_EINVAL": InvalidArgument,
    "COORD_ENAME": BadName,
    "COORD_ENOBROKER": NoBroker,
    "COORD_EBUSY": Busy,
    "COORD_ETIMEDOUT": Timeout,
    "COORD_EDEADLK": Deadlock,
    "COORD_ENOLEASE": NoLease,
    "COORD_EPROTO": ProtocolError,
    "COORD_EIO": ConnectionLost,
    "COORD_ENOMEM": OutOfMemory,
    "COORD_EPERM": PermissionDenied,
    "COORD_ELIMIT": LimitReached,
    "COORD_EFORKED": Forked,
    "COORD_ESYS": SystemCallFailed,
    "COORD_ENOTSUP": NotSupported,
    "COORD_ECHECKPOINT": CheckpointFailed,
    "COORD_EBUSYCONN": ConnectionBusy,
    "COORD_ENOENT": NotFound,
    "COORD_ELOST": LeaseLost,
    "COORD_EINSTANCE": OtherInstance,
    "COORD_EFULL": StoreFull,
    "COORD_ENOSPC": NoSpace,
    "COORD_EREGION": RegionReplaced,
    "COORD_ECANCELED": Canceled,
}


def _build_table():
    """code -> class for every code the loaded library names."""
    table = {}
    for code in _lib.ERROR_RANGE:
        name = _lib.coord_errname(code).decode()
        if name == "COORD_E?":
            continue
        cls = _BY_NAME.get(name)
        if cls is None:  # a code newer than this module: still its own class
            cls = type(name[len("COORD_"):], (Error,), {"__doc__": name})
            _BY_NAME[name] = cls
        cls.code = code
        cls.name = name
        table[code] = cls
    return table


BY_CODE = _build_table()


def error(code, what, resource=None, detail=None):
    """The exception for a COORD_E* code: "<what>: <strerror>[ (detail)]"."""
    cls = BY_CODE.get(code, Error)
    text = _lib.coord_strerror(code).decode()
    message = f"{what}: {text}" if what else text
    if detail:
        message += f" ({detail})"
    if cls is SystemCallFailed and ctypes.get_errno():
        message += f": {os.strerror(ctypes.get_errno())}"
    hint = cls.hint
    if hint:
        message += f"; hint: {hint}"
    return cls(message, code=code, resource=resource)

