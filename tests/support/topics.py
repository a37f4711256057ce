"""Reading a topic back in tests (a real broker): every partition from the start, no group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer


async def read_records(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    keep: Callable[[Any], bool] = lambda record: True,
    timeout: float = 30.0,
    grace: float = 0.5,
) -> list[Any]:
    """The records of ``topic`` that ``keep`` accepts, in each partition's order: once
    ``expected`` of them are in (or ``timeout`` has passed), whatever else arrives within
    ``grace`` too, so that a duplicate or an extra record shows."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=50,
    )  # fmt: skip
    await consumer.start()
    try:
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(r for r in records if keep(r))
        await asyncio.sleep(grace)
        for records in (await consumer.getmany(timeout_ms=200)).values():
            found.extend(r for r in records if keep(r))
        return found
    finally:
        await consumer.stop()
