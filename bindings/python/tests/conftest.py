"""Fixtures: a real coordd in a private temporary instance directory.

One broker serves the whole session (the default client keeps its
connections per thread for the process's life, so it must keep pointing
at one instance); COORD_DIR names it and autostart is off, so a test can
never reach another broker.  Waits are on conditions with deadlines.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

COORDD = os.environ.get("COORD_TEST_COORDD", "coordd")
COORDCTL = os.environ.get("COORD_TEST_COORDCTL", "coordctl")


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls predicate() until it is true; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def _accepts(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(sock_path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Broker:
    def __init__(self, root):
        self.dir = os.path.join(root, "instance")
        os.mkdir(self.dir, 0o700)
        self.log = open(os.path.join(root, "coordd.log"), "wb")
        self.proc = subprocess.Popen([COORDD, "--dir", self.dir], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        sock = os.path.join(self.dir, "coordd.sock")
        deadline = time.monotonic() + 10
        while not _accepts(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coordd did not start (status {self.proc.poll()}); "
                                   f"see {self.log.name}")
            time.sleep(0.005)

    def coordctl(self, *args):
        return subprocess.run([COORDCTL, "--dir", self.dir, *args], capture_output=True,
                              text=True, timeout=30)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="session")
def broker():
    root = tempfile.mkdtemp(prefix="coord-py-")
    b = Broker(root)
    old = {k: os.environ.get(k) for k in ("COORD_DIR", "COORD_NO_AUTOSTART")}
    os.environ["COORD_DIR"] = b.dir
    os.environ["COORD_NO_AUTOSTART"] = "1"
    try:
        yield b
    finally:
        b.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def files(tmp_path):
    """A directory for the test's resource files."""
    return tmp_path


@pytest.fixture
def key(request):
    """A key of the test's own, so that tests never share a resource."""
    return f"key:{request.node.name}-{os.getpid()}".replace("/", "_").replace("[", "_").replace("]", "_")


def waiters(client, pid=None):
    return [e for e in client.list() if e["waiting"] and (pid is None or e["pid"] == pid)]


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
