"""The benchmarks' CPU accounting (tests/support/procs.py) over real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.procs import cpu_seconds, tree_cpu_seconds

pytestmark = pytest.mark.integration

#: A parent that only waits: one child burns CPU and exits (its time is collected by the
#: parent's wait), another burns CPU and is still alive when we look.
_FAMILY = """
import subprocess, sys, time
burn = "import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass\\n"
subprocess.run([sys.executable, "-c", burn], check=True)
alive = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
time.sleep(1.5)
print("ready", flush=True)
time.sleep(30)
"""


def test_tree_cpu_counts_live_and_exited_descendants() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _FAMILY], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        own, tree = cpu_seconds(parent.pid), tree_cpu_seconds(parent.pid)
        # Two children of ~0.4 s each (plus interpreter start-ups), the parent itself far less.
        assert own < 0.4
        assert tree >= own + 0.75
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the live child too
        parent.wait()


def test_tree_cpu_of_a_gone_process_is_nan() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert tree_cpu_seconds(proc.pid) != tree_cpu_seconds(proc.pid)  # NaN
