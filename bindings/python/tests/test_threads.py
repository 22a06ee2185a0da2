"""Threads: exclusion across 50 threads, no connection leaks, fork."""

import http.server
import os
import threading
import urllib.request

import coord
from conftest import wait_until


def test_fifty_threads_on_ten_resources_keep_exclusion(broker, key):
    resources = [f"{key}-{i}" for i in range(10)]
    guard = threading.Lock()
    writers = {r: 0 for r in resources}
    readers = {r: 0 for r in resources}
    counters = {r: 0 for r in resources}
    violations = []
    errors = []

    def work(n):
        try:
            for i in range(20):
                r = resources[(n + i) % len(resources)]
                if (n + i) % 3 == 0:
                    with coord.write(r, timeout=60):
                        with guard:
                            if writers[r] or readers[r]:
                                violations.append(("write", r, writers[r], readers[r]))
                            writers[r] += 1
                        value = counters[r]
                        os.sched_yield()
                        counters[r] = value + 1  # lost if another writer got in
                        with guard:
                            writers[r] -= 1
                else:
                    with coord.read(r, timeout=60):
                        with guard:
                            if writers[r]:
                                violations.append(("read", r, writers[r]))
                            readers[r] += 1
                        os.sched_yield()
                        with guard:
                            readers[r] -= 1
        except BaseException as e:  # reported by the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, f"workers failed: {errors[:5]}"
    assert not violations, f"exclusion broken: {violations[:5]}"
    writes = sum(1 for n in range(50) for i in range(20) if (n + i) % 3 == 0)
    assert sum(counters.values()) == writes, f"lost updates: {counters} vs {writes} writes"


def clients(c):
    return c.status()["clients"]


def test_thread_per_request_server_does_not_leak_connections(broker, key):
    watcher = coord.Client()
    baseline = clients(watcher)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with coord.read(key, timeout=10) as lease:
                body = f"{lease.token}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        for _ in range(30):
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
        serving.join(30)
    wait_until(lambda: clients(watcher) == baseline, what=f"the broker's clients to return to "
               f"{baseline} (now {clients(watcher)})")
    watcher.close()


def test_a_thread_that_ends_holding_a_lease_keeps_it_until_released(broker, key):
    watcher = coord.Client()
    baseline = clients(watcher)
    kept = []
    t = threading.Thread(target=lambda: kept.append(coord.write(key)))
    t.start()
    t.join(30)
    [lease] = kept
    assert lease.valid, "a lease still referenced must outlive its thread"
    assert clients(watcher) == baseline + 1, "its connection must stay open while it is held"
    lease.release()
    wait_until(lambda: clients(watcher) == baseline, what="the ended thread's connection to close")
    with watcher.write(key, timeout=0):
        pass
    watcher.close()


def test_fork_child_gets_a_fresh_client_and_not_the_parents_lease(broker, key):
    lease = coord.write(key)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 0
        try:
            if lease.valid:
                status |= 1
            lease.release()  # the parent's: does nothing here
            try:
                coord.write(key, timeout=0)
                status |= 2  # the child must not be the holder
            except coord.Busy:
                pass
            with coord.write(key + "-child", timeout=5) as mine:
                if not mine.valid:
                    status |= 4
        except BaseException:
            status |= 8
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, (f"child failed: {code} (1 parent lease valid in child, 2 child got the "
                       "parent's resource, 4 own lease invalid, 8 exception)")
    assert lease.valid, "the parent's lease must survive the child"
    lease.release()


def test_fork_inside_a_with_block_and_a_filelock(broker, key):
    """A child forked inside `with coord.write()` is told at the block's end
    that it never held the lease, and a FileLock the parent holds is not
    the child's to re-enter."""
    lock = coord.FileLock(key)
    with coord.write(key + "-with"):
        with lock:
            pid = os.fork()
            if pid == 0:
                status = 0
                try:
                    try:
                        with coord.write(key + "-inner-never"):
                            pass
                    except coord.Error:
                        status |= 16
                    if lock.is_locked:
                        status |= 1
                    try:
                        lock.acquire(timeout=0)
                        status |= 2  # re-entered the parent's lease
                    except coord.Timeout:
                        pass
                except BaseException:
                    status |= 8
                os._exit(status)
            _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, (f"child failed: {code} (1 the parent's FileLock looked held, 2 the child "
                       "re-entered it, 8 exception, 16 its own lease failed)")

    lease = coord.write(key + "-exit")
    pid = os.fork()
    if pid == 0:
        try:
            lease.__exit__(None, None, None)
            os._exit(1)  # no error: the child would believe it held it
        except coord.Forked:
            os._exit(0)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, \
        "leaving a parent's lease's block in a child must raise coord.Forked"
    assert lease.valid, "and the parent's lease stays held"
    lease.release()
