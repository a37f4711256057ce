"""`make run`: the whole platform on one machine, supervised. Ctrl-C stops everything.

1. Kafka: a local single-node KRaft broker with persistent data in var/kafka (port 9092, or a
   free port when a live process listens on 9092), or the broker named by ZT_KAFKA_BOOTSTRAP_SERVERS if set.
2. `python -m services.cli migrate`, then every component from
   `services.cli.available_components()` as a child process (`python -m services.cli <name>`),
   each waited for on its gRPC health check / the gateway's /healthz.
3. `demo-data` (when the CLI has it), a dev token and example requests.
4. Supervision: a crashed child, or the local Kafka, is restarted with backoff (same port, same
   data; one log line per attempt); Ctrl-C/SIGTERM stops the children in
   reverse order (SIGTERM, SIGKILL after a grace period) and Kafka last.

Children get ZT_ENVIRONMENT=dev, the documented dev HS256 secret and the Kafka bootstrap; each
service uses its default SQLite file var/<service>.db unless ZT_DATABASE_URL is set. The gateway
keeps its Idempotency-Key records in var/gateway.db (ZT_IDEMPOTENCY_STORE=database, ADR 0022) and
its quota buckets in a local redis-server (ZT_QUOTA_REDIS_URL, ADR 0023) when Debian's
`redis-server` is installed; without it, it says so and the gateway counts quotas in memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console
from rich.text import Text

from devtools import stack
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES
from services.kit.config import DEFAULT_PORTS

DEV_KAFKA_PORT = 9092
VAR = stack.REPO_ROOT / "var"
STOP_GRACE = 10.0
HEALTH_TIMEOUT = 60.0
STABLE_AFTER = 60.0  # a child running this long has its restart backoff reset

COLORS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")

console = Console(highlight=False, soft_wrap=True)


def say(message: str, style: str = "bold") -> None:
    console.print(Text(f"[run] {message}", style=style))


# --------------------------------------------------------------------------------------------
# what exists in services/
# --------------------------------------------------------------------------------------------


def discover_components() -> tuple[list[str], str]:
    """(components, reason-if-none). Robust to services/cli.py missing or incomplete."""
    try:
        import services.cli as cli
    except Exception as exc:  # ImportError, or any error while importing a half-written CLI
        return [], f"services/cli.py is not importable ({type(exc).__name__}: {exc})"
    available = getattr(cli, "available_components", None)
    if not callable(available):
        return [], "services/cli.py has no available_components()"
    try:
        components = [str(c) for c in available()]
    except Exception as exc:
        return [], f"available_components() failed ({type(exc).__name__}: {exc})"
    if not components:
        return [], "available_components() lists none"
    return components, ""


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def cli_supports(subcommand: str, env: dict[str, str]) -> bool:
    """True when `services.cli <subcommand> --help` succeeds (works for argparse/click)."""
    try:
        result = subprocess.run(
            cli_cmd(subcommand, "--help"),
            cwd=stack.REPO_ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


# --------------------------------------------------------------------------------------------
# children
# --------------------------------------------------------------------------------------------


def _pump(name: str, color: str, stream: IO[bytes]) -> None:
    """Copy a child's output to the console, each line prefixed with the component name."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        console.print(Text.assemble((f"{name:>9} │ ", color), line))
    stream.close()


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    color: str
    health: str = ""  # "grpc://127.0.0.1:50051" or "http://127.0.0.1:8080/healthz" or ""
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    pumps: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=stack.REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=stack._die_with_parent(signal.SIGTERM),
        )
        self.started_at = time.monotonic()
        assert self.proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(self.name, self.color, self.proc.stdout), daemon=True)
        pump.start()
        self.pumps = [pump]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            say(f"stopping {self.name} (pid {proc.pid})", "dim")
        stack._stop_process_group(proc, signal.SIGTERM, grace)
        for pump in self.pumps:
            pump.join(timeout=2)


def healthy(target: str) -> bool:
    """One health probe: gRPC grpc.health.v1 Check (overall server) or HTTP 200."""
    if target.startswith("grpc://"):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target.removeprefix("grpc://")) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    try:
        with urllib.request.urlopen(target, timeout=2) as response:  # noqa: S310 (fixed local URL)
            return bool(response.status == 200)
    except OSError:
        return False


def wait_healthy(child: Child, stopping: threading.Event, timeout: float = HEALTH_TIMEOUT) -> bool:
    if not child.health:
        return child.running()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        if not child.running():
            return False
        if healthy(child.health):
            return True
        time.sleep(0.3)
    return False


def run_step(name: str, args: list[str], env: dict[str, str]) -> bool:
    """Run a one-shot CLI step (migrate, demo-data) with prefixed output; True on success."""
    say(f"{name}: {' '.join(args)}")
    proc = subprocess.Popen(
        cli_cmd(*args),
        cwd=stack.REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=stack._die_with_parent(signal.SIGTERM),
    )
    assert proc.stdout is not None
    _pump(name, "white", proc.stdout)
    code = proc.wait()
    if code != 0:
        say(f"{name} failed with exit code {code}", "bold red")
    return code == 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def start_kafka() -> tuple[stack.KafkaServer | None, str]:
    external = os.environ.get("ZT_KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        say(f"using the Kafka at ZT_KAFKA_BOOTSTRAP_SERVERS={external}")
        stack.wait_for_kafka(external, timeout=30)
        return None, external
    port = DEV_KAFKA_PORT
    if not stack.port_is_free(port):
        holder = stack.port_holder(port)
        port = stack.free_port()
        say(
            f"port {DEV_KAFKA_PORT} is held by {holder}; the local Kafka uses {port} instead "
            f"(children get ZT_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port})",
            "yellow",
        )
    kafka = stack.KafkaServer(data_dir=VAR / "kafka", port=port)
    say(f"starting Apache Kafka {kafka.version} (KRaft, data in {VAR / 'kafka'}) ...")
    t0 = time.monotonic()
    kafka.start()
    say(f"Kafka is up at {kafka.bootstrap_servers} in {time.monotonic() - t0:.1f}s (log: {kafka.log_file})")
    return kafka, kafka.bootstrap_servers


def start_redis(env: dict[str, str]) -> stack.RedisServer | None:
    """A local redis-server for the gateway's quota buckets (sets ZT_QUOTA_REDIS_URL in ``env``)."""
    if env.get("ZT_QUOTA_REDIS_URL"):
        return None
    redis = stack.RedisServer()
    try:
        redis.start()
    except stack.StackError as exc:
        say(f"no shared quotas: {exc} (the gateway counts them in memory meanwhile)", "yellow")
        return None
    env["ZT_QUOTA_REDIS_URL"] = redis.url
    say(f"{redis.description} at {redis.url} (the gateway's quota buckets)")
    return redis


def held_ports(ports: dict[str, int]) -> dict[str, str]:
    """{name: holder} for each port a live listener holds (TIME_WAIT leftovers of a previous
    run do not count: the servers bind with SO_REUSEADDR, see stack.port_is_free)."""
    return {name: stack.port_holder(port) for name, port in ports.items() if not stack.port_is_free(port)}


def print_usage(env: dict[str, str], components: list[str], ports: dict[str, int]) -> None:
    token = ""
    scopes = " ".join(ALL_SCOPES)
    if cli_supports("token", env):
        result = subprocess.run(
            cli_cmd("token", "--scope", scopes),
            cwd=stack.REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        token = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout else ""
        if not token:
            say(f"`token` failed: {result.stderr.strip()[-500:]}", "red")
    console.rule("Zhongtai is running")
    for name in components:
        port = ports.get(name)
        where = f"http://127.0.0.1:{port}" if name == "gateway" else f"127.0.0.1:{port} (gRPC)"
        console.print(f"  {name:<9} {where if port else '(no known port)'}")
    if token:
        console.print("\nDev token (all scopes, HS256 dev secret):")
        console.print(f"  export TOKEN={token}", soft_wrap=True)
    if "gateway" in components:
        base = f"http://127.0.0.1:{ports.get('gateway', 8080)}"
        console.print("\nTry:")
        console.print(f"  curl -s {base}/healthz")
        console.print(f'  curl -s -H "Authorization: Bearer $TOKEN" {base}/v1/products')
        console.print(f'  curl -s -H "Authorization: Bearer $TOKEN" {base}/v1/customers')
        console.print(f"\nStaff workbench (sign in: mint a dev token on the page): {base}/console/")
    console.print("\nCtrl-C stops everything.\n")


def main() -> int:
    VAR.mkdir(parents=True, exist_ok=True)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stopping.is_set():  # second Ctrl-C: interrupt whatever blocks (e.g. a start-up wait)
            raise KeyboardInterrupt
        say(f"{signal.Signals(signum).name}: shutting down ...", "bold yellow")
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    kafka: stack.KafkaServer | None = None
    redis: stack.RedisServer | None = None
    children: list[Child] = []
    try:
        try:
            kafka, bootstrap = start_kafka()
        except stack.StackError as exc:
            say(f"cannot start Kafka: {exc}", "bold red")
            return 1

        env = {
            **os.environ,
            "ZT_ENVIRONMENT": "dev",
            "ZT_AUTH_HS256_SECRET": os.environ.get("ZT_AUTH_HS256_SECRET", DEV_SECRET),
            "ZT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ZT_IDEMPOTENCY_STORE": os.environ.get("ZT_IDEMPOTENCY_STORE", "database"),
            # the data hub's trained scores, committed in models/ (docs/data-hub.md, "Trained scores")
            "ZT_DATAHUB_MODEL_PATH": os.environ.get("ZT_DATAHUB_MODEL_PATH", "models/scores.json"),
            "PYTHONUNBUFFERED": "1",
        }
        redis = start_redis(env)
        components, reason = discover_components()
        if not components:
            say(f"no services yet: Kafka is up at {bootstrap} ({reason}). Ctrl-C to stop.", "bold yellow")
            supervise([], kafka, stopping)
            return 0

        if not run_step("migrate", ["migrate"], env):
            return 1

        ports = dict(DEFAULT_PORTS)
        held = held_ports({name: ports[name] for name in components if ports.get(name)})
        for name, holder in held.items():
            say(f"port {ports[name]} for {name} is held by {holder}; stop it first", "bold red")
        if held:
            return 1
        for i, name in enumerate(components):
            if stopping.is_set():
                return 0
            port = ports.get(name)
            health = ""
            if port:
                health = f"http://127.0.0.1:{port}/healthz" if name == "gateway" else f"grpc://127.0.0.1:{port}"
            child = Child(name, cli_cmd(name), env, COLORS[i % len(COLORS)], health)
            children.append(child)
            say(f"starting {name} ...")
            t0 = time.monotonic()
            child.start()
            if wait_healthy(child, stopping):
                say(f"{name} is healthy ({health or 'running'}) in {time.monotonic() - t0:.1f}s", "bold green")
            elif not stopping.is_set():
                say(f"{name} did not become healthy; the supervisor keeps retrying", "bold red")

        if not stopping.is_set() and cli_supports("demo-data", env):
            run_step("demo-data", ["demo-data"], env)
        if not stopping.is_set():
            print_usage(env, components, ports)

        supervise(children, kafka, stopping)
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        if kafka is not None:
            say("stopping Kafka ...", "dim")
            kafka.stop()
        if redis is not None:
            redis.stop()
        say("stopped.", "dim")


def restart_delay(restarts: int) -> float:
    """Back-off before restart attempt `restarts + 1`: 1 s, 2 s, 4 s ... 30 s."""
    return min(30.0, 2.0**restarts)


@dataclass
class KafkaWatch:
    """Supervision of the local broker: restarted with back-off like the children, one log
    line per attempt, and it counts as back only once it answers a metadata request.

    Never blocks: `KafkaServer.start(wait=False)` launches the JVM (same port, same data dir)
    and each tick probes it once.
    """

    kafka: stack.KafkaServer
    restarts: int = 0  # attempts since it last stayed up STABLE_AFTER seconds
    next_start: float = 0.0  # when the next attempt is due (0: none scheduled)
    down_since: float = 0.0  # when the outage was noticed (0: broker up)
    launched_at: float = 0.0  # when the JVM of the current attempt was launched
    up_since: float = field(default_factory=time.monotonic)

    def tick(self, now: float) -> None:
        kafka = self.kafka
        if kafka.is_running():
            if self.down_since == 0.0:
                if self.restarts and now - self.up_since > STABLE_AFTER:
                    self.restarts = 0
            elif kafka.answers():
                say(
                    f"Kafka answers at {kafka.bootstrap_servers} again, {now - self.down_since:.1f}s after it "
                    f"went down (JVM start-up {now - self.launched_at:.1f}s, attempt {self.restarts})",
                    "bold green",
                )
                self.down_since, self.up_since = 0.0, now
            elif now - self.launched_at > kafka.start_timeout:
                say(f"Kafka did not answer within {kafka.start_timeout:.0f}s; killing it (log: {kafka.log_file})")
                kafka.kill()
            return
        if self.down_since == 0.0:
            self.down_since = now
        if self.next_start == 0.0:
            delay = restart_delay(self.restarts)
            say(
                f"Kafka exited (code {kafka.returncode}); restart attempt {self.restarts + 1} in {delay:.0f}s "
                f"(log: {kafka.log_file})",
                "bold red",
            )
            self.next_start = now + delay
        elif now >= self.next_start:
            self.restarts += 1
            self.next_start = 0.0
            try:
                kafka.start(wait=False)
            except stack.StackError as exc:
                say(f"Kafka restart attempt {self.restarts} failed: {exc}", "bold red")
                return
            self.launched_at = time.monotonic()
            say(f"Kafka restart attempt {self.restarts}: JVM pid {kafka.pid} launched on {kafka.bootstrap_servers}")


def supervise(children: list[Child], kafka: stack.KafkaServer | None, stopping: threading.Event) -> None:
    """Restart a crashed broker or child with exponential backoff (1 s .. 30 s) until asked to stop."""
    watch = KafkaWatch(kafka) if kafka is not None else None
    while not stopping.wait(0.5):
        now = time.monotonic()
        if watch is not None:
            watch.tick(now)
        for child in children:
            if child.running():
                if child.restarts and now - child.started_at > STABLE_AFTER:
                    child.restarts = 0
                continue
            if child.next_start == 0.0:
                code = child.proc.returncode if child.proc is not None else None
                delay = restart_delay(child.restarts)
                say(f"{child.name} exited (code {code}); restarting in {delay:.0f}s", "bold red")
                child.next_start = now + delay
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()


if __name__ == "__main__":
    sys.exit(main())
