"""Reads under a cached grant (Client.read()'s hot path): every spelling
of a path, exceptions, garbage collection, threads, fork, eviction of
kept handles, and COORD_NO_CACHE."""

import gc
import os
import pathlib
import queue
import subprocess
import sys
import threading

import pytest

import coord
from conftest import child_env


def listed(client, key):
    return [e for e in client.list() if e["resource"] == key]


def warm(client, key):
    """Takes and releases a read, so that key has a cached grant; its id."""
    with client.read(key) as first:
        pass
    return first.id


def test_every_spelling_of_a_path_reads_under_the_one_cached_grant(broker, files, monkeypatch):
    path = files / "shop.db"
    c = coord.Client()
    grant = warm(c, path)  # a pathlib.Path
    for spelling in (str(path), os.fsencode(path), pathlib.Path(path)):
        with c.read(spelling) as lease:
            assert lease.id == grant, f"{spelling!r} reads under the cached grant {grant}"
            assert lease.resource == str(path) and lease.mode == "read", f"fields of {lease!r}"
            [held] = listed(c, str(path))
            assert held["cached"] == "in-use", f"{spelling!r}: the grant is in use: {held}"
        assert lease.released, f"{spelling!r}: released at the end of the block"
    # A relative path is resolved at each acquire (its handle is not kept),
    # so it names the same resource, from wherever the program is now.
    monkeypatch.chdir(files)
    for spelling in ("shop.db", b"shop.db"):
        with c.read(spelling) as lease:
            assert lease.resource == str(path), f"{spelling!r} is {path}: {lease!r}"
        assert lease.released, f"{spelling!r}: released at the end of the block"
    c.close()


def test_a_cached_read_is_released_when_its_block_raises(broker, key):
    warm(coord.default_client(), key)
    with pytest.raises(RuntimeError, match="in the block"):
        with coord.read(key) as lease:
            raise RuntimeError("in the block")
    assert lease.released, "the block's exception still releases the read"
    [held] = listed(coord.default_client(), key)
    assert held["cached"] == "idle", f"the grant is idle again after the exception: {held}"


def test_a_collected_cached_read_is_released_with_a_warning(broker, key):
    c = coord.Client()
    warm(c, key)
    lease = c.read(key)
    with pytest.warns(ResourceWarning, match="never released"):
        del lease
        gc.collect()
    [held] = listed(c, key)
    assert held["cached"] == "idle", f"the collected read gave the grant back: {held}"
    conn = c._local.sync
    assert conn.leases == 0 and conn.idle(), \
        f"no Lease of the connection is left counted ({conn.leases}), so others may reuse it"
    c.close()


def test_a_closed_client_refuses_a_read_even_with_a_cached_grant(broker, key):
    c = coord.Client()
    warm(c, key)
    c.close()
    with pytest.raises(ValueError, match="closed"):
        c.read(key)
    warm(coord.default_client(), key)
    with pytest.raises(TypeError):
        coord.read(key, timeout="soon")  # the cached read checks what it is given


def test_cached_reads_released_by_two_other_threads_at_once(broker, key):
    """One thread reads, two others release each read at the same time:
    each read counts as released once, and the grant ends idle, so a
    writer gets the resource at once."""
    c = coord.Client()
    warm(c, key)
    handed = [queue.Queue(), queue.Queue()]
    errors = []

    def release_all(q):
        try:
            while (lease := q.get()) is not None:
                lease.release()
                lease.release()  # a second release does nothing
        except BaseException as e:
            errors.append(e)

    releasers = [threading.Thread(target=release_all, args=(q,)) for q in handed]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns often, inside release() too
    try:
        for t in releasers:
            t.start()
        for _ in range(2000):
            lease = c.read(key)
            for q in handed:
                q.put(lease)
        del lease
        for q in handed:
            q.put(None)
        for t in releasers:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not any(t.is_alive() for t in releasers) and not errors, \
        f"a releasing thread failed: {errors}"
    conn = c._local.sync
    assert conn.leases == 0, f"every release counted once: {conn.leases} Leases left counted"
    assert all(e["cached"] == "idle" for e in listed(c, key)), \
        f"nothing is held but the idle grant: {listed(c, key)}"
    writer = coord.Client()
    with writer.write(key, timeout=5) as w:
        assert w.valid, "a writer takes the idle grant back"
    writer.close()
    c.close()


def test_threads_each_read_under_their_own_cached_grant(broker, key):
    c = coord.Client()
    ids, errors = {}, []

    def reader(i):
        try:
            seen = set()
            for _ in range(500):
                with c.read(key) as lease:
                    if not lease.valid:
                        raise AssertionError(f"invalid inside its block: {lease!r}")
                    seen.add(lease.id)
            ids[i] = seen
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, f"a reader failed: {errors}"
    assert all(len(s) == 1 for s in ids.values()), f"each thread kept one grant: {ids}"
    c.close()


def test_a_forked_child_never_holds_the_parents_cached_read(broker, key):
    warm(coord.default_client(), key)
    lease = coord.read(key)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 0
        try:
            if lease.valid:
                status |= 1
            lease.release()  # the parent's: does nothing here
            try:
                with coord.read(key, timeout=5) as mine:
                    if not mine.valid or mine.id == lease.id:
                        status |= 2
            except coord.Error:
                status |= 4
            try:
                with lease:
                    pass
                status |= 16
            except coord.Forked:
                pass
        except BaseException:
            status |= 8
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, (f"child failed: {code} (1 the parent's read valid in the child, 2 the "
                       "child's own read invalid or the parent's, 4 it failed, 8 exception, "
                       "16 the parent's read ended a block without coord.Forked)")
    assert lease.valid, "the parent's read must survive the child"
    [mine] = [e for e in listed(coord.default_client(), key) if e["pid"] == os.getpid()]
    assert mine["cached"] == "in-use", f"the parent still reads under its grant: {mine}"
    writer = coord.Client()
    with pytest.raises(coord.Busy):
        writer.write(key, timeout=0)  # the parent's read is still under way
    lease.release()
    with writer.write(key, timeout=5) as w:
        assert w.valid, "once the parent's read ended, its idle grant goes to a writer"
    writer.close()


def test_a_child_that_forgets_its_parents_connections_leaves_their_grants_alone(broker, key):
    """The parent's idle cached grant, in a page the child shares, is still
    the broker's to take back once the child has dropped (disconnected)
    its copies of the parent's connections."""
    c = coord.Client()
    warm(c, key)
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            with coord.read(key + "-child", timeout=5):  # the child's own client
                pass
            gc.collect()
        except BaseException:
            status = 1
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's own read failed"
    writer = coord.Client()
    with writer.write(key, timeout=5) as w:
        assert w.valid, "a writer takes the parent's idle grant back, child or no child"
    writer.close()
    c.close()


def test_kept_handles_stay_bounded_and_the_path_index_names_only_kept_ones(broker, key):
    c = coord.Client()
    keys = [f"{key}-{i}" for i in range(100)]
    for k in keys + keys[:3]:
        warm(c, k)
        with c.read(k) as lease:
            assert lease.valid, f"a read of {k} after others' handles were dropped"
    conn = c._local.sync
    kept = list(conn.resources.values())
    assert len(kept) <= 64, f"at most 64 handles are kept, not {len(kept)}"
    stale = [p for p, res in conn.by_path.items() if not any(res is r for r in kept)]
    assert not stale, f"paths whose handle was closed are still indexed: {stale[:5]}"
    c.close()


def test_no_cache_makes_every_read_ask_the_broker(broker, key):
    script = ("import coord, sys\n"
              "key = sys.argv[1]\n"
              "ids = []\n"
              "for _ in range(3):\n"
              "    with coord.read(key) as lease:\n"
              "        ids.append(lease.id)\n"
              "left = [e for e in coord.default_client().list() if e['resource'] == key]\n"
              "print(len(set(ids)), len(left))\n")
    env = child_env()
    env["COORD_NO_CACHE"] = "1"
    out = subprocess.run([sys.executable, "-c", script, key], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, f"the child failed: {out.stderr}"
    assert out.stdout.split() == ["3", "0"], \
        f"with COORD_NO_CACHE=1 each read is its own grant and none is kept: {out.stdout!r}"


def test_a_client_made_with_cache_false_asks_the_broker_for_every_read(broker, key):
    cached, uncached = coord.Client(), coord.Client(cache=False)
    try:
        ids = []
        for _ in range(3):
            with uncached.read(key) as lease:
                ids.append(lease.id)
        assert len(set(ids)) == 3, f"Client(cache=False): each read is its own grant: {ids}"
        left = [e for e in cached.list() if e["resource"] == key]
        assert not left, f"Client(cache=False) keeps no grant after its reads: {left}"
        for _ in range(3):
            with cached.read(key) as lease:
                ids.append(lease.id)
        assert len(set(ids[3:])) == 1, f"the default Client caches its reads: {ids[3:]}"
    finally:
        uncached.close()
        cached.close()
