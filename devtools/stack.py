"""One local-stack launcher for `make run` and the test fixtures: real Apache Kafka and PostgreSQL.

Where the infrastructure comes from (first match wins, see docs/adr/0001-devtools-package.md):

1. environment: ``ZT_TEST_KAFKA_BOOTSTRAP`` (an external broker) and ``ZT_TEST_POSTGRES_URL`` (an
   external server; its database part is replaced per test database). Nothing is started.
2. testcontainers, when a Docker engine answers (pinned images, never ``:latest``).
3. local processes: Apache Kafka from its Maven Central jars (single-node KRaft, JVM) and a
   throw-away PostgreSQL cluster made with ``initdb`` in a temp dir.

Missing prerequisites raise :class:`StackError` naming the fix; nothing is ever skipped silently.

Library::

    with KafkaServer() as kafka, PostgresServer() as pg:
        kafka.bootstrap_servers            # "127.0.0.1:40123"
        pg.create_database("orders")       # "postgresql+asyncpg://postgres@127.0.0.1:40124/orders"

CLI: ``python -m devtools.stack {up,kafka,postgres}`` runs them in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

KAFKA_VERSION = "4.1.1"
KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:16.4"

ENV_TEST_KAFKA = "ZT_TEST_KAFKA_BOOTSTRAP"
ENV_TEST_POSTGRES = "ZT_TEST_POSTGRES_URL"

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_ASSETS = Path(__file__).resolve().parent / "kafka"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zhongtai"

FIX_JAVA = "apt-get install -y openjdk-17-jre-headless maven"
FIX_POSTGRES = "apt-get install -y postgresql"

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class StackError(RuntimeError):
    """The local stack cannot be provided; the message says why and how to fix it."""


class KafkaLike(Protocol):
    """What the fixtures and `make run` need from a Kafka, wherever it comes from."""

    bootstrap_servers: str
    version: str
    description: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class PostgresLike(Protocol):
    """What the fixtures need from a PostgreSQL server, wherever it comes from."""

    version: str
    description: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def create_database(self, name: str) -> str: ...
    def drop_database(self, name: str) -> None: ...


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now.

    Tested the way real servers bind (Kafka's JVM, grpcio and uvicorn all set SO_REUSEADDR):
    sockets a closed connection left in TIME_WAIT (60 s on Linux) do not hold the port, a
    listener does. A plain bind would refuse the port for that minute after every restart.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)  # Linux checks again on listen (e.g. against bound, not yet listening sockets)
        except OSError:
            return False
        return True


# /proc/net/tcp{,6} `st` column (include/net/tcp_states.h)
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def port_sockets(port: int) -> list[tuple[str, int]]:
    """(state, inode) of every TCP socket (IPv4 and IPv6) whose local port is `port`.

    Read from /proc/net/tcp and /proc/net/tcp6; TIME_WAIT sockets belong to no process (inode 0).
    """
    found: list[tuple[str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or int(fields[1].rpartition(":")[2], 16) != port:
                continue
            found.append((_TCP_STATES.get(fields[3], fields[3]), int(fields[9])))
    return found


def port_listeners(port: int) -> list[tuple[int | None, str]]:
    """(pid, command line) of each process listening on TCP `port`; pid None when not visible.

    Socket inodes from /proc/net/tcp{,6} in state LISTEN, matched against /proc/<pid>/fd links.
    """
    inodes = {inode for state, inode in port_sockets(port) if state == "LISTEN"}
    if not inodes:
        return []
    owners: dict[int, tuple[int | None, str]] = {}
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        pid = int(fd_dir.split("/")[2])
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and (inode := int(link[8:-1])) in inodes and inode not in owners:
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    command = ""
                owners[inode] = (pid, command or "?")
    return [owners.get(inode, (None, f"a process not visible here (socket inode {inode})")) for inode in sorted(inodes)]


def port_holder(port: int) -> str:
    """Who holds `port`, for error messages: the listening process(es) by pid and command line.

    Without a listener, says so and counts the other sockets (TIME_WAIT etc.), which do not
    keep a server from binding the port (see port_is_free).
    """
    listeners = port_listeners(port)
    if listeners:
        return ", ".join(f"pid {pid} ({command[:120]})" if pid is not None else command for pid, command in listeners)
    states: dict[str, int] = {}
    for state, _ in port_sockets(port):
        states[state] = states.get(state, 0) + 1
    if not states:
        return "no process (nothing listens on it)"
    return "no listener (only " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + " sockets)"


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def run_coro(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or f"({path} is empty)"


def _die_with_parent(sig: int) -> Callable[[], None]:
    """preexec_fn: the child gets `sig` when the launching process dies (Linux PR_SET_PDEATHSIG).

    This is what keeps a `kill -9`-ed pytest or `make run` from leaving JVMs and postmasters
    behind; `atexit` covers the ordinary exits. Runs after the uid switch in the child, so it
    survives the `user=` change used for PostgreSQL.
    """

    def preexec() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # 1 == PR_SET_PDEATHSIG

    return preexec


def _stop_process_group(proc: subprocess.Popen[bytes] | None, sig: int, grace: float) -> None:
    """Signal the child's process group, wait `grace` seconds, then SIGKILL the group."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # Reap anything left in the group (e.g. PostgreSQL backends) without waiting on them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _make_tempdir(kind: str) -> Path:
    """A temp dir tagged with our pid, after sweeping ones left by launchers that were killed -9."""
    root = Path(tempfile.gettempdir())
    for stale in root.glob("zt-*-*/.launcher-pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(stale.read_text())
            if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale.parent, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"zt-{kind}-"))
    (path / ".launcher-pid").write_text(str(os.getpid()))
    return path


def docker_available() -> bool:
    """True when a Docker engine answers (what testcontainers needs)."""
    if not (shutil.which("docker") or os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    if shutil.which("docker"):
        try:
            return subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    try:
        import docker  # type: ignore[import-untyped]  # shipped with testcontainers

        docker.from_env(timeout=5).ping()
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise StackError(f"Java (17+) is needed to run the local Kafka broker: {FIX_JAVA}")
    return java


def kafka_libs(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """The Kafka jar directory, fetched once from Maven Central into ~/.cache/zhongtai.

    Maven writes into a temp dir that is renamed at the end, so an interrupted fetch is never
    mistaken for a cache.
    """
    target = CACHE_ROOT / f"kafka-{version}" / "libs"
    if target.is_dir() and any(target.glob(f"kafka_2.13-{version}.jar")):
        return target
    _java()
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(f"Maven is needed to fetch the Kafka jars from Maven Central: {FIX_JAVA}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=target.parent))
    cmd = [
        mvn,
        "-B",
        "-f",
        str(KAFKA_ASSETS / "pom.xml"),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    print(f"[stack] fetching Apache Kafka {version} jars from Maven Central (once) ...", file=sys.stderr)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(
            f"could not fetch Kafka {version} with Maven ({' '.join(cmd)}):\n{(result.stdout + result.stderr)[-4000:]}"
        )
    try:
        staging.rename(target)
    except OSError:  # a concurrent fetch won the race; theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return target


def kafka_cluster_id() -> str:
    """A Kafka Uuid in its string form (URL-safe base64 of 16 random bytes, no padding).

    Like Kafka's own Uuid.randomUuid(), never one starting with "-": command-line parsers
    would take it for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def kafka_server_properties(
    *, port: int, controller_port: int, log_dir: Path, extra_listeners: Mapping[str, tuple[int, int]] | None = None
) -> str:
    """server.properties for a single-node KRaft broker+controller on loopback.

    ``extra_listeners``: name → (port it listens on, port it advertises). A client that
    bootstraps through a TCP proxy on the advertised port is told to reach the broker there
    again, so all its connections go through the proxy (the chaos suite's toxiproxy)."""
    extra = dict(extra_listeners or {})
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", *(f"{n}://127.0.0.1:{lp}" for n, (lp, _a) in extra.items())]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}", *(f"{n}://127.0.0.1:{ap}" for n, (_l, ap) in extra.items())]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT", *(f"{n}:PLAINTEXT" for n in extra)]
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static quorum: StorageTool format must then run WITHOUT --standalone.
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{controller_port}"]),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # 50 partitions (the default) makes the first consumer group noticeably slower to form.
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Faster unfencing at start-up (default 2000 ms: two heartbeats are needed).
        "broker.heartbeat.interval.ms": "500",
        # Dev friendliness; the services create their topics explicitly anyway.
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


async def _kafka_metadata(bootstrap: str, timeout_ms: int = 5000) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        return dict(await admin.describe_cluster())
    finally:
        await admin.close()


def wait_for_kafka(
    bootstrap: str,
    timeout: float = 60.0,
    *,
    alive: Callable[[], bool] = lambda: True,
    on_fail: Callable[[str], str] = lambda msg: msg,
) -> None:
    """Block until the broker answers a real metadata request (DescribeCluster) with a broker."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not alive():
            raise StackError(on_fail("Kafka exited during start-up"))
        if _port_open(host, int(port)):
            try:
                meta = run_coro(lambda: _kafka_metadata(bootstrap))
                if meta.get("brokers"):
                    return
                last = f"metadata without brokers: {meta}"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise StackError(on_fail(f"Kafka at {bootstrap} did not answer metadata within {timeout:.0f}s ({last})"))


class KafkaServer:
    """A real Apache Kafka (single-node KRaft) run from its Maven jars as a child JVM.

    `data_dir=None` uses a temp dir removed on stop (tests); a given dir persists and is
    formatted only when it holds no Kafka data yet (`make run`: var/kafka).

    `start()` again after the JVM died (crash, SIGKILL) restarts it on the same broker port and
    data dir: nothing acknowledged is lost (the data dir is only removed by `stop()`).
    `start(wait=False)` returns once the JVM is launched; `answers()` then tells when it
    serves metadata (the `make run` supervisor restarts it that way, without blocking).
    """

    #: Appended to kafka_server_properties(). After a crash the controller (same JVM) refuses
    #: the broker's new incarnation (DuplicateBrokerRegistrationException) until the dead one's
    #: session expires: 9 s by default, counted from the controller's start-up. Heartbeats go
    #: every 0.5 s, so 3 s still leaves several missed heartbeats before a live broker is fenced.
    RESTART_PROPERTIES = (("broker.session.timeout.ms", "3000"),)

    def __init__(
        self,
        version: str = KAFKA_VERSION,
        *,
        data_dir: Path | str | None = None,
        port: int | None = None,
        heap: str = "512m",
        start_timeout: float = 60.0,
        extra_listeners: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.version = version
        #: name → (listen port, advertised port): see kafka_server_properties()
        self.extra_listeners = dict(extra_listeners or {})
        self._persistent = data_dir is not None
        self._data_dir: Path | None = Path(data_dir).resolve() if data_dir is not None else None
        self._port = port
        self._controller_port: int | None = None
        self._heap = heap
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._atexit = False
        self.bootstrap_servers = ""
        self.description = f"Apache Kafka {version} (local JVM, KRaft)"
        self.timings: dict[str, float] = {}

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise StackError("KafkaServer is not started")
        return self._data_dir

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    def _java_cmd(self, libs: Path, *main: str) -> list[str]:
        return [
            _java(),
            f"-Xmx{self._heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={KAFKA_ASSETS / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            *main,
        ]

    def start(self, *, wait: bool = True) -> None:
        """Start (or restart after a crash) the broker; with `wait`, until it answers metadata.

        A failed first start of a temp-dir broker removes the temp dir; a failed restart only
        stops the JVM and keeps the data. The JVM gets SIGTERM when the *thread* that started
        it ends (PR_SET_PDEATHSIG is per thread): start it from one that outlives it.
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        restart = self._data_dir is not None and (self._data_dir / "kraft-logs" / "meta.properties").exists()
        try:
            self._start(wait)
        except BaseException:
            if restart:
                self.kill()
            else:
                self.stop()
            raise

    def _start(self, wait: bool) -> None:
        t0 = time.monotonic()
        libs = kafka_libs(self.version)
        self.timings["fetch"] = time.monotonic() - t0
        if self._data_dir is None:
            self._data_dir = _make_tempdir("kafka")
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "kraft-logs"
        # The same ports on a restart: clients keep their bootstrap address. A port a closed
        # connection left in TIME_WAIT is free for the JVM (it binds with SO_REUSEADDR).
        port = self._port or free_port()
        if not port_is_free(port):
            raise StackError(f"port {port} for Kafka is taken by {port_holder(port)}")
        self._port = port
        controller_port = self._controller_port
        taken = {port, *(p for ports in self.extra_listeners.values() for p in ports)}  # (not bound yet)
        while controller_port is None or controller_port in taken or not port_is_free(controller_port):
            controller_port = free_port()  # a static quorum (no --standalone) may change it
        self._controller_port = controller_port
        props = self.data_dir / "server.properties"
        props.write_text(
            kafka_server_properties(
                port=port, controller_port=controller_port, log_dir=log_dir, extra_listeners=self.extra_listeners
            )
            + "".join(f"{k}={v}\n" for k, v in self.RESTART_PROPERTIES)
        )

        t1 = time.monotonic()
        if not (log_dir / "meta.properties").exists():
            fmt = subprocess.run(
                self._java_cmd(
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    f"--cluster-id={kafka_cluster_id()}",
                    f"--config={props}",
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise StackError(f"Kafka storage format failed:\n{fmt.stdout}{fmt.stderr}")
        self.timings["format"] = time.monotonic() - t1

        t2 = time.monotonic()
        with open(self.data_dir / "logs" / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                self._java_cmd(libs, "kafka.Kafka", str(props)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        self._returncode = None
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        self.bootstrap_servers = f"127.0.0.1:{port}"
        if not wait:
            return
        wait_for_kafka(
            self.bootstrap_servers,
            self.start_timeout,
            alive=lambda: self._proc is not None and self._proc.poll() is None,
            on_fail=self._failure,
        )
        self.timings["start"] = time.monotonic() - t2

    def answers(self, timeout: float = 2.0) -> bool:
        """One probe: the running broker answers a metadata request (DescribeCluster) with a broker."""
        if not self.is_running() or not self.bootstrap_servers:
            return False
        host, _, port = self.bootstrap_servers.rpartition(":")
        if not _port_open(host, int(port)):
            return False
        try:
            meta = run_coro(lambda: _kafka_metadata(self.bootstrap_servers, int(timeout * 1000)))
        except Exception:
            return False
        return bool(meta.get("brokers"))

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs here (benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None and self.is_running() else None

    @property
    def returncode(self) -> int | None:
        """The exit code of the JVM that ran last (None while it runs or if none ran)."""
        if self._proc is not None:
            return self._proc.poll()
        return self._returncode

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _failure(self, message: str) -> str:
        stdout = self.data_dir / "logs" / "stdout.log"
        return (
            f"{message}\n--- {self.log_file} (tail) ---\n{_tail(self.log_file)}\n"
            f"--- {stdout} (tail) ---\n{_tail(stdout, 20)}"
        )

    def kill(self) -> None:
        """Stop the JVM now (SIGKILL) and keep the data dir (a failed start, a hung restart)."""
        proc, self._proc = self._proc, None
        _stop_process_group(proc, signal.SIGKILL, grace=10.0)
        if proc is not None:
            self._returncode = proc.returncode

    def stop(self) -> None:
        """Idempotent: SIGTERM the JVM's process group, SIGKILL after a grace period."""
        proc, self._proc = self._proc, None
        # Throw-away data: no need for a controlled shutdown.
        _stop_process_group(proc, signal.SIGTERM, grace=15.0 if self._persistent else 5.0)
        if proc is not None:
            self._returncode = proc.returncode
        if not self._persistent and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> KafkaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ExternalKafka:
    """A broker given by the environment; nothing is started or stopped."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.version = "external"
        self.description = f"external Kafka at {bootstrap_servers} ({ENV_TEST_KAFKA})"

    def start(self) -> None:
        wait_for_kafka(self.bootstrap_servers, timeout=30)

    def stop(self) -> None:
        pass


class ContainerKafka:
    """`apache/kafka` via testcontainers (only when a Docker engine answers).

    testcontainers' own KafkaContainer drives Confluent's image scripts, so the official
    Apache image is configured here with its documented KAFKA_* environment instead; the host
    port is fixed before start because the advertised listener must name it.
    """

    def __init__(self, image: str = KAFKA_IMAGE) -> None:
        self.image = image
        self.version = image.rpartition(":")[2]
        self.description = f"Apache Kafka {self.version} (testcontainers {image})"
        self.bootstrap_servers = ""
        self._container: Any = None

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer

        port = free_port()
        container = DockerContainer(self.image).with_bind_ports(9092, port)
        host = container.get_docker_client().host()
        env = {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        }
        for key, value in env.items():
            container.with_env(key, value)
        self._container = container.start()
        self.bootstrap_servers = f"{host}:{port}"
        wait_for_kafka(self.bootstrap_servers, timeout=90)

    def stop(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The directory holding initdb/postgres (newest Debian cluster version first)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(re.sub(r"\D", "", Path(p).parent.parent.name) or 0),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise StackError(f"PostgreSQL server binaries (initdb, postgres) not found: {FIX_POSTGRES}")


def _quote_ident(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
    return f'"{name}"'


def _asyncpg_dsn(url: str) -> str:
    """SQLAlchemy URL (postgresql+asyncpg://...) -> a DSN asyncpg accepts (postgresql://...)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql+asyncpg", database=database).render_as_string(hide_password=False)


async def _pg_execute(dsn: str, *statements: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


class _PostgresDatabases:
    """CREATE/DROP DATABASE over an admin URL (shared by every PostgreSQL source)."""

    admin_url = ""  # postgresql+asyncpg://user[:pw]@host:port/postgres

    def create_database(self, name: str) -> str:
        """Create database `name` and return its SQLAlchemy asyncpg URL."""
        stmt = f"CREATE DATABASE {_quote_ident(name)}"
        run_coro(lambda: _pg_execute(_asyncpg_dsn(self.admin_url), stmt))
        return _with_database(self.admin_url, name)

    def drop_database(self, name: str) -> None:
        stmt = f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)"
        run_coro(lambda: _pg_execute(_asyncpg_dsn(self.admin_url), stmt))

    def server_version(self) -> str:
        """`SELECT version()` on the server."""
        return run_coro(lambda: _pg_execute(_asyncpg_dsn(self.admin_url)))


class PostgresServer(_PostgresDatabases):
    """A throw-away PostgreSQL cluster: `initdb` in a temp dir, `postgres` as a child process.

    As root, initdb refuses to run, so initdb and the server run as the `postgres` OS user
    (created by Debian's package) and the temp dir is handed to that user. fsync, full-page
    writes and synchronous commit are off: the cluster is deleted at the end anyway, and
    durability on crash is not what tests check; it makes CREATE DATABASE and commits several
    times faster on slow CI disks.
    """

    def __init__(self, *, port: int | None = None, start_timeout: float = 30.0, durable: bool = False) -> None:
        self._port = port
        self._start_timeout = start_timeout
        #: fsync, full-page writes and synchronous commit ON, as in production (the chaos suite:
        #: an immediate restart must not lose an acknowledged commit).
        self._durable = durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.version = ""
        self.description = "PostgreSQL (local initdb)"
        self.timings: dict[str, float] = {}

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs here (benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _user_kwargs(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackError(f"running as root needs the `postgres` OS user for initdb: {FIX_POSTGRES}") from exc
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        bindir = postgres_bindir()
        as_user = self._user_kwargs()
        t0 = time.monotonic()
        self._tmp = tmp = _make_tempdir("pg")
        if as_user:
            os.chown(tmp, as_user["user"], as_user["group"])
        data = tmp / "data"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(tmp)}
        init = subprocess.run(
            [
                *(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"),
                *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env,
            check=False,
            **as_user,
        )
        if init.returncode != 0:
            raise StackError(f"initdb failed:\n{init.stdout}{init.stderr}")
        self.timings["initdb"] = time.monotonic() - t0

        port = self._port or free_port()
        settings = {
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{tmp}'",
            "max_connections": "200",
            "fsync": "on" if self._durable else "off",
            "synchronous_commit": "on" if self._durable else "off",
            "full_page_writes": "on" if self._durable else "off",
            "logging_collector": "off",
        }
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# devtools/stack.py (throw-away test cluster)\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

        t1 = time.monotonic()
        self._spawn({})
        atexit.register(self.stop)
        self.admin_url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        self.wait_accepting()
        full = self.server_version()
        self.timings["start"] = time.monotonic() - t1
        match = re.search(r"PostgreSQL (\S+)", full)
        self.version = match.group(1) if match else full
        self.description = full

    @property
    def port(self) -> int:
        from sqlalchemy.engine import make_url

        return int(make_url(self.admin_url).port or 0)

    def stop(self) -> None:
        """Idempotent: fast shutdown (SIGINT), SIGKILL after a grace period, remove the cluster."""
        proc, self._proc = self._proc, None
        _stop_process_group(proc, signal.SIGINT, grace=10.0)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- outages: stop the server and bring it back on the same data dir and port -------------
    # (tests of how the services ride out a database restart, a refusal or a recovery)

    @property
    def data_dir(self) -> Path:
        if self._tmp is None:
            raise StackError("the PostgreSQL cluster is not initialised (start() first)")
        return self._tmp / "data"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def halt(self, mode: str = "immediate", *, timeout: float = 30.0) -> None:
        """Stop the server as ``pg_ctl stop -m <mode>`` does (the same signal to the postmaster:
        SIGQUIT for ``immediate``, a crash that needs recovery at the next start; SIGINT for
        ``fast``), keeping the data dir and the port for :meth:`resume`. Returns once it has exited."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal({"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_process_group(proc, signal.SIGKILL, grace=5.0)
        # An immediate stop leaves backends to exit on their own: reap them so the port is free.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def resume(self, *, wait: bool = True, settings: dict[str, str] | None = None) -> None:
        """Start the halted server again on its data dir and port (``settings``: ``-c`` options for
        this run only). ``wait``: return once it accepts connections (see :meth:`wait_accepting`)."""
        if self.running:
            raise StackError("PostgreSQL is already running")
        self._spawn(settings or {})
        if wait:
            self.wait_accepting()

    def _spawn(self, settings: dict[str, str]) -> None:
        """Start ``postgres`` on the cluster's data dir (``settings``: ``-c`` options), logging to
        ``postgres.log`` beside it; returns at once."""
        tmp = self.data_dir.parent
        options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(tmp)}
        with open(tmp / "postgres.log", "ab") as out:
            self._proc = subprocess.Popen(
                [str(postgres_bindir() / "postgres"), "-D", str(self.data_dir), *options],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=tmp,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGINT),
                **self._user_kwargs(),
            )

    def wait_accepting(self, timeout: float | None = None) -> None:
        """Block until the server answers ``SELECT version()`` (raises StackError on timeout)."""
        deadline = time.monotonic() + (timeout or self._start_timeout)
        last = "no answer yet"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise StackError(f"PostgreSQL is not running:\n{_tail(self.data_dir.parent / 'postgres.log')}")
            try:
                self.server_version()
                return
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                log = _tail(self.data_dir.parent / "postgres.log")
                raise StackError(f"PostgreSQL did not accept connections within the time allowed ({last}):\n{log}")
            time.sleep(0.05)

    def start_as_standby(self) -> None:
        """Halt (fast) and start again as a standby with ``hot_standby = off`` and no WAL source: it
        stays in recovery and answers every connection with SQLSTATE 57P03 ("the database system
        is not accepting connections") until :meth:`promote`."""
        self.halt("fast")
        signal_file = self.data_dir / "standby.signal"
        signal_file.touch()
        as_user = self._user_kwargs()
        if as_user:
            os.chown(signal_file, as_user["user"], as_user["group"])
        self.resume(wait=False, settings={"hot_standby": "off"})
        deadline = time.monotonic() + self._start_timeout
        while "entering standby mode" not in _tail(self.data_dir.parent / "postgres.log", 20):
            if time.monotonic() > deadline or not self.running:
                raise StackError(f"no standby:\n{_tail(self.data_dir.parent / 'postgres.log')}")
            time.sleep(0.05)

    def promote(self, *, wait: bool = True) -> None:
        """``pg_ctl promote``: end the standby's recovery; ``wait``: until it accepts connections."""
        done = subprocess.run(
            [str(postgres_bindir() / "pg_ctl"), "promote", "-D", str(self.data_dir), "-w", "-t", "30"],
            capture_output=True,
            text=True,
            cwd=self.data_dir.parent,
            check=False,
            **self._user_kwargs(),
        )
        if done.returncode != 0:
            raise StackError(f"pg_ctl promote failed:\n{done.stdout}{done.stderr}")
        if wait:
            self.wait_accepting()


class ExternalPostgres(_PostgresDatabases):
    """A server given by URL; `create_database` issues CREATE DATABASE over it."""

    def __init__(self, url: str, description: str | None = None) -> None:
        from sqlalchemy.engine import make_url

        base = make_url(url)
        self.admin_url = _with_database(url, base.database or "postgres")
        self.version = "external"
        self.description = description or f"external PostgreSQL ({ENV_TEST_POSTGRES})"

    def start(self) -> None:
        full = self.server_version()
        match = re.search(r"PostgreSQL (\S+)", full)
        self.version = match.group(1) if match else full
        self.description = f"{full} [{self.description}]"

    def stop(self) -> None:
        pass


class ContainerPostgres(ExternalPostgres):
    """`postgres` via testcontainers (only when a Docker engine answers)."""

    def __init__(self, image: str = POSTGRES_IMAGE) -> None:
        self.image = image
        self._container: Any = None
        self.admin_url = ""
        self.version = image.rpartition(":")[2]
        self.description = f"testcontainers {image}"

    def start(self) -> None:
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(
            self.image,
            username="postgres",
            password="postgres",  # noqa: S106 (throw-away container)
            dbname="postgres",
            driver="asyncpg",
        )
        container.with_command("postgres -c fsync=off -c max_connections=200")
        self._container = container.start()
        self.admin_url = _with_database(container.get_connection_url(), "postgres")
        super().start()

    def stop(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()


# --------------------------------------------------------------------------------------------
# Redis (the gateway's shared quota counters, ADR 0023)
# --------------------------------------------------------------------------------------------

FIX_REDIS = "apt-get install -y redis-server"


class RedisServer:
    """A throw-away ``redis-server`` on a free port: no persistence, no config file."""

    def __init__(self, *, port: int | None = None, start_timeout: float = 10.0) -> None:
        self._port = port
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0
        self.version = ""
        self.description = "Redis (local redis-server)"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise StackError(f"redis-server is not installed: {FIX_REDIS}")
        self.port = self._port or free_port()
        self._tmp = tmp = _make_tempdir("redis")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(tmp / "redis.log", "ab") as out:
            self._proc = subprocess.Popen(
                [*args, "--dir", str(tmp)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + self._start_timeout
        while not _port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = _tail(tmp / "redis.log")
                self.stop()
                raise StackError(f"redis-server did not start:\n{log}")
            time.sleep(0.05)
        found = re.search(r"v=(\S+)", subprocess.run([binary, "--version"], capture_output=True, text=True).stdout)
        self.version = found.group(1) if found else "?"
        self.description = f"Redis {self.version} (local redis-server)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop_process_group(proc, signal.SIGTERM, grace=5.0)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# selection: environment -> testcontainers -> local processes
# --------------------------------------------------------------------------------------------


def kafka_for_tests() -> KafkaLike:
    """Not started yet; call start()."""
    external = os.environ.get(ENV_TEST_KAFKA, "").strip()
    if external:
        return ExternalKafka(external)
    if docker_available():
        return ContainerKafka()
    return KafkaServer()


def postgres_for_tests() -> PostgresLike:
    """Not started yet; call start()."""
    external = os.environ.get(ENV_TEST_POSTGRES, "").strip()
    if external:
        return ExternalPostgres(external)
    if docker_available():
        return ContainerPostgres()
    return PostgresServer()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in (
        ("up", "Kafka and PostgreSQL"),
        ("kafka", "Kafka only"),
        ("postgres", "PostgreSQL only"),
    ):
        p = sub.add_parser(name, help=f"run {text} in the foreground until Ctrl-C")
        if name in ("up", "kafka"):
            p.add_argument("--kafka-port", type=int, default=None, help="broker port (default: a free one)")
            p.add_argument("--kafka-data", default=None, help="persistent data dir (default: temp)")
            p.add_argument("--kafka-version", default=KAFKA_VERSION)
        if name in ("up", "postgres"):
            p.add_argument("--pg-port", type=int, default=None, help="PostgreSQL port (default: a free one)")
            p.add_argument("--database", action="append", default=[], help="create this database")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack, _sigterm_as_interrupt():
        try:
            if args.what in ("up", "kafka"):
                kafka = KafkaServer(args.kafka_version, data_dir=args.kafka_data, port=args.kafka_port)
                stack.callback(kafka.stop)
                kafka.start()
                print(f"Kafka {kafka.version}: ZT_KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}")
                print(f"  broker log: {kafka.log_file}")
            if args.what in ("up", "postgres"):
                pg = PostgresServer(port=args.pg_port)
                stack.callback(pg.stop)
                pg.start()
                print(f"{pg.description}")
                print(f"  admin URL: {pg.admin_url}")
                for db in args.database:
                    print(f"  ZT_DATABASE_URL={pg.create_database(db)}")
            print("Ctrl-C to stop.", flush=True)
            while True:
                time.sleep(3600)
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping ...", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
