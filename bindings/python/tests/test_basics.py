"""Leases, context managers, timeouts, errors, recall."""

import os
import select

import pytest

import coord
from coord import _lib


def test_write_lease_in_with_is_valid_and_released_after(broker, key):
    with coord.write(key, timeout=5, label="hourly") as lease:
        assert lease.valid, "a lease inside its with block must be valid"
        assert lease.mode == "write" and lease.resource == key, f"attributes of {lease!r}"
        assert lease.token >= 1 and lease.id >= 1, f"token and id of {lease!r}"
        [held] = [e for e in coord.default_client().list() if e["resource"] == key]
        assert held["label"] == "hourly", f"coordctl list should show the label: {held}"
        assert held["kernel_wait"] is False, f"a holder that has its kernel lock: {held}"
    assert not lease.valid and lease.released, "leaving the with block must release"
    lease.release()  # a second release does nothing


def test_readers_share_and_a_writer_waits(broker, key):
    other, writer = coord.Client(), coord.Client()
    with coord.read(key), other.read(key, timeout=0):
        with pytest.raises(coord.Busy):
            writer.write(key, timeout=0)
    # Releases need no answer, so the broker may read this request on
    # another connection before them: wait for them rather than try once.
    with writer.write(key, timeout=5) as w:
        assert w.valid, "once the readers left, a writer must get the lease"
    other.close()
    writer.close()


def test_a_second_read_is_the_cached_grant_and_a_writer_takes_it_back(broker, key):
    with coord.read(key) as first:
        pass
    with coord.read(key) as second:
        assert second.id == first.id, "the second read is served by the kept grant"
        assert second.valid and second.mode == "read" and second.resource == key
        [held] = [e for e in coord.default_client().list() if e["resource"] == key]
        assert held["cached"] == "in-use", f"listed as a cached grant in use: {held}"
    [held] = [e for e in coord.default_client().list() if e["resource"] == key]
    assert held["cached"] == "idle", f"listed as a cached grant nobody reads under: {held}"
    writer = coord.Client()
    with writer.write(key, timeout=5) as w:
        assert w.valid, "a writer takes an idle cached grant back at once"
        assert coord.try_read(key) is None, "no read starts, cached or not, under a writer"
    writer.close()
    with coord.read(key, timeout=5) as third:
        assert third.id != first.id, "after the writer, a new grant from the broker"


def test_timeout_is_a_timeouterror_with_a_hint(broker, key):
    other = coord.Client()
    with coord.write(key):
        with pytest.raises(coord.Timeout) as info:
            other.write(key, timeout=0.05)
    e = info.value
    assert isinstance(e, TimeoutError) and isinstance(e, coord.Error), f"{type(e).__mro__}"
    assert e.name == "COORD_ETIMEDOUT" and e.code == -7005, f"{e.name} {e.code}"
    assert e.resource == key and e.lock_file == key, f"resource of {e!r}"
    assert "coordctl list" in str(e), f"the message should say what to do: {e}"
    with other.write(key, timeout=5) as lease:
        assert lease.valid, "a timed-out request must leave nothing behind"
    other.close()


def test_timeout_zero_raises_busy_which_is_a_timeout(broker, key):
    other = coord.Client()
    with coord.write(key):
        with pytest.raises(coord.Busy) as info:
            other.read(key, timeout=0)
    assert isinstance(info.value, coord.Timeout) and info.value.name == "COORD_EBUSY"
    other.close()


def test_write_on_a_held_write_in_the_same_thread_is_a_deadlock(broker, key):
    with coord.write(key):
        with pytest.raises(coord.Deadlock) as info:
            coord.write(key, timeout=1)
    assert info.value.name == "COORD_EDEADLK"


def test_bad_names_and_modes(broker, files):
    with pytest.raises(coord.BadName) as info:
        coord.write("key:")
    assert isinstance(info.value, ValueError) and "key:NAME" in str(info.value)
    with pytest.raises(coord.BadName):
        coord.write(files / "no-such-dir" / "x.db")
    with pytest.raises(ValueError):
        coord.acquire(files / "x.db", "exclusive")


def test_files_relative_and_absolute_are_one_resource(broker, files, monkeypatch):
    monkeypatch.chdir(files)
    other = coord.Client()
    with coord.write("shop.db") as lease:
        assert lease.resource == os.path.realpath(files / "shop.db"), lease.resource
        with pytest.raises(coord.Busy):
            other.write(files / "shop.db", timeout=0)
    assert not os.path.exists(files / "shop.db"), "coord must create no file"
    other.close()


def test_no_broker_when_autostart_is_off(tmp_path):
    c = coord.Client(dir=tmp_path, autostart=False)
    with pytest.raises(coord.NoBroker) as info:
        c.write("key:x")
    assert isinstance(info.value, ConnectionError)
    assert "coordd --daemon" in str(info.value), f"the hint should say how: {info.value}"


def test_every_library_code_has_its_own_class():
    seen = set()
    for code in _lib.ERROR_RANGE:
        name = _lib.coord_errname(code).decode()
        if name == "COORD_E?":
            continue
        cls = coord.ERRORS[code]
        assert cls.__module__ == "coord._errors", f"{name} has only a generated class {cls}"
        assert issubclass(cls, coord.Error) and cls.name == name and cls.code == code
        seen.add(cls)
    assert len(seen) >= 24, f"coord.h lists at least 24 codes, found {len(seen)}"


def test_error_carries_code_name_and_message():
    e = coord._errors.error(coord.PermissionDenied.code, "connect", resource="x")
    assert isinstance(e, coord.PermissionDenied) and isinstance(e, PermissionError)
    assert str(e).startswith("connect: COORD_EPERM: permission denied; hint: "), str(e)


def test_recall_flag_and_descriptor(broker, key):
    other = coord.Client()
    lease = coord.read(key)
    fd = coord.default_client().recall_fd()
    assert not lease.recalled, "nobody waits yet"
    assert coord.default_client().recall_clear() == 0
    import threading
    t = threading.Thread(target=lambda: other.write(key, timeout=10).release())
    t.start()
    r, _, _ = select.select([fd], [], [], 10)
    assert r == [fd], "the recall descriptor must turn readable when a writer queues"
    assert lease.recalled, "the lease must say it is recalled"
    assert coord.default_client().recall_clear() == 1
    lease.release()
    t.join(10)
    assert not t.is_alive(), "the writer must get its lease once the reader lets go"
    other.close()


def test_client_close_releases_its_leases(broker, key):
    c = coord.Client()
    lease = c.write(key)
    c.close()
    assert not lease.valid, "closing the client must release its leases"
    lease.release()  # nothing to do, no error
    with pytest.raises(ValueError):
        c.write(key)
    # The broker sees the hang-up of the closed connection and this
    # request on another one in either order within one loop iteration, so
    # the next writer waits for it rather than trying once.
    with coord.write(key, timeout=5):
        pass


def test_try_read_and_try_write_never_wait(broker, key):
    other_client = coord.Client()  # another holder, as another process would be
    with other_client.write(key):
        assert coord.try_read(key) is None, "a held write lease: try_read says busy at once"
        assert coord.try_write(key) is None, "and so does try_write"
    lease = coord.try_read(key)
    assert lease is not None and lease.mode == "read", "free: a read lease"
    with lease:
        other = coord.try_read(key)
        assert other is not None, "readers share"
        other.release()
    other_client.close()
