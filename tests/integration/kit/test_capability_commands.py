"""The kit's commands of a declared capability, as `zhongtai` runs them (real processes, Kafka, SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.kit.db import create_engine
from tests.support.procs import REPO, base_env

from .test_outbox_relay import read_topic, wait_unpublished, write_events

CLI = [sys.executable, "-m", "services.cli"]


def _migrate(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, "migrate", service], cwd=REPO, env=env, capture_output=True, timeout=120)


def _relay(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, "relay", "--service", service], cwd=REPO, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


@pytest.mark.parametrize("service", ["customer", "product"])
async def test_migrate_then_a_standalone_relay_publishes_and_stops_on_sigterm(  # type: ignore[no-untyped-def]
    service: str, kafka_server, sqlite_url, tmp_path
) -> None:
    env = base_env(ZT_DATABASE_URL=sqlite_url, ZT_KAFKA_BOOTSTRAP_SERVERS=kafka_server.bootstrap_servers)
    migrated = _migrate(service, env)
    assert migrated.returncode == 0, migrated.stderr.decode()[-2000:]

    engine = create_engine(sqlite_url)
    aggregate = f"relay-{service}-{uuid.uuid4().hex[:8]}"
    relay = _relay(service, env, tmp_path / "relay.log")
    try:
        await write_events(engine, aggregate, range(1, 4))
        assert await wait_unpublished(engine, 0, timeout=60) == 0
        assert len(await read_topic(kafka_server.bootstrap_servers, {aggregate}, 3)) == 3
        os.killpg(relay.pid, signal.SIGTERM)
        assert relay.wait(30) == 0  # a clean stop, not a kill
    finally:
        if relay.poll() is None:
            os.killpg(relay.pid, signal.SIGKILL)
        await engine.dispose()
    assert "-relay" in (tmp_path / "relay.log").read_text()  # it logs as the relay process
