"""coord: leases on shared SQLite/DuckDB files, from Python.

A pure-Python binding of libcoord (ctypes; Python 3.11+, standard library
only).  The broker, coordd, grants leases: one writer or many readers, in
FIFO order, with timeouts, taken back at once when a holder dies.

    import coord

    with coord.write("/srv/shop.db", timeout=30, label="hourly") as lease:
        ...                          # nobody else writes shop.db meanwhile
        lease.token                  # the fencing token
    with coord.read("/srv/shop.db"):
        ...

    async with coord.write_async("/srv/shop.db"):   # asyncio
        ...

A name is a file path (relative or absolute, existing or not; coord
creates no file) or "key:NAME".  Timeouts are seconds: None (the default)
or a negative number waits forever, 0 tries once.

Finding libcoord.so.0: ``$COORD_LIBRARY`` (a path) if set, else the
dynamic loader's ``libcoord.so.0``.

Threads.  Each thread gets its own connection to the broker (and each
asyncio task that waits, its own), because libcoord handles one request
at a time per connection: so threads wait for different resources at the
same time, and one thread's wait never holds up another's acquire or
release.  A thread's connection is closed when the thread ends, once it
holds no lease, so a thread-per-request server does not pile up
connections.  Leases belong to the thread that took them: release them
there (``with`` does).  A release from another thread is allowed and
waits at most for one 50 ms step of that thread's wait.  A Lease still
referenced when its thread ends stays held, with its connection, until it
is released or garbage-collected (which releases it, with a
ResourceWarning).

fork().  A child gets a fresh client and never inherits its parent's
leases: in the child they are ``valid == False`` and release() does
nothing; the parent keeps them.

Ctrl+C during a wait raises KeyboardInterrupt within one 50 ms step (at
once, usually) and takes the request out of the broker's queue; cancelling
an asyncio task that waits does the same.

Errors are coord.Error subclasses with ``code``, ``name`` ("COORD_E..."),
``resource`` and ``hint``; coord.Timeout is also a TimeoutError.
"""

import threading as _threading

from ._errors import (  # noqa: F401
    Error, InvalidArgument, BadName, NoBroker, Timeout, Busy, Deadlock, NoLease,
    ProtocolError, ConnectionLost, OutOfMemory, PermissionDenied, LimitReached, Forked,
    SystemCallFailed, NotSupported, CheckpointFailed, ConnectionBusy, NotFound, LeaseLost,
    OtherInstance, StoreFull, NoSpace, RegionReplaced, Canceled, BY_CODE as ERRORS,
)
from ._client import READ, WRITE, Client, Lease, recalled  # noqa: F401
from ._filelock import FileLock, ReadWriteLock, AcquireReturnProxy  # noqa: F401
from . import _client

__version__ = "0.2.0"

__all__ = [
    "Client", "Lease", "READ", "WRITE", "acquire", "write", "read", "try_read", "try_write",
    "write_async",
    "read_async", "recalled", "default_client", "FileLock", "ReadWriteLock", "Error",
    "Timeout", "Busy", "Deadlock", "ERRORS",
] + [cls.__name__ for cls in ERRORS.values()]

_default = None
_default_lock = _threading.Lock()


def default_client():
    """The per-process Client that write(), read() and the locks use
    ($COORD_DIR or the default instance, autostart on)."""
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = Client()
            client = _default
    return client


def acquire(path, mode, timeout=None, label=None):
    """default_client().acquire(...): a Lease, usable in ``with``."""
    return default_client().acquire(path, mode, timeout, label)


def write(path, timeout=None, label=None):
    """An exclusive lease: ``with coord.write(path, timeout=30) as lease:``.
    Raises coord.Timeout when not granted in time."""
    return default_client().acquire(path, WRITE, timeout, label)


def read(path, timeout=None, label=None):
    """A shared lease: ``with coord.read(path):``."""
    return (_default or default_client()).read(path, timeout, label)


def try_read(path, label=None):
    """A read lease if the resource is free for readers now, else None:
    for checks that must never wait.

        lease = coord.try_read("/srv/shop.db")
        if lease is None:
            sys.exit("busy, skipped")
        with lease:
            ...
    """
    try:
        return default_client().acquire(path, READ, 0, label)
    except Busy:
        return None


def try_write(path, label=None):
    """A write lease if the resource is free now, else None."""
    try:
        return default_client().acquire(path, WRITE, 0, label)
    except Busy:
        return None


def write_async(path, timeout=None, label=None):
    """``async with coord.write_async(path) as lease:`` (or ``await``)."""
    return default_client().write_async(path, timeout, label)


def read_async(path, timeout=None, label=None):
    """``async with coord.read_async(path) as lease:`` (or ``await``)."""
    return default_client().read_async(path, timeout, label)


def _after_fork_in_child():
    global _default_lock
    _default_lock = _threading.Lock()


_client.os.register_at_fork(after_in_child=_after_fork_in_child)
