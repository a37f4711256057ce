"""The benchmarks' CPU accounting (tests/support/procs.py) over real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import stack
from tests.support.procs import cpu_seconds, jit_cpu_seconds, tree_cpu_seconds

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


#: A JVM that works for a second (its compilers compile the hot loop), says so, then waits.
_BUSY_JVM = """
public class Busy {
    public static void main(String[] args) throws Exception {
        long end = System.nanoTime() + 1_000_000_000L, acc = 0;
        while (System.nanoTime() < end) { for (int i = 0; i < 10_000; i++) acc += i * 31L ^ acc; }
        System.out.println("ready " + (acc & 1));
        Thread.sleep(30_000);
    }
}
"""


def test_jit_cpu_is_a_part_of_a_jvms_cpu(tmp_path: Path) -> None:
    """A real JVM (the one the broker runs on; Java's single-file launcher compiles the source in
    the same JVM): its JIT compilers have used CPU by the time its hot loop is done, and that is a
    part of the JVM's own CPU."""
    source = tmp_path / "Busy.java"
    source.write_text(_BUSY_JVM)
    jvm = subprocess.Popen([stack._java(), str(source)], stdout=subprocess.PIPE, text=True)
    try:
        assert jvm.stdout is not None
        assert jvm.stdout.readline().startswith("ready")
        jit = jit_cpu_seconds(jvm.pid)
        assert 0 < jit < cpu_seconds(jvm.pid)
    finally:
        jvm.kill()
        jvm.wait()


def test_jit_cpu_of_a_process_without_a_jvm_is_zero_and_of_a_gone_one_nan() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert jit_cpu_seconds(proc.pid) == 0.0
    finally:
        proc.kill()
        proc.wait()
    assert jit_cpu_seconds(proc.pid) != jit_cpu_seconds(proc.pid)  # NaN
