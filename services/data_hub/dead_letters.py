"""The dead-letter browser's storage: the hub's DLQ topic (``<group>.dlq``) indexed in its database.

:class:`DeadLetterIndex` consumes the DLQ topic (its own consumer group, ``<group>.dlq-index``)
and inserts one ``dh_dead_letters`` row per record — id ``<dlq partition>-<dlq offset>``, the
record's payload and headers as they were — then commits the offsets (insert-if-absent: a
re-delivered record changes nothing). The rows carry the operator's decisions: DEAD, then
REPLAYED (with the outcome) or QUARANTINED (with the reason). Payloads are never shown; error
texts and header values are scrubbed of PII-shaped strings before they leave the hub
(events carry no clear PII, but an exception message might quote anything).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bank.datahub.v1 import operations_pb2
from services.data_hub.codecs import now_us, us_ts
from services.data_hub.schema import metadata
from services.kit import (
    UnitOfWork,
    cancel_and_wait,
    ensure_topics,
    get_logger,
    is_postgres,
    make_consumer,
    scrub_text,
)

log = get_logger("zhongtai.data_hub")
DeadLetter = operations_pb2.DeadLetter
DEAD, REPLAYED, QUARANTINED = DeadLetter.STATE_DEAD, DeadLetter.STATE_REPLAYED, DeadLetter.STATE_QUARANTINED
#: Header values shown as they are: trace context is hex and may hold digit runs that look like PII.
_UNSCRUBBED = frozenset({"traceparent", "tracestate"})

dead_letters = Table(
    "dh_dead_letters",
    metadata,
    Column("dead_letter_id", String(32), primary_key=True),
    Column("state", Integer, nullable=False),
    Column("consumer_group", String(249), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("headers", LargeBinary, nullable=False),  # JSON [[key, base64 value], ...], as received
    Column("payload", LargeBinary, nullable=True),
    Column("dead_us", BigInteger, nullable=False),
    Column("resolve_us", BigInteger, nullable=True),
    Column("resolved_by", String(200), nullable=False, default=""),
    Column("replay_outcome", String(16), nullable=False, default=""),
    Column("quarantine_reason", String(500), nullable=False, default=""),
    Index("ix_dh_dead_letters_state", "state", "dead_us"),
    Index("ix_dh_dead_letters_order", "dead_us", "dead_letter_id"),
)


def row_of(record: ConsumerRecord[Any, Any], now: int) -> dict[str, Any]:
    """A DLQ record as a ``dh_dead_letters`` row (state DEAD)."""
    headers: list[tuple[str, bytes]] = list(record.headers or ())
    text = {k: v.decode("utf-8", "replace") for k, v in headers}
    attempts = text.get("dlq_attempts", "0")
    return {
        "dead_letter_id": f"{record.partition}-{record.offset}",
        "state": DEAD,
        "consumer_group": text.get("dlq_group", "")[:249],
        "topic": text.get("dlq_topic", "")[:249],
        "partition": int(text.get("dlq_partition", "0") or 0),
        "offset": int(text.get("dlq_offset", "0") or 0),
        "event_id": text.get("ce_id", "")[:64],
        "event_type": text.get("ce_type", "")[:200],
        "subject": text.get("ce_subject", "")[:64],
        "error": text.get("dlq_error", ""),
        "attempts": int(attempts) if attempts.isdigit() else 0,
        "headers": orjson.dumps([[k, base64.b64encode(v).decode()] for k, v in headers]),
        "payload": record.value,
        "dead_us": now,
        "resolved_by": "",
        "replay_outcome": "",
        "quarantine_reason": "",
    }


def original_headers(row: Any) -> list[tuple[str, bytes]]:
    """The record's headers as it was on its source topic (without the ``dlq_*`` ones)."""
    pairs = orjson.loads(row.headers)
    return [(k, base64.b64decode(v)) for k, v in pairs if not k.startswith("dlq_")]


def to_message(row: Any) -> operations_pb2.DeadLetter:
    shown = {}
    for key, value in orjson.loads(row.headers):
        text = base64.b64decode(value).decode("utf-8", "replace")
        shown[key] = text if key in _UNSCRUBBED else scrub_text(text)
    msg = DeadLetter(
        dead_letter_id=row.dead_letter_id, state=row.state, consumer_group=row.consumer_group, topic=row.topic,
        partition=row.partition, offset=row.offset, event_id=row.event_id, event_type=row.event_type,
        subject=row.subject, error=scrub_text(row.error), attempts=row.attempts, headers=shown,
        resolved_by=row.resolved_by, replay_outcome=row.replay_outcome,
        quarantine_reason=scrub_text(row.quarantine_reason), payload_size=len(row.payload or b""),
    )  # fmt: skip
    if (ts := us_ts(row.dead_us)) is not None:
        msg.dead_time.CopyFrom(ts)
    if (ts := us_ts(row.resolve_us)) is not None:
        msg.resolve_time.CopyFrom(ts)
    return msg


async def get(session: AsyncSession, dead_letter_id: str, *, lock: bool = False) -> Any:
    query = select(dead_letters).where(dead_letters.c.dead_letter_id == dead_letter_id)
    return (await session.execute(query.with_for_update() if lock else query)).first()


def encode_token(dead_us: int, dead_letter_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(["d1", dead_us, dead_letter_id])).decode()


def decode_token(token: str) -> tuple[int, str]:
    """(dead_us, id) of the last row of the previous page; ValueError when not one of ours."""
    try:
        tag, dead_us, last_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a page token") from exc
    if tag != "d1" or not isinstance(dead_us, int) or not isinstance(last_id, str):
        raise ValueError("not a page token")
    return dead_us, last_id


async def page(
    session: AsyncSession, state: int, size: int, after: tuple[int, str] | None
) -> tuple[list[Any], str, int]:
    """Newest first: (rows, next page token or "", total matching)."""
    c = dead_letters.c
    cond = c.state == state if state else true()
    query = select(dead_letters).where(cond)
    if after is not None:
        query = query.where(or_(c.dead_us < after[0], and_(c.dead_us == after[0], c.dead_letter_id < after[1])))
    rows = (await session.execute(query.order_by(c.dead_us.desc(), c.dead_letter_id.desc()).limit(size + 1))).all()
    total = int((await session.execute(select(func.count()).select_from(dead_letters).where(cond))).scalar_one())
    more = len(rows) > size
    rows = rows[:size]
    token = encode_token(rows[-1].dead_us, rows[-1].dead_letter_id) if more and rows else ""
    return list(rows), token, total


async def counts(session: AsyncSession) -> dict[int, int]:
    query = select(dead_letters.c.state, func.count()).group_by(dead_letters.c.state)
    return {int(k): int(v) for k, v in (await session.execute(query)).tuples().all()}


class DeadLetterIndex:
    """Indexes the DLQ topic into ``dh_dead_letters``; ``start()``/``stop()``."""

    def __init__(self, engine: AsyncEngine, bootstrap_servers: str, dlq_topic: str, *, client_id: str) -> None:
        self._engine, self._bootstrap, self.topic, self._client_id = engine, bootstrap_servers, dlq_topic, client_id
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_topics(self._bootstrap, {self.topic: {}})
        self._task = asyncio.create_task(self._supervise(), name="dead-letter-index")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _supervise(self) -> None:
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker or database failure: start again from the committed offsets
                log.warning("dead-letter index failed; restarting", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        consumer = make_consumer(
            self._bootstrap, self.topic, group_id=f"{self.topic}-index", client_id=self._client_id, max_poll_records=200
        )
        await consumer.start()
        try:
            while True:
                polled = await consumer.getmany(timeout_ms=1000, max_records=200)
                records = [r for part in polled.values() for r in part]
                if records:
                    await self._store(records)
                    await consumer.commit()
        finally:
            await consumer.stop()

    async def _store(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        now = now_us()
        async with UnitOfWork(self._engine) as uow:
            insert = postgresql.insert if is_postgres(uow.session) else sqlite.insert
            stmt = insert(dead_letters).on_conflict_do_nothing(index_elements=["dead_letter_id"])
            await uow.session.execute(stmt, [row_of(r, now) for r in records])  # (few rows: no bulk path)
            await uow.commit()
        log.info("dead letters indexed", count=len(records), topic=self.topic)
