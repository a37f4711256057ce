"""`make run`'s launcher (devtools/run.py over devtools/stack.py) on real processes.

- A port that only has TIME_WAIT sockets (a closed connection of a previous run) is free, and a
  real server binds it at once; a port with a live listener is held, and the holder is named.
- A local Kafka killed with SIGKILL is restarted by the launcher's supervisor (`supervise`) on
  the same port with the same data, promptly, although the dead broker's port is in TIME_WAIT.
- A launcher's Kafka stopped like Ctrl-C does is started again at once by the next launcher
  start, on the same port (9092 in `make run`), with its data.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from devtools import run, stack
from tests.integration.test_stack import _consume_all

pytestmark = pytest.mark.integration

#: The gateway's server (uvicorn) on a given port, with a trivial ASGI app.
_UVICORN = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _leave_time_wait(port: int | None = None) -> int:
    """Serve one connection on `port` (or a free one) and close it server-side first, as a
    server does on shutdown: the server's end stays in TIME_WAIT for 60 s. Returns the port."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port or 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
        client.settimeout(5)
        assert client.recv(1) == b""
        client.close()
    return port


def _states(port: int) -> set[str]:
    return {state for state, _ in stack.port_sockets(port)}


def test_time_wait_port_is_free_and_a_live_listener_is_named() -> None:
    port = _leave_time_wait()
    assert _states(port) == {"TIME_WAIT"}
    # What the old check did (a plain bind): refused for the minute TIME_WAIT lasts.
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))

    assert stack.port_is_free(port)
    assert stack.port_listeners(port) == []
    assert stack.port_holder(port) == "no listener (only 1 TIME_WAIT sockets)"
    assert run.held_ports({"gateway": port}) == {}

    # The next run's server binds it at once, and is then named as the holder.
    server = subprocess.Popen([sys.executable, "-c", _UVICORN, str(port)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "LISTEN" not in _states(port):
            assert server.poll() is None, "uvicorn could not bind the TIME_WAIT port"
            assert time.monotonic() < deadline, "uvicorn did not listen within 30 s"
            time.sleep(0.1)
        assert not stack.port_is_free(port)
        assert stack.port_listeners(port) == [(server.pid, f"{sys.executable} -c {_UVICORN} {port}")]
        holder = run.held_ports({"gateway": port})["gateway"]
        assert holder.startswith(f"pid {server.pid} ({sys.executable} -c")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# --------------------------------------------------------------------------------------------
# Kafka under the launcher
# --------------------------------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _values(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    return await _consume_all(bootstrap, topic, expected)


def _connected_client(bootstrap: str) -> socket.socket:
    """A client connection the broker has accepted (like a service's producer)."""
    host, _, port = bootstrap.rpartition(":")
    client = socket.create_connection((host, int(port)))
    time.sleep(0.5)
    return client


def _close_on_eof(client: socket.socket) -> None:
    """The broker died: its end was closed first; the client sees EOF and closes (-> TIME_WAIT)."""
    client.settimeout(10)
    assert client.recv(1) == b""
    client.close()


@pytest.fixture(scope="module")
def launcher_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[stack.KafkaServer]]:
    """`run.start_kafka()` as `make run` calls it (persistent data dir, fixed port), on a free
    port and a temp var/ instead of 9092 and the repo's var/. A list: tests may replace it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "VAR", tmp_path_factory.mktemp("var"))
        mp.setattr(run, "DEV_KAFKA_PORT", stack.free_port())
        mp.delenv("ZT_KAFKA_BOOTSTRAP_SERVERS", raising=False)
        kafka, _ = run.start_kafka()
        assert kafka is not None
        servers = [kafka]
        try:
            yield servers
        finally:
            for server in servers:
                server.stop()


def test_supervisor_restarts_a_sigkilled_broker_promptly(
    launcher_kafka: list[stack.KafkaServer], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = launcher_kafka[-1]
    bootstrap, port, first_start = kafka.bootstrap_servers, run.DEV_KAFKA_PORT, kafka.timings["start"]
    topic = f"launcher.kill.{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(_produce(bootstrap, topic, b"acknowledged-before-kill"), 60))
    client = _connected_client(bootstrap)
    old_pid = kafka.pid
    assert old_pid is not None
    stopping = threading.Event()
    seen: dict[str, Any] = {}

    def kill_and_watch() -> None:
        try:
            killed_at = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            _close_on_eof(client)
            seen["states"] = _states(port)
            while kafka.pid in (None, old_pid) and time.monotonic() - killed_at < 10:
                time.sleep(0.05)
            seen["launched"] = time.monotonic() - killed_at
            stack.wait_for_kafka(bootstrap, timeout=90)
            seen["answered"] = time.monotonic() - killed_at
        except BaseException as exc:
            seen["error"] = exc
        finally:
            time.sleep(0.6)  # one more supervision tick: it logs that the broker answers again
            stopping.set()

    watcher = threading.Thread(target=kill_and_watch, daemon=True)
    watcher.start()
    # In the main thread, as in `make run`: the JVM it restarts has PR_SET_PDEATHSIG, which
    # fires when the thread that started it ends (not the process).
    run.supervise([], kafka, stopping)
    watcher.join()
    out = capsys.readouterr().out
    if "error" in seen:
        raise AssertionError(f"{seen['error']!r}\n{out}")
    launched, answered = seen["launched"], seen["answered"]
    with capsys.disabled():
        print(
            f"\nSIGKILL -> new JVM launched {launched:.1f}s -> metadata answered {answered:.1f}s "
            f"(first start of this broker: {first_start:.1f}s)"
        )
    assert "TIME_WAIT" in seen["states"]  # what kept the old launcher waiting ~60 s
    assert kafka.bootstrap_servers == bootstrap
    assert launched < 5, out  # 1 s back-off + a 0.5 s supervision tick, not TIME_WAIT's 60 s
    # Generous: JVM start-up alone takes 6-10 s on an idle 2-core box, 20-35 s when shared.
    assert answered < 45, out
    # One log line per attempt, not silent retries.
    assert "[run] Kafka exited (code -9); restart attempt 1 in 1s" in out
    assert f"[run] Kafka restart attempt 1: JVM pid {kafka.pid} launched on {bootstrap}" in out
    assert f"[run] Kafka answers at {bootstrap} again" in out
    # Nothing acknowledged is lost, and the broker stays up after the supervisor returns.
    assert asyncio.run(asyncio.wait_for(_values(bootstrap, topic, 1), 60)) == [b"acknowledged-before-kill"]


def test_next_launcher_start_reuses_the_port_at_once(
    launcher_kafka: list[stack.KafkaServer], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = launcher_kafka[-1]
    bootstrap, port = kafka.bootstrap_servers, run.DEV_KAFKA_PORT
    topic = f"launcher.again.{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(_produce(bootstrap, topic, b"from-the-first-run"), 60))
    client = _connected_client(bootstrap)
    kafka.stop()  # what Ctrl-C / SIGTERM does at the end of `make run`
    _close_on_eof(client)
    assert "TIME_WAIT" in _states(port)
    assert stack.port_is_free(port)

    t0 = time.monotonic()
    again, bootstrap_again = run.start_kafka()
    assert again is not None
    launcher_kafka.append(again)
    with capsys.disabled():
        print(f"\nsecond launcher start: Kafka answered {time.monotonic() - t0:.1f}s after the first one stopped")
    assert bootstrap_again == bootstrap  # 9092 in `make run`: no fallback to another port
    assert Path(again.data_dir) == Path(kafka.data_dir)
    assert asyncio.run(asyncio.wait_for(_values(bootstrap, topic, 1), 60)) == [b"from-the-first-run"]
