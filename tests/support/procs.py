"""Run real component processes in tests: ``python -m services.cli <component>``.

    proc = ServiceProcess("customer", env={"ZT_DATABASE_URL": url, ...})
    proc.start()            # waits until gRPC health says SERVING (or the gateway's /healthz)
    proc.kill()             # SIGKILL: the crash tests
    proc.stop()             # SIGTERM, then SIGKILL after a grace period

Each process gets its own log file under the test's tmp dir; failures show its tail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.stack import free_port
from services.cli import DEV_SECRET

REPO = Path(__file__).resolve().parents[2]


def _stat(path: Path) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` after the command name (field 3 on is index 0 on):
    state, ppid (1), ..., utime (11), stime (12), cutime (13), cstime (14)."""
    return path.read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = _stat(Path(f"/proc/{pid}/stat"))
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Linux thread names (``comm``, 15 characters) of a HotSpot JVM's JIT compiler threads
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")
#: The benchmarks warm a freshly started broker until its JIT compilers use at most this share of
#: a core (ADR 0066): 15-35 % in its first minutes under load, 2-3 % once its hot paths are compiled
JIT_QUIET_SHARE = 0.05


def jit_cpu_seconds(pid: int) -> float:
    """CPU of a JVM's JIT compiler threads so far (Linux /proc; NaN elsewhere): the part of a
    freshly started broker's CPU that goes on compiling its code, not serving. A compiler thread
    that exited (HotSpot stops idle ones) takes its CPU with it, so this is a lower bound."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return float("nan")
    total = 0
    for task in tasks:
        try:
            if (task / "comm").read_text().startswith(JIT_THREADS):
                fields = _stat(task / "stat")
                total += int(fields[11]) + int(fields[12])
        except OSError:
            continue  # exited while we looked
    return total / ticks


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its descendants (Linux /proc; NaN elsewhere): the live ones' user +
    system time, and what the root has collected from children that exited (PostgreSQL's
    backends are children of the postmaster)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = _stat(entry / "stat")
            except OSError:
                continue  # exited while we looked
    if pid not in stats:
        return float("nan")
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total = int(stats[pid][13]) + int(stats[pid][14])  # cutime + cstime: waited-for children
    todo = [pid]
    while todo:
        current = todo.pop()
        total += int(stats[current][11]) + int(stats[current][12])
        todo.extend(children.get(current, []))
    return total / ticks


def base_env(**overrides: str) -> dict[str, str]:
    """Environment for a component process: dev auth, quiet logs, the repo on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZT_")}
    env.update(
        ZT_ENVIRONMENT="test",
        ZT_AUTH_HS256_SECRET=DEV_SECRET,
        ZT_LOG_LEVEL="INFO",
        ZT_GRPC_SHUTDOWN_GRACE_S="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class ServiceProcess:
    """A component in its own process, on a free port unless one is given."""

    def __init__(self, component: str, *, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        self.component = component
        self.port = port or free_port()
        self.env = base_env(**env)
        key = "ZT_HTTP_PORT" if component == "gateway" else "ZT_GRPC_PORT"
        self.env[key] = str(self.port)
        self.log_path = log_dir / f"{component}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.component],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.component} exited with {self.proc.returncode}:\n{self.tail()}")
            if self._healthy():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.component} not ready after {timeout}s:\n{self.tail()}")

    def _healthy(self) -> bool:
        if self.component == "gateway":
            import httpx

            try:
                return httpx.get(f"http://{self.target}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> float:
        """The CPU (user + system) the running process has used so far."""
        return cpu_seconds(self.proc.pid) if self.proc is not None else float("nan")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks run."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace``, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode
