"""A capability built only from the kit (the platform issue's proof of shape): a notes board.

One write RPC (AddNote) through the command port, one event (NoteAdded) through the outbox, one
projection (notes per board) consuming it. Everything else — process, migrations, relay, health,
auth, validation, replay, shutdown — is the kit's. ``bank.kittest.v1`` is compiled by the test.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import (
    Capability,
    Commands,
    InboxConsumer,
    ProducerLifecycle,
    ReceivedEvent,
    Runtime,
    ServiceSettings,
    Wiring,
    add_event,
    make_producer,
    source_of,
)

TOPIC = "bank.kittest-note.v1"


class NotesSettings(ServiceSettings):
    service_name: str = "notes"


class NotesBase(DeclarativeBase):
    pass


class Board(NotesBase):
    __tablename__ = "boards"
    board_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class BoardCount(NotesBase):
    """The projection's read model: notes per board."""

    __tablename__ = "board_counts"
    board_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notes: Mapped[int] = mapped_column(Integer)


class NotesApi:
    def __init__(self, pb: Any, commands: Commands) -> None:
        self._pb, self._commands = pb, commands

    async def AddNote(self, request: Any, context: Any) -> Any:
        pb = self._pb

        async def decide(session: AsyncSession) -> Any:
            board = await session.get(Board, request.board_id, with_for_update=True)
            if board is None:
                board = Board(board_id=request.board_id, version=0)
                session.add(board)
            board.version += 1
            await session.flush()  # the version bump before the outbox row
            note = pb.Note(note_id=uuid.uuid4().hex, board_id=request.board_id, text=request.text,
                           version=board.version)  # fmt: skip
            add_event(session, pb.NoteAdded(board_id=board.board_id, note=note, version=board.version),
                      source=source_of("notes"), aggregate_type="board", aggregate_id=board.board_id,
                      version=board.version)  # fmt: skip
            return note

        return await self._commands.run("AddNote", request, pb.Note, decide)


class NotesPerBoard:
    """The kit's Projection: fold (pure) counts per board; apply adds them to the read model."""

    def fold(self, events: Sequence[ReceivedEvent]) -> Counter[str]:
        return Counter(event.message.board_id for event in events)

    async def apply(self, session: AsyncSession, folded: Counter[str]) -> None:
        rows = await session.scalars(select(BoardCount).where(BoardCount.board_id.in_(folded)).with_for_update())
        counts = {row.board_id: row for row in rows}
        for board_id, added in folded.items():
            if board_id in counts:
                counts[board_id].notes += added
            else:
                session.add(BoardCount(board_id=board_id, notes=added))

    def committed(self, result: None) -> None:
        return None


def capability(pb: Any, pb_grpc: Any) -> Capability[NotesSettings]:
    async def wire(runtime: Runtime[NotesSettings]) -> Wiring:
        s = runtime.settings
        producer = make_producer(s.kafka_bootstrap_servers, client_id=s.kafka_client_id)
        consumer = InboxConsumer(
            engine=runtime.engine, bootstrap_servers=s.kafka_bootstrap_servers, group_id=f"{s.kafka_topic_prefix}notes",
            topics=[s.kafka_topic_prefix + TOPIC], projection=NotesPerBoard(), dlq_producer=producer,
            on_state=runtime.set_ready,
        )  # fmt: skip
        servicer = NotesApi(pb, Commands(runtime.engine, after_commit=runtime.after_commit))
        return Wiring(register=lambda server: pb_grpc.add_NoteServiceServicer_to_server(servicer, server),
                      components=[ProducerLifecycle(producer), consumer])  # fmt: skip

    return Capability(name="notes", settings=NotesSettings, migrations=Path(__file__).parent / "migrations",
                      grpc_services=["bank.kittest.v1.NoteService"], wire=wire)  # fmt: skip
