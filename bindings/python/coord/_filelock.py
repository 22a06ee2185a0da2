"""FileLock and ReadWriteLock: the API of the filelock package, on coord.

They follow filelock 3.9 (Debian 12's python3-filelock): acquire(timeout,
poll_interval, blocking) returns a proxy usable in ``with``, a lock
counter makes one object re-entrant (a second acquire on a held object
only counts), release(force=False) lets go when the count returns to 0,
and a failed acquire raises coord.Timeout, whose message is filelock's
("The file lock '...' could not be acquired.") and whose ``lock_file`` is
the path.  As in filelock 3.9, the count belongs to the object, not to a
thread: threads that share one object share its hold.

The differences: the path is the resource itself (a database file, say),
and coord creates no lock file; the wait is the broker's FIFO queue, not a
poll, so ``poll_interval`` is accepted and ignored; and a lock is taken
through the default client (or ``client=``).
"""

import contextlib
import os
import threading

from ._client import READ, WRITE
from ._errors import Timeout


class AcquireReturnProxy:
    """What acquire() returns: ``with lock.acquire():`` releases at the end."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        return self.lock

    def __exit__(self, *exc):
        self.lock.release()


def _filelock_timeout(path, cause):
    e = Timeout(f"The file lock '{path}' could not be acquired.", code=cause.code,
                resource=path)
    e.hint = cause.hint
    return e


class FileLock(contextlib.ContextDecorator):
    """An exclusive (write) lease on ``lock_file``, shaped like filelock.FileLock.

    ``timeout``   default of acquire(), seconds; negative: forever; 0: once
    ``blocking``  default of acquire(); False: try once
    ``client``    a coord.Client; None: the default client
    """

    _mode = WRITE

    def __init__(self, lock_file, timeout=-1, blocking=True, *, client=None):
        self._lock_file = os.fspath(lock_file)
        self._timeout = float(timeout)
        self._blocking = blocking
        self._client = client
        self._thread_lock = threading.Lock()
        self._lock_counter = 0
        self._lease = None

    @property
    def lock_file(self):
        """The path of the resource."""
        return self._lock_file

    @property
    def timeout(self):
        """The default timeout of acquire(), in seconds."""
        return self._timeout

    @timeout.setter
    def timeout(self, value):
        self._timeout = float(value)

    @property
    def is_locked(self):
        """True while this object holds the lease (never in a fork()ed
        child: the lease is the parent's)."""
        return self._lease is not None and self._lease._pid == os.getpid()

    @property
    def lock_counter(self):
        """How many acquire() calls are not yet matched by a release()."""
        return self._lock_counter

    @property
    def lease(self):
        """The coord.Lease behind the lock (token, recalled, ...), or None."""
        return self._lease

    def _client_now(self):
        if self._client is not None:
            return self._client
        from . import default_client
        return default_client()

    def acquire(self, timeout=None, poll_interval=0.05, *, poll_intervall=None, blocking=None):
        """Takes the lease (or counts one more hold if this object has it).

        ``timeout``   None: the object's; negative: forever; 0: one attempt
        ``blocking``  None: the object's; False: one attempt
        ``poll_interval``  ignored (coord queues instead of polling)

        Raises coord.Timeout if not granted in time; returns a proxy for
        ``with``."""
        if timeout is None:
            timeout = self._timeout
        if blocking is None:
            blocking = self._blocking
        if blocking is False:
            timeout = 0
        with self._thread_lock:
            if self._lease is not None and self._lease._pid != os.getpid():
                # a fork()ed child: the lease is the parent's, not ours
                self._lease, self._lock_counter = None, 0
            self._lock_counter += 1
            try:
                if self._lease is None:
                    try:
                        self._lease = self._client_now().acquire(
                            self._lock_file, self._mode, None if timeout < 0 else timeout,
                            label=type(self).__name__)
                    except Timeout as e:
                        raise _filelock_timeout(self._lock_file, e) from None
            except BaseException:
                self._lock_counter = max(0, self._lock_counter - 1)
                raise
        return AcquireReturnProxy(self)

    def release(self, force=False):
        """Counts one hold less; lets go at 0, or at once with force=True."""
        with self._thread_lock:
            if self._lease is not None:
                self._lock_counter -= 1
                if self._lock_counter == 0 or force:
                    lease, self._lease = self._lease, None
                    self._lock_counter = 0
                    lease.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release(force=True)
        except Exception:  # at interpreter exit the library may be gone
            pass

    def __repr__(self):
        state = f"held x{self._lock_counter}" if self.is_locked else "free"
        return f"<coord.{type(self).__name__} {self._lock_file!r} {state}>"


class _ReadLock(FileLock):
    _mode = READ


class ReadWriteLock:
    """Shared and exclusive leases on one path.

    filelock 3.9 has no ReadWriteLock, so this is the pair its later
    versions offer: ``read_lock()`` and ``write_lock()`` are context
    managers, ``acquire_read()``/``acquire_write()`` return a proxy for
    ``with``, ``release()`` lets go of what this object holds.  One object
    holds either mode at a time (re-entrant within the mode); asking for
    the other mode while holding one raises coord.Deadlock.
    """

    def __init__(self, lock_file, timeout=-1, blocking=True, *, client=None):
        self._read = _ReadLock(lock_file, timeout, blocking, client=client)
        self._write = FileLock(lock_file, timeout, blocking, client=client)

    @property
    def lock_file(self):
        return self._read.lock_file

    @property
    def is_locked(self):
        return self._read.is_locked or self._write.is_locked

    def acquire_read(self, timeout=None, blocking=None):
        return self._read.acquire(timeout, blocking=blocking)

    def acquire_write(self, timeout=None, blocking=None):
        return self._write.acquire(timeout, blocking=blocking)

    def release(self, force=False):
        if self._write.is_locked:
            self._write.release(force)
        else:
            self._read.release(force)

    @contextlib.contextmanager
    def read_lock(self, timeout=None, blocking=None):
        """``with rw.read_lock():`` a shared lease."""
        with self._read.acquire(timeout, blocking=blocking):
            yield self

    @contextlib.contextmanager
    def write_lock(self, timeout=None, blocking=None):
        """``with rw.write_lock():`` an exclusive lease."""
        with self._write.acquire(timeout, blocking=blocking):
            yield self
