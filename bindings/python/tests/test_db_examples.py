"""The examples users copy, run end to end: examples/dashboard/run-demo.sh
(a pipeline SIGKILLed mid-batch under a serving dashboard) and
examples/outbox/run-demo.sh (PostgreSQL stopped, two syncers SIGKILLed,
every operation applied exactly once).  Each starts its own broker and
data in a temporary directory."""
import os
import shutil
import subprocess

import pytest

from dbfixtures import BUILD, ROOT


def run_demo(name, *args):
    r = subprocess.run(["bash", os.path.join(ROOT, "examples", name, "run-demo.sh"), *args],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, COORD_BUILD=BUILD))
    assert r.returncode == 0, f"{name} demo failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_dashboard_demo_keeps_serving_and_loses_nothing():
    pytest.importorskip("flask")
    out = run_demo("dashboard", "2")
    assert "failed 0" in out and " 0 lost" in out and "0 torn" in out, out
    assert "last checkpoint:" in out and ", ok," in out, f"no checkpoint shown:\n{out}"


def test_outbox_demo_applies_every_operation_exactly_once():
    pytest.importorskip("psycopg2")
    if not shutil.which("runuser") or not any(os.path.exists(f"/usr/lib/postgresql/{v}/bin/initdb")
                                              for v in os.listdir("/usr/lib/postgresql")):
        pytest.skip("PostgreSQL's initdb is not installed")
    out = run_demo("outbox")
    assert "missing 0, unexpected 0" in out and "refused:" in out, out
