"""A capability built only from the kit runs on real Kafka and PostgreSQL: a write through the
command port (replayed for a repeated request_id), its event through the outbox and the relay,
and a projection consuming it; started and stopped by the kit's bootstrap."""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
import pytest
from grpc_tools import protoc
from sqlalchemy import select

from devtools.stack import free_port
from services.cli import DEV_SECRET
from services.kit.auth import mint_token
from services.kit.config import load_settings
from services.kit.db import create_engine
from services.kit.kafka import ensure_topics
from services.kit.telemetry import install_in_memory
from tests.integration.customer.test_privacy import restored_logging

from .capability import TOPIC, BoardCount, NotesSettings, capability

REPO = Path(__file__).resolve().parents[4]
META = (("authorization", f"Bearer {mint_token(DEV_SECRET, ['customers:write'], client_id='notes-test')}"),)


@pytest.fixture(scope="module")
def notes_pb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    import bank

    out = tmp_path_factory.mktemp("gen")
    includes = [REPO / "tests" / "protos", REPO / "proto", REPO / "build" / "proto-deps"]
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = [f"-I{path}" for path in [*includes, wkt]]
    code = protoc.main(
        ["protoc", *args, f"--python_out={out}", f"--grpc_python_out={out}", "bank/kittest/v1/notes.proto"]
    )
    assert code == 0, "protoc failed on tests/protos/bank/kittest/v1/notes.proto"
    bank.__path__.append(str(out / "bank"))
    try:
        yield (
            importlib.import_module("bank.kittest.v1.notes_pb2"),
            importlib.import_module("bank.kittest.v1.notes_pb2_grpc"),
        )
    finally:
        bank.__path__.remove(str(out / "bank"))
        for name in ("bank.kittest.v1.notes_pb2", "bank.kittest.v1.notes_pb2_grpc"):
            sys.modules.pop(name, None)


async def test_a_capability_declared_on_the_kit_writes_publishes_and_projects(  # type: ignore[no-untyped-def]
    notes_pb, kafka_server, pg_url
) -> None:
    pb, pb_grpc = notes_pb
    install_in_memory("notes-test")  # (before serve(): the process keeps the tests' providers)
    prefix, port = f"n{uuid.uuid4().hex[:8]}.", free_port()
    await ensure_topics(kafka_server.bootstrap_servers, {TOPIC: {}}, prefix=prefix)
    settings = load_settings(
        NotesSettings, environment="test", database_url=pg_url, grpc_port=port, kafka_topic_prefix=prefix,
        kafka_bootstrap_servers=kafka_server.bootstrap_servers, auth_hs256_secret=DEV_SECRET,
    )  # fmt: skip
    stop = asyncio.Event()
    engine = create_engine(pg_url)
    with restored_logging():
        serving = asyncio.create_task(capability(pb, pb_grpc).serve(settings, stop_event=stop))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.NoteServiceStub(channel)
                first = pb.AddNoteRequest(board_id="a", text="hello", request_id=uuid.uuid4().hex)
                for _ in range(100):  # until the in-process server answers
                    try:
                        written = await stub.AddNote(first, metadata=META, timeout=2)
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
                assert await stub.AddNote(first, metadata=META, timeout=2) == written  # replayed, not applied again
                for board, text in [("a", "two"), ("b", "one"), ("a", "three")]:
                    await stub.AddNote(pb.AddNoteRequest(board_id=board, text=text), metadata=META, timeout=2)
                with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                    await stub.AddNote(pb.AddNoteRequest(board_id="a"), timeout=2)
                assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

            async def counts() -> dict[str, int]:
                async with engine.connect() as conn:
                    return {b: n for b, n in await conn.execute(select(BoardCount.board_id, BoardCount.notes))}

            for _ in range(150):
                if await counts() == {"a": 3, "b": 1}:
                    break
                await asyncio.sleep(0.2)
            assert await counts() == {"a": 3, "b": 1}  # each write's event projected exactly once
        finally:
            stop.set()
            await asyncio.wait_for(serving, 30)
            await engine.dispose()
