"""A topic indexed into the hub's database by its own consumer group (the dead letters).

:class:`TopicIndex` consumes its topics from the earliest offset under its own group, hands each
poll's records to :meth:`TopicIndex.store` (one transaction, insert-if-absent, so a re-delivered
record changes nothing) and commits the offsets after it; a broker or database failure restarts
it from the committed offsets. Subclasses say what a record becomes.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from aiokafka.errors import CommitFailedError
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import (
    SESSION_TIMEOUT_MS,
    UnitOfWork,
    cancel_and_wait,
    commit_unless_rebalancing,
    ensure_topics,
    get_logger,
    is_postgres,
    make_consumer,
    run_group_watched,
)

log = get_logger("zhongtai.data_hub")


#: The index consumer's session (make_consumer's): a commit not through by then gives up (the
#: consumer restarts).
_SESSION_S = SESSION_TIMEOUT_MS / 1000


class TopicIndex:
    """Indexes ``topics`` into ``table`` (rows from :meth:`rows`); ``start()``/``stop()``."""

    table: Table
    key: str  # the table's primary key column (the conflict target)
    #: How long the broker may hold the index's fetch to gather records (make_consumer's linger):
    #: how far behind its topics the listing may be, and how often an idle index fetches.
    linger_ms = 250
    name = "topic-index"
    creates_topics = True  # False: the topics are the kit's (created before the capability is wired)
    #: Records per poll (and per transaction). (The customer event feed, which indexed every
    #: customer event with bigger polls in one JSON parameter, is written by the hub's consumer
    #: since ADR 0062.)
    max_records = 500

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        group_id: str,
        client_id: str,
        stall_after_s: float = 30.0,
    ) -> None:
        self._engine, self._bootstrap, self.topics = engine, bootstrap_servers, tuple(topics)
        self._group_id, self._client_id = group_id, client_id
        # A group that leaves records uncommitted without moving this long restarts its consumer
        # (services/kit/progress.py, ADR 0046); 0 = not watched.
        self._stall_after_s = stall_after_s
        self._task: asyncio.Task[None] | None = None

    def rows(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def start(self) -> None:
        if self.creates_topics:
            await ensure_topics(self._bootstrap, {topic: {} for topic in self.topics})
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _supervise(self) -> None:
        while True:
            try:
                await self._run_watched()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker or database failure, a stall: start again from the committed offsets
                log.warning("topic index failed; restarting", index=self.name, error=type(exc).__name__,
                            detail=str(exc)[:300])  # fmt: skip
                await asyncio.sleep(1.0)

    async def _run_watched(self) -> None:
        await run_group_watched(
            self._run(), bootstrap=self._bootstrap, group=self._group_id, topics=self.topics,
            stall_after_s=self._stall_after_s,
        )  # fmt: skip

    async def _run(self) -> None:
        # An index for listings may lag a little: the broker holds its fetch up to ``linger_ms``
        # (linger, as the hub's consumer), so live traffic is indexed a fraction of a second at a
        # time — one statement and one offset commit — instead of a fetch, a transaction and an
        # offset commit every few records, and an idle index fetches a few times a second, not 50
        # (ADR 0048; the dead letters 1 s: ADR 0059).
        consumer = make_consumer(
            self._bootstrap, *self.topics, group_id=self._group_id, client_id=self._client_id,
            max_poll_records=self.max_records, linger_ms=self.linger_ms,
        )  # fmt: skip
        try:  # (stopped even when cancelled while starting: no unclosed consumer at shutdown)
            await consumer.start()
            while True:
                polled = await consumer.getmany(timeout_ms=1000, max_records=self.max_records)
                records = [r for part in polled.values() for r in part]
                if records:
                    await self.store(records)
                    if not await committed(consumer):
                        log.info("offsets not committed: the group is rebalancing; records will be re-delivered",
                                 index=self.name)  # fmt: skip
        finally:
            await consumer.stop()

    async def store(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        rows = self.rows(records)
        if not rows:
            return
        async with UnitOfWork(self._engine) as uow:
            insert = postgresql.insert if is_postgres(uow.session) else sqlite.insert
            stmt = insert(self.table).on_conflict_do_nothing(index_elements=[self.key])
            await uow.session.execute(stmt, rows)
            await uow.commit()
        log.debug("records indexed", index=self.name, count=len(rows))


async def committed(consumer: Any) -> bool:
    """Commit an index's consumed offsets; False if the group is rebalancing or rebalanced
    meanwhile (after a network partition, say): the records come again from the last commit,
    stored insert-if-absent, no-ops — not a failure to restart the index for. A commit not through
    within a session raises ``TimeoutError`` (the index restarts)."""
    try:
        return await commit_unless_rebalancing(consumer, give_up_after_s=_SESSION_S)
    except CommitFailedError:
        return False


def encode_page_token(tag: str, us: int, last_id: str) -> str:
    """The page token of a newest-first index page: (time, id) of its last row, tagged."""
    return base64.urlsafe_b64encode(orjson.dumps([tag, us, last_id])).decode()


def decode_page_token(tag: str, token: str) -> tuple[int, str]:
    """(time, id) of the last row of the previous page; ValueError when not one of ``tag``'s."""
    try:
        got, us, last_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a page token") from exc
    if got != tag or not isinstance(us, int) or not isinstance(last_id, str):
        raise ValueError("not a page token")
    return us, last_id
