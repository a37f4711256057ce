"""devtools/stack.py: pure configuration logic (nothing is started here)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from devtools import stack


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    text = stack.kafka_server_properties(port=19092, controller_port=19093, log_dir=tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert "controller.quorum.bootstrap.servers" not in props  # static quorum only, not both
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_cluster_id_is_a_kafka_uuid() -> None:
    for _ in range(500):  # 1 in 64 random ids would start with "-" if not prevented
        cid = stack.kafka_cluster_id()
        assert len(cid) == 22 and "=" not in cid and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_database_url_rewriting() -> None:
    base = "postgresql+asyncpg://app:s3cret@db.example:6543/whatever"
    assert stack._with_database(base, "orders") == "postgresql+asyncpg://app:s3cret@db.example:6543/orders"
    assert stack._asyncpg_dsn(base) == "postgresql://app:s3cret@db.example:6543/whatever"
    plain = "postgresql://postgres@127.0.0.1:5432"
    assert stack.ExternalPostgres(plain).admin_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@pytest.mark.parametrize("bad", ['x"; DROP DATABASE postgres; --', "Upper", "1abc", "", "a" * 64])
def test_database_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        stack._quote_ident(bad)


def test_env_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(stack.ENV_TEST_KAFKA, "broker.example:9092")
    monkeypatch.setenv(stack.ENV_TEST_POSTGRES, "postgresql://u@pg.example/x")
    kafka = stack.kafka_for_tests()
    assert isinstance(kafka, stack.ExternalKafka)
    assert kafka.bootstrap_servers == "broker.example:9092"
    pg = stack.postgres_for_tests()
    assert isinstance(pg, stack.ExternalPostgres)
    assert pg.admin_url.endswith("@pg.example/x")


def test_free_port_is_bindable() -> None:
    port = stack.free_port()
    assert 1024 < port < 65536
    assert stack.port_is_free(port)


def test_missing_postgres_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    with pytest.raises(stack.StackError, match="apt-get install -y postgresql"):
        stack.postgres_bindir()


def test_missing_java_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    monkeypatch.setattr(stack, "CACHE_ROOT", tmp_path)
    with pytest.raises(stack.StackError, match="apt-get install -y openjdk-17-jre-headless maven"):
        stack.kafka_libs("0.0.0-none")
