"""coord.FileLock and coord.ReadWriteLock against filelock 3.9's documented behaviour."""

import threading

import pytest

import coord


@pytest.fixture
def other():
    """Another client: a second holder in the same process."""
    c = coord.Client()
    yield c
    c.close()


def test_acquire_returns_a_proxy_and_with_releases(broker, files):
    lock = coord.FileLock(files / "db")
    with lock.acquire() as inner:
        assert inner is lock and lock.is_locked and lock.lock_counter == 1
    assert not lock.is_locked and lock.lock_counter == 0


def test_reentrant_per_object_with_a_counter(broker, files):
    lock = coord.FileLock(files / "db")
    with lock:
        with lock:
            assert lock.lock_counter == 2
        assert lock.is_locked and lock.lock_counter == 1, "the inner exit only counts down"
    assert not lock.is_locked


def test_release_force_lets_go_at_once(broker, files, other):
    lock = coord.FileLock(files / "db")
    lock.acquire()
    lock.acquire()
    lock.release(force=True)
    assert not lock.is_locked and lock.lock_counter == 0
    coord.FileLock(files / "db", client=other).acquire(timeout=0).lock.release()


def test_timeout_message_and_type(broker, files, other):
    path = str(files / "db")
    with coord.FileLock(path):
        lock = coord.FileLock(path, timeout=0.05, client=other)
        with pytest.raises(coord.Timeout) as info:
            lock.acquire()
        assert str(info.value) == f"The file lock '{path}' could not be acquired."
        assert info.value.lock_file == path and isinstance(info.value, TimeoutError)
        assert lock.lock_counter == 0 and not lock.is_locked, "a failed acquire must not count"


def test_blocking_false_tries_once(broker, files, other):
    path = files / "db"
    with coord.FileLock(path):
        with pytest.raises(coord.Timeout):
            coord.FileLock(path, client=other).acquire(blocking=False)
        with pytest.raises(coord.Timeout):
            coord.FileLock(path, blocking=False, client=other).acquire()


def test_timeout_property_and_decorator(broker, files):
    lock = coord.FileLock(files / "db", timeout=3)
    assert lock.timeout == 3.0
    lock.timeout = "5"
    assert lock.timeout == 5.0

    @lock
    def job():
        return lock.is_locked

    assert job() and not lock.is_locked


def test_creates_no_lock_file(broker, files):
    with coord.FileLock(files / "db"):
        pass
    assert list(files.iterdir()) == []


def test_a_waiting_filelock_gets_it_after_release(broker, files, other):
    path = files / "db"
    holder = coord.FileLock(path)
    holder.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(coord.FileLock(path).acquire(timeout=30)))
    t.start()
    holder.release()
    t.join(30)
    assert got and got[0].lock.is_locked
    got[0].lock.release()


def test_read_write_lock(broker, files, other):
    path = files / "db"
    rw = coord.ReadWriteLock(path)
    theirs = coord.ReadWriteLock(path, client=other)
    with rw.read_lock():
        with theirs.read_lock(timeout=0):
            assert rw.is_locked and theirs.is_locked, "readers share"
        with pytest.raises(coord.Timeout):
            theirs.acquire_write(timeout=0)
    with rw.write_lock():
        with pytest.raises(coord.Timeout):
            theirs.acquire_read(blocking=False)
    assert not rw.is_locked
