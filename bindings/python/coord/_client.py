"""Clients, their per-thread connections, and leases.

libcoord serialises the calls on one connection (coord.h, section 7): a
thread waiting for a lease would hold up every other thread on the same
connection, and a connection has at most one waiting request.  So a
Client keeps a connection per thread (and, under asyncio, per task), made
at the thread's first acquire:

- A thread's connection is closed when the thread ends, as soon as it
  holds no lease: every Lease object keeps its connection open until it
  is released (or garbage-collected, which releases it), so a connection
  is never closed under a lease still in use.  A thread that ends while
  its Lease objects are still referenced elsewhere keeps them held; they
  are released, and the connection closed, when the last one is.
- A connection that holds nothing and waits for nothing may be reused by
  another task of the same thread; one that holds leases is used only by
  the thread (or task) that took them, so that re-asking for a held write
  lease fails at once with coord.Deadlock instead of waiting for itself.
- A lease may be released from any thread; a release on a connection
  whose thread is inside a call waits for that call (at most one 50 ms
  step of a wait), or, from a garbage collector, is queued until then.

Nothing here is ever closed while a libcoord call on it is in progress:
every call holds the connection's lock (an RLock), and the finalizer
runs only once no Python object refers to the connection.  The same lock
guards the connection's count of unreleased Lease objects and a Lease's
hand-over of its connection (Lease._conn), so a release happens once.

A read under a cached grant (coord_resource_read_cached()) is the hot
path, and Client.read() takes it before anything else: this thread's
connection is remembered in the client's thread-local state, the kept
resource handle is found by the path as given (an absolute path or a
key, str or bytes, seen before: no path work), the lease's fields come
from the grant's last Lease when its id matches, and the process id
comes from _PID (set at import and in every fork()ed child) rather than
from os.getpid(), a system call.
"""

import asyncio
import ctypes
import os
import signal
import threading
import warnings
import weakref

from . import _lib
from ._errors import error, BY_CODE

READ = "read"
WRITE = "write"
_MODES = {READ: _lib.COORD_READ, WRITE: _lib.COORD_WRITE}
_MODE_NAMES = {v: k for k, v in _MODES.items()}
_STEP_MS = 50  # one step of an interruptible wait
_RESOURCE_CACHE = 64  # resource handles kept per connection

_EFORKED = next(c for c, k in BY_CODE.items() if k.name == "COORD_EFORKED")

_SYNC = object()  # the owner of a thread's connection outside asyncio
_PID = os.getpid()  # this process's id: updated in a fork()ed child
_new_lease = object.__new__
_read_cached = _lib.coord_resource_read_cached
_lease_id = _lib.coord_lease_id
_release = _lib.coord_release


def _name(path):
    if isinstance(path, bytes):
        return path
    return os.fsencode(os.fspath(path))


def _timeout_ms(timeout):
    """None or a negative number: forever; 0: try once; else seconds."""
    if timeout is None or timeout < 0:
        return -1
    ms = int(timeout * 1000 + 0.999)
    return min(ms, 2**31 - 1)


def _mode(mode):
    try:
        return _MODES[mode]
    except KeyError:
        raise ValueError(f"coord: mode must be 'read' or 'write', not {mode!r}") from None


def _label(label):
    if label is None:
        return None
    return str(label).encode()[: _lib.COORD_LABEL_MAX]


def _disconnect(handle, pid, resources):
    """The finalizer of a connection.  A fork()ed child leaves its copy of
    a parent's connection alone (its socket is closed in the child
    already, coord.h section 7): coord_disconnect() there would clear the
    entries of the connection's cached read grants in their page, which
    the child shares with the parent, and the broker, no longer finding
    an idle grant there, would wait for the parent to give it back before
    granting any writer.  The copy's memory is the child's to lose."""
    if os.getpid() != pid:
        return
    for res in resources.values():
        _lib.coord_resource_close(res.handle)
    _lib.coord_disconnect(handle)


class _Resource:
    """A kept coord_resource_t* of a connection, and what the Lease of its
    cached grant said: (id, token, mode, resource), or None."""

    __slots__ = ("handle", "known")

    def __init__(self, handle):
        self.handle = handle
        self.known = None


class _Conn:
    """One coord_t, used by one thread (or task) at a time."""

    def __init__(self, client):
        handle = _lib.c_coord_p()
        rc = _lib.coord_connect(ctypes.byref(handle), ctypes.byref(client._options))
        if rc < 0:
            where = client.dir or os.environ.get("COORD_DIR") or "the default instance"
            raise error(rc, f"connect to the broker of {where}")
        self.handle = handle.value
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.deferred = []  # lease handles released by a finalizer while locked
        self.resources = {}  # name -> _Resource, for keys and absolute paths
        self.by_path = {}  # the same, by name and by os.fsdecode(name)
        self.leases = 0  # Lease objects of this connection not yet released (lock held)
        self.out = ctypes.c_void_p()  # the lease handle out of a cached read (lock held)
        self.pending = False
        self.closed = False
        self.owner = _SYNC
        self._finalizer = weakref.finalize(self, _disconnect, self.handle, self.pid,
                                           self.resources)
        self._finalizer.atexit = False  # at exit the process's end releases all

    # -- ownership ------------------------------------------------------
    def owned_by(self, owner):
        if owner is _SYNC:
            return self.owner is _SYNC
        return self.owner is not _SYNC and self.owner() is owner

    def set_owner(self, owner):
        self.owner = owner if owner is _SYNC else weakref.ref(owner)

    def idle(self):
        return not self.leases and not self.pending and not self.closed

    # -- calls ----------------------------------------------------------
    def call(self, fn, *args):
        with self.lock:
            try:
                return fn(*args)
            finally:
                self._drain()

    def _drain(self):
        """Releases what finalizers left (the lock held); their Lease
        objects are gone, and with them their count."""
        while self.deferred:
            _lib.coord_release(self.deferred.pop())
            self.leases -= 1

    def release_soon(self, lease_handle):
        """Releases now if the lock is free, else when its holder lets go
        (a finalizer's release: its Lease object has let go of self)."""
        if self.lock.acquire(blocking=False):
            try:
                self.deferred.append(lease_handle)
                self._drain()
            finally:
                self.lock.release()
        else:
            self.deferred.append(lease_handle)

    def resource(self, name):
        """A coord_resource_t* for name (cached for keys and absolute paths,
        found in by_path by name and by its str spelling).  The lock held."""
        res = self.resources.get(name)
        if res is not None:
            return res.handle, False
        out = _lib.c_resource_p()
        rc = _lib.coord_resource_open(self.handle, name, ctypes.byref(out))
        if rc < 0:
            raise error(rc, f"open {os.fsdecode(name)}", resource=os.fsdecode(name))
        cache = name.startswith(b"/") or name.startswith(b"key:")
        if cache:
            if len(self.resources) >= _RESOURCE_CACHE:
                old = next(iter(self.resources))
                self.by_path.pop(old, None)
                self.by_path.pop(os.fsdecode(old), None)
                _lib.coord_resource_close(self.resources.pop(old).handle)
            res = self.resources[name] = _Resource(out.value)
            self.by_path[name] = self.by_path[os.fsdecode(name)] = res
        return out.value, not cache

    def close(self):
        """Disconnects now (Client.close()); leases become stale.  A
        connection with a request pending is closed by its waiter, which
        gives the request up at its next step (_end())."""
        with self.lock:
            self.closed = True
            if not self.pending:
                self._finalizer()

    # -- acquiring ------------------------------------------------------
    def read_cached(self, key):
        """A read under the cached grant of the kept handle of key (a name
        or its str spelling; see
        coord_resource_read_cached()), or None, having sent nothing.  No
        wait, so no Ctrl+C handling: a KeyboardInterrupt between the call
        and the Lease object gives the read back at once."""
        res = self.by_path.get(key)
        if res is None:
            return None
        lock = self.lock
        out = self.out
        lock.acquire()
        try:
            if self.closed:
                return None
            out.value = None
            if _read_cached(res.handle, out) != 1:
                return None
            handle = out.value
            if self.deferred:
                self._drain()
            known = res.known
            if known is None or known[0] != _lease_id(handle):
                lease = Lease._new_locked(self, handle)
                res.known = (lease.id, lease.token, lease.mode, lease.resource)
            else:
                lease = _new_lease(Lease)
                lease._handle = handle
                lease._pid = self.pid
                lease.id, lease.token, lease.mode, lease.resource = known
                self.leases += 1
                lease._conn = self
            return lease
        except BaseException:
            if out.value:
                _release(out.value)
            raise
        finally:
            lock.release()

    def acquire(self, name, mode, timeout_ms, label, what):
        """Blocking acquire, interruptible: start, then 50 ms steps.  From
        the request to the Lease object, Ctrl+C only sets a flag (main
        thread), so KeyboardInterrupt is raised only where nothing can be
        left behind: a pending request is cancelled, and a lease granted in
        the same step as the Ctrl+C is released."""
        interrupted = []
        restore = _sigint_to_flag(interrupted)
        try:
            r, temporary, lease, p = self._begin(name, mode, timeout_ms, label, what)
            try:
                if lease:
                    result = Lease._new(self, lease)
                else:
                    result = self._wait_blocking(p, name, timeout_ms, what, interrupted)
            finally:
                self._end(r, temporary)
        finally:
            if restore:
                restore()
        if interrupted:
            result.release()
            raise KeyboardInterrupt
        return result

    def _begin(self, name, mode, timeout_ms, label, what):
        """Opens the resource and sends the request: (r, temporary, lease, p)."""
        with self.lock:
            if self.closed:
                raise ValueError("coord: the client is closed")
            r, temporary = self.resource(name)
            try:
                lease, p, rc = self._start(r, mode, timeout_ms, label)
            except BaseException:
                self._end(r, temporary)
                raise
            self._drain()
        if rc < 0:
            self._end(r, temporary)
            raise error(rc, what, resource=os.fsdecode(name), detail=_detail(rc, timeout_ms))
        return r, temporary, lease, p

    def _end(self, r, temporary):
        """After a request: closes an uncached resource handle, and the
        connection if the client was closed meanwhile."""
        with self.lock:
            if temporary:
                _lib.coord_resource_close(r)
            if self.closed:
                self._finalizer()

    def _start(self, r, mode, timeout_ms, label):
        lease = _lib.c_lease_p()
        pending = _lib.c_pending_p()
        try:
            rc = _lib.coord_acquire_start(r, mode, timeout_ms, label, ctypes.byref(lease),
                                          ctypes.byref(pending))
        except BaseException:
            # Raised after the call returned (a signal handler): the out
            # parameters say what happened.
            if lease.value:
                _lib.coord_release(lease.value)
            if pending.value:
                _lib.coord_pending_cancel(pending.value)
            raise
        return lease.value, pending.value, rc

    def _wait_blocking(self, p, name, timeout_ms, what, interrupted):
        lease = _lib.c_lease_p()
        granted = None
        self.pending = True
        try:
            while True:
                granted = self._step(p, _STEP_MS, lease, name, timeout_ms, what)
                if granted:
                    break
                if interrupted:
                    raise KeyboardInterrupt
        except BaseException:
            self._give_up(p, lease, granted)
            raise
        finally:
            self.pending = False
        self._free(p)
        return Lease._new(self, granted)

    async def acquire_async(self, name, mode, timeout_ms, label, what):
        """The same, for asyncio: the descriptor wakes the loop, plus a tick."""
        r, temporary, lease0, p = self._begin(name, mode, timeout_ms, label, what)
        try:
            if lease0:
                return Lease._new(self, lease0)
            return await self._wait_async(p, name, timeout_ms, what)
        finally:
            self._end(r, temporary)

    async def _wait_async(self, p, name, timeout_ms, what):
        loop = asyncio.get_running_loop()
        lease = _lib.c_lease_p()
        wake = asyncio.Event()
        granted = None
        self.pending = True
        try:
            fd = _lib.coord_pending_fd(p)
            if fd < 0:
                raise error(fd, what, resource=os.fsdecode(name))
            while True:
                granted = self._step(p, 0, lease, name, timeout_ms, what)
                if granted:
                    break
                wake.clear()
                # The socket says when an answer may be there; the tick
                # covers a grant that waits for the file's kernel lock.
                loop.add_reader(fd, wake.set)
                tick = loop.call_later(_STEP_MS / 1000, wake.set)
                try:
                    await wake.wait()
                finally:
                    loop.remove_reader(fd)
                    tick.cancel()
        except BaseException:
            self._give_up(p, lease, granted)
            raise
        finally:
            self.pending = False
        self._free(p)
        return Lease._new(self, granted)

    def _step(self, p, wait_ms, lease, name, timeout_ms, what):
        """One coord_pending_wait(): the granted lease handle, or None while
        the request is pending; raises the request's error, or ValueError
        if the client was closed meanwhile."""
        with self.lock:
            rc = _lib.coord_pending_wait(p, wait_ms, ctypes.byref(lease))
            self._drain()
        if rc == 1:
            return lease.value
        if rc < 0:
            raise error(rc, what, resource=os.fsdecode(name), detail=_detail(rc, timeout_ms))
        if self.closed:
            raise ValueError("coord: the client was closed during the wait")
        return None

    def _free(self, p):
        """Frees an ended request (coord_pending_cancel() of an ended one
        only frees it; its lease, if granted, stays ours)."""
        with self.lock:
            _lib.coord_pending_cancel(p)
            self._drain()

    def _give_up(self, p, lease, granted):
        """Leaves the broker's queue clean after an exception in a wait.
        The handle lives until coord_pending_cancel(), whatever the wait
        returned, so cancelling is always right: it gives a pending request
        up, and only frees an ended one.  A grant that came back before the
        exception (a signal handler raising just after the call returned)
        is in lease, and nobody will get it: it is released."""
        with self.lock:
            _lib.coord_pending_cancel(p)
            if lease.value:  # we raise: nobody gets this lease
                _lib.coord_release(lease.value)
            self._drain()


def _detail(rc, timeout_ms):
    if BY_CODE.get(rc) is not None and BY_CODE[rc].name == "COORD_ETIMEDOUT":
        return f"after {timeout_ms / 1000:g} s"
    return None


# LeaseInfo.cached: a read grant the library keeps after its release
# ("idle"), or one a read is under now ("in-use"); None: a held lease.
_CACHED_NAMES = {1: "idle", 2: "in-use"}

_IDLE_MAX = 4  # idle connections a thread keeps (see Client._conn_for)


def _sigint_to_flag(flag):
    """In the main thread with Python's default SIGINT handler, turns Ctrl+C
    into a flag for the duration of a wait, so that KeyboardInterrupt is
    raised only where the wait knows what it holds.  Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None
        signal.signal(signal.SIGINT, lambda signum, frame: flag.append(signum))
    except ValueError:  # not the main interpreter
        return None
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)


class Lease:
    """A granted lease.  Use it in ``with`` (which releases it) or call
    release().

    ``token``     the fencing token (rises at every write grant)
    ``id``        the broker-wide lease id, as ``coordctl list`` shows it
    ``resource``  the canonical resource name
    ``mode``      "read" or "write"
    ``valid``     True while the broker counts it as held (no system call)
    ``recalled``  True once someone conflicting waits behind it: let go at
                  your next safe point (no system call)

    A lease belongs to the process that took it: in a child after fork(),
    ``valid`` is False and release() does nothing (the parent still holds
    it).  Keep the Lease object (or stay in the ``with``) for as long as
    you use the resource: a Lease that is garbage-collected unreleased is
    released, with a ResourceWarning.
    """

    __slots__ = ("_conn", "_handle", "_pid", "token", "id", "resource", "mode", "__weakref__")

    @classmethod
    def _new(cls, conn, handle):
        with conn.lock:
            return cls._new_locked(conn, handle)

    @classmethod
    def _new_locked(cls, conn, handle):
        """The Lease of a granted handle, counted in conn (its lock held)."""
        self = _new_lease(cls)
        self._handle = handle
        self._pid = conn.pid
        self.token = _lib.coord_lease_token(handle)
        self.id = _lib.coord_lease_id(handle)
        self.mode = _MODE_NAMES.get(_lib.coord_lease_mode(handle))
        res = _lib.coord_lease_resource(handle)
        self.resource = os.fsdecode(res) if res is not None else None
        conn.leases += 1
        self._conn = conn
        return self

    def __init__(self):
        raise TypeError("coord.Lease objects come from acquire(), write() and read()")

    @property
    def released(self):
        """True once release() was called (or the client closed)."""
        conn = self._conn
        return conn is None or conn.closed

    @property
    def valid(self):
        if self.released or _PID != self._pid:
            return False
        return bool(_lib.coord_lease_valid(self._handle))

    @property
    def recalled(self):
        if self.released or _PID != self._pid:
            return False
        return bool(_lib.coord_lease_recalled(self._handle))

    def release(self):
        """Releases the lease; a second call does nothing.

        Raises coord.NoLease or coord.LeaseLost if the broker had taken the
        lease back already (revoked, or lost in a broker restart): what was
        written under it must be treated as unfenced."""
        conn = self._conn
        if conn is None or conn.closed or _PID != self._pid:
            return
        # Released first, detached after (under the connection's lock, so
        # once): an exception in between (Ctrl+C) leaves a Lease whose
        # second release the C library answers with COORD_ENOLEASE, never
        # a lease held with no object to release it.
        lock = conn.lock
        lock.acquire()
        try:
            rc = _release(self._handle)
            if conn.deferred:
                conn._drain()
            if self._conn is None:
                return  # another thread's release() came first
            self._conn = None
            conn.leases -= 1
        finally:
            lock.release()
        if rc < 0 and rc != _EFORKED:
            raise error(rc, f"release {self.mode} lease of {self.resource}",
                        resource=self.resource)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if _PID != self._pid and exc_type is None:
            # a fork()ed child ran the block: it never held the lease
            raise error(_EFORKED, f"the {self.mode} lease of {self.resource} is the parent "
                        "process's: this child ran the block without it",
                        resource=self.resource)
        self.release()

    def __del__(self):
        # Nobody else refers to self now, so nothing races this hand-over;
        # release_soon() counts the release in conn.
        try:
            conn = self._conn
        except AttributeError:  # never fully made
            return
        if conn is None:
            return
        self._conn = None
        if conn.closed or _PID != self._pid:
            return
        conn.release_soon(self._handle)  # first: a warning may be an error
        warnings.warn(f"coord: {self.mode} lease of {self.resource} was never released; "
                      "released it now", ResourceWarning, stacklevel=2)

    def __repr__(self):
        state = "released" if self.released else ("valid" if self.valid else "invalid")
        return (f"<coord.Lease {self.mode} {self.resource!r} id={self.id} "
                f"token={self.token} {state}>")


class _Slot:
    """A thread's connections to one Client; dropped when the thread ends."""

    __slots__ = ("pid", "conns")

    def __init__(self):
        self.pid = os.getpid()
        self.conns = []


_CLIENTS = weakref.WeakSet()


class Client:
    """A client of one coord instance.

    ``dir``          the instance directory; None: $COORD_DIR, else the
                     default (coord.h, coord_instance_dir())
    ``autostart``    start coordd if none runs (False: coord.NoBroker)
    ``broker``       the coordd binary to start; None: $COORD_BROKER or
                     coordd on PATH
    ``connect_timeout``  seconds to wait for a starting broker (None: 5)
    ``cache``        False: no cached read grants, every read asks the
                     broker (as COORD_NO_CACHE=1 does for every client);
                     True (the default): a path's second and later reads
                     are taken in shared memory (coord.h,
                     coord_resource_acquire())

    Connections are made per thread on first use, and closed when the
    thread ends and holds no lease (see the package docstring).  close()
    (or leaving ``with Client() as c:``) closes them all, which releases
    every lease still held through this client.
    """

    def __init__(self, dir=None, autostart=True, broker=None, connect_timeout=None, cache=True):
        self.dir = os.fspath(dir) if dir is not None else None
        self._dir_b = os.fsencode(self.dir) if self.dir is not None else None
        self._broker_b = os.fsencode(os.fspath(broker)) if broker is not None else None
        self._options = _lib.Options(
            dir=self._dir_b,
            broker=self._broker_b,
            no_autostart=0 if autostart else 1,
            connect_timeout_ms=0 if connect_timeout is None else max(1, int(connect_timeout * 1000)),
            no_cache=0 if cache else 1,
        )
        self._closed = False
        self._reset()
        _CLIENTS.add(self)

    def _reset(self):
        self._local = threading.local()
        self._conns = weakref.WeakSet()
        self._lock = threading.Lock()

    def _after_fork_child(self):
        # The parent's connections are the parent's: the child makes its
        # own.  Their leases are invalid here already (COORD_EFORKED).
        for conn in list(self._conns):
            conn.closed = True
        self._reset()

    # -- connections ----------------------------------------------------
    def _conn_for(self, owner):
        if self._closed:
            raise ValueError("coord: the client is closed")
        slot = getattr(self._local, "slot", None)
        if slot is None or slot.pid != _PID:
            slot = self._local.slot = _Slot()
        conns = slot.conns
        # Idle connections beyond a few are closed: many asyncio tasks that
        # waited at once leave as many connections behind.
        if len(conns) > _IDLE_MAX:
            for c in [c for c in conns if c.idle()][_IDLE_MAX:]:
                c.close()
        if any(c.closed for c in conns):
            conns[:] = [c for c in conns if not c.closed]
        for c in conns:
            if c.owned_by(owner) and not c.pending:
                break
        else:
            for c in conns:
                if c.idle():
                    c.set_owner(owner)
                    break
            else:
                c = _Conn(self)
                c.set_owner(owner)
                conns.append(c)
                with self._lock:
                    self._conns.add(c)
        if owner is _SYNC:
            self._local.sync = c  # for _cached_read()
        return c

    def _cached_read(self, path, timeout, label):
        """A read under a cached grant (Client.read()'s hot path), or None:
        then acquire as usual.  It takes the connection _conn_for(_SYNC)
        chose last in this thread, if it is still this thread's and not
        waiting, and finds the kept handle by the path as given (absolute
        or a key; a relative path has no kept handle)."""
        cls = type(path)
        if cls is not str and cls is not bytes:
            path = os.fspath(path)  # acquire()'s TypeError for what is no path
        try:
            conn = self._local.sync
        except AttributeError:  # no acquire yet in this thread (or since fork())
            return None
        if self._closed or conn.pending or conn.owner is not _SYNC:
            return None
        if timeout is not None:
            _timeout_ms(timeout)  # the same TypeError for a bad one
        if label is not None:
            _label(label)  # ignored under a cached grant (coord.h)
        return conn.read_cached(path)

    # -- leases ---------------------------------------------------------
    def acquire(self, path, mode, timeout=None, label=None):
        """Waits for a lease and returns it (a Lease, usable in ``with``).

        ``path``     a file path (relative or absolute, existing or not) or
                     "key:NAME"
        ``mode``     "read" (shared) or "write" (exclusive)
        ``timeout``  seconds; None or -1: wait forever; 0: try once
        ``label``    shown by ``coordctl list``

        Raises coord.Timeout (coord.Busy for timeout 0), coord.Deadlock,
        coord.BadName, coord.NoBroker, ... (all coord.Error).  Ctrl+C
        during the wait raises KeyboardInterrupt at once and leaves the
        broker's queue clean."""
        if mode == READ:
            lease = self._cached_read(path, timeout, label)
            if lease is not None:
                return lease
        return self._acquire(path, mode, timeout, label)

    def _acquire(self, path, mode, timeout, label):
        name = _name(path)
        m = _mode(mode)
        tms = _timeout_ms(timeout)
        conn = self._conn_for(_SYNC)
        if mode == READ:
            lease = conn.read_cached(name)
            if lease is not None:
                return lease
        return conn.acquire(name, m, tms, _label(label), f"{mode} {os.fsdecode(name)}")

    def write(self, path, timeout=None, label=None):
        """acquire(path, "write", ...): ``with client.write(path) as lease:``."""
        return self._acquire(path, WRITE, timeout, label)

    def read(self, path, timeout=None, label=None):
        """acquire(path, "read", ...): ``with client.read(path):``."""
        lease = self._cached_read(path, timeout, label)
        if lease is not None:
            return lease
        return self._acquire(path, READ, timeout, label)

    async def acquire_async(self, path, mode, timeout=None, label=None):
        """acquire() for asyncio: waits without blocking the event loop.
        Cancelling the task (or Ctrl+C under asyncio.run) gives the request
        up and leaves the broker's queue clean."""
        name = _name(path)
        m = _mode(mode)
        tms = _timeout_ms(timeout)
        conn = self._conn_for(asyncio.current_task())
        return await conn.acquire_async(name, m, tms, _label(label),
                                        f"{mode} {os.fsdecode(name)}")

    def write_async(self, path, timeout=None, label=None):
        """``async with client.write_async(path) as lease:``"""
        return _AsyncLease(self, path, WRITE, timeout, label)

    def read_async(self, path, timeout=None, label=None):
        """``async with client.read_async(path) as lease:``"""
        return _AsyncLease(self, path, READ, timeout, label)

    # -- recall ---------------------------------------------------------
    def recall_fd(self):
        """A descriptor that turns readable when the broker recalls a lease
        this thread took (coord_recall_fd()); call recall_clear() then.
        The library's: do not read or close it."""
        conn = self._conn_for(_SYNC)
        rc = conn.call(_lib.coord_recall_fd, conn.handle)
        if rc < 0:
            raise error(rc, "recall descriptor")
        return rc

    def recall_clear(self):
        """Quiets recall_fd() and returns how many of this thread's leases
        are recalled now."""
        conn = self._conn_for(_SYNC)
        rc = _lib.coord_recall_clear(conn.handle)  # safe beside a wait
        if rc < 0:
            raise error(rc, "recall clear")
        return rc

    # -- administration -------------------------------------------------
    def status(self):
        """The broker's state: a dict with protocol, broker_pid, uptime_ms,
        clients (connections, this one included), leases, waiters,
        resources and dir."""
        conn = self._conn_for(_SYNC)
        st = _lib.Status()
        rc = conn.call(_lib.coord_status, conn.handle, ctypes.byref(st))
        if rc < 0:
            raise error(rc, "status")
        out = {f: getattr(st, f) for f, _ in _lib.Status._fields_}
        out["dir"] = os.fsdecode(st.dir)
        return out

    def list(self):
        """Every holder and waiter, as dicts (coord_list(); coordctl list).

        Each has the fields of coord_lease_info_t; "mode" is "read" or
        "write", "cached" "idle", "in-use" or None, and "kernel_wait"
        True (its library waits for the file's kernel lock, held by a
        process outside the broker), False, or None (not known)."""
        conn = self._conn_for(_SYNC)
        arr = ctypes.POINTER(_lib.LeaseInfo)()
        n = ctypes.c_size_t()
        rc = conn.call(_lib.coord_list, conn.handle, ctypes.byref(arr), ctypes.byref(n))
        if rc < 0:
            raise error(rc, "list")
        try:
            out = []
            for i in range(n.value):
                e = arr[i]
                d = {f: getattr(e, f) for f, _ in _lib.LeaseInfo._fields_}
                for f in ("resource", "command", "label"):
                    d[f] = os.fsdecode(d[f])
                d["mode"] = _MODE_NAMES.get(e.mode)
                d["waiting"] = bool(e.waiting)
                d["cached"] = _CACHED_NAMES.get(e.cached)
                # True: its library waits for the file's kernel lock, held
                # outside the broker; None: not known, and for waiters
                d["kernel_wait"] = {1: False, 2: True}.get(e.kernel_wait)
                out.append(d)
            return out
        finally:
            _lib.coord_free(arr)

    def close(self):
        """Closes every connection of this client, in every thread: leases
        still held through it are released (their Lease objects turn
        invalid).  A wait in progress ends with ValueError."""
        self._closed = True
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _AsyncLease:
    """What write_async()/read_async() return: an async context manager."""

    def __init__(self, client, path, mode, timeout, label):
        self._args = (client, path, mode, timeout, label)
        self.lease = None

    async def __aenter__(self):
        client, path, mode, timeout, label = self._args
        self.lease = await client.acquire_async(path, mode, timeout, label)
        return self.lease

    async def __aexit__(self, *exc):
        self.lease.release()

    def __await__(self):
        client, path, mode, timeout, label = self._args
        return client.acquire_async(path, mode, timeout, label).__await__()


def _recall_fd_of(lease):
    conn = lease._conn
    if conn is None or conn.closed:
        return None, None
    rc = conn.call(_lib.coord_recall_fd, conn.handle)
    if rc < 0:
        raise error(rc, "recall descriptor")
    return conn, rc


async def recalled(lease):
    """Returns once ``lease`` is recalled (someone conflicting waits), or
    released.  For asyncio code that holds a lease between requests:

        lease = await coord.write_async(path)
        await coord.recalled(lease)   # ... in a task beside the work
        lease.release()
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    conn, fd = _recall_fd_of(lease)
    while not lease.released and not lease.recalled:
        wake.clear()
        loop.add_reader(fd, wake.set)
        tick = loop.call_later(0.5, wake.set)  # notices a release meanwhile
        try:
            await wake.wait()
        finally:
            loop.remove_reader(fd)
            tick.cancel()
        if not lease.released:
            _lib.coord_recall_clear(conn.handle)


def _after_fork_in_child():
    global _PID
    _PID = os.getpid()
    for client in list(_CLIENTS):
        client._after_fork_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
