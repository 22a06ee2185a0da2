"""Fixtures of the database-helper tests (test_db_*.py): a private broker
instance per test, a coord.Client on it, and helpers to run Python child
processes against it and wait for what they print.

Paths come from the environment meson test sets (COORD_TEST_COORDD,
COORD_TEST_COORDCTL, COORD_LIBRARY), else from ../../../build, so
`pytest bindings/python/tests` works after `ninja -C build` too.
"""
from conftest import wait_until
import os
import select
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)                       # bindings/python
ROOT = os.path.dirname(os.path.dirname(PYTHON_DIR))
BUILD = os.environ.get("COORD_TEST_BUILD") or os.path.join(ROOT, "build")
COORDD = os.environ.get("COORD_TEST_COORDD") or os.path.join(BUILD, "broker", "coordd")
COORDCTL = os.environ.get("COORD_TEST_COORDCTL") or os.path.join(BUILD, "tools", "coordctl")
os.environ.setdefault("COORD_LIBRARY", os.path.join(BUILD, "libcoord", "libcoord.so.0"))
for p in (PYTHON_DIR, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import coord  # noqa: E402  (needs the path above)


def wait_for(condition, what, timeout=10.0):
    """Polls `condition` until it returns a true value, which it returns;
    fails the test after `timeout` seconds, naming `what`."""
    return wait_until(condition, timeout, what)


def coordctl(instance, *args, check=True):
    """Runs coordctl on the instance; returns its stdout."""
    r = subprocess.run([COORDCTL, "--dir", str(instance), *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        pytest.fail(f"coordctl {' '.join(args)} exited {r.returncode}: {r.stderr}{r.stdout}")
    return r.stdout


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """A private instance directory with its own coordd; COORD_DIR points
    at it for children.  The broker is stopped at the end."""
    d = tmp_path / "instance"
    d.mkdir(mode=0o700)
    log = open(tmp_path / "coordd.log", "w")
    broker = subprocess.Popen([COORDD, "--dir", str(d)], stdout=log, stderr=subprocess.STDOUT)
    monkeypatch.setenv("COORD_DIR", str(d))
    monkeypatch.setenv("COORD_NO_AUTOSTART", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [PYTHON_DIR, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    wait_for(lambda: broker.poll() is not None or subprocess.run(
        [COORDCTL, "--dir", str(d), "status"], capture_output=True).returncode == 0,
        "coordd to accept connections")
    assert broker.poll() is None, f"coordd exited at start (see {tmp_path}/coordd.log)"
    yield d
    broker.terminate()
    broker.wait(10)
    log.close()


@pytest.fixture
def client(instance):
    """A coord.Client of the private instance."""
    c = coord.Client(dir=str(instance), autostart=False)
    yield c
    c.close()


class Child:
    """A Python child process running `code`, whose stdout lines the test
    reads with expect()."""

    def __init__(self, code, *args):
        self.proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.lines = []

    def expect(self, prefix, timeout=20.0):
        """Reads lines until one starts with `prefix`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines):
                if line.startswith(prefix):
                    del self.lines[:i + 1]
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.kill()
                pytest.fail(f"child never printed {prefix!r}; stderr: {self.proc.stderr.read()}")
            line = self.proc.stdout.readline()
            if not line:
                pytest.fail(f"child exited ({self.proc.wait()}) before printing {prefix!r}: "
                            f"{self.proc.stderr.read()}")
            self.lines.append(line.rstrip("\n"))

    def close_stdin(self):
        """Tells a child that reads its stdin to go on."""
        self.proc.stdin.close()

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(10)

    def finish(self, timeout=60):
        """Waits for a clean exit; returns every line it printed."""
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout)
        out, err = self.proc.stdout.read(), self.proc.stderr.read()
        assert self.proc.returncode == 0, f"child exited {self.proc.returncode}: {err}"
        return self.lines + out.splitlines()
