"""A consumer group that stops moving is said out loud and restarted (ADR 0046).

A Kafka consumer can stop without an error: a member whose coordinator keeps rejoining, a loop
waiting on a call that never returns, partitions that no member holds after sessions expired
while the broker was out of reach. Heartbeats say nothing about that — the member is "alive" —
and the chaos suite saw the hubs' groups stop like this for five minutes after a network cut.

So each member watches its whole group from outside, as an operator would: for every partition
of its topics, the group's committed offset against the partition's end (from the broker, with
clients of its own, so a wedged consumer cannot hide it). A partition with records the group has
not committed, whose committed offset has not moved for ``stall_after_s`` of successful probes,
is stalled. :func:`watch_progress` then raises :class:`GroupStalled`; the consumer's supervisor
says so (log, ``consumer.stalls``, readiness) and starts a new Kafka consumer, which joins the
group afresh. Every member watches the group, so a stuck member restarts even when its partners
notice first. Time is counted only across probes that answered: while the broker is out of reach
nothing is counted (a restart would not help).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from opentelemetry import metrics

from services.kit.logging import get_logger

log = get_logger("zhongtai.consumer")
_stalls = metrics.get_meter("zhongtai.consumer").create_counter(
    "consumer.stalls",
    unit="{stall}",
    description="consumers restarted because their group left records uncommitted without moving",
)


class GroupStalled(Exception):
    """The group has not moved on some partitions with records waiting (see the module's doc)."""

    def __init__(self, group: str, behind: Mapping[TopicPartition, int], stalled_s: float) -> None:
        parts = ", ".join(f"{tp.topic}[{tp.partition}]: {n}" for tp, n in sorted(behind.items()))
        super().__init__(f"group {group} has not moved for {stalled_s:.0f} s with records waiting ({parts})")
        self.group, self.behind, self.stalled_s = group, dict(behind), stalled_s


def group_position(
    committed: Mapping[TopicPartition, int | None], starts: Mapping[TopicPartition, int], tp: TopicPartition
) -> int:
    """Where the group reads ``tp`` next: its committed offset, or, never committed, the earliest
    record still there."""
    return max(committed.get(tp) or 0, starts.get(tp, 0))


def group_reached(
    committed: Mapping[TopicPartition, int | None],
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
) -> bool:
    """Whether the group has committed every record before ``ends`` (per partition)."""
    return all(group_position(committed, starts, tp) >= end for tp, end in ends.items())


@dataclass
class _Seen:
    committed: int
    since: float | None  # when the probes first saw it there (None: not since the last failed probe)


class StallTracker:
    """Which partitions have had records waiting and an unmoved committed offset for ``stall_after_s``.

    Pure: it is told each probe's figures (or that the probe failed) and the time."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._seen: dict[TopicPartition, _Seen] = {}

    def observe(
        self,
        committed: Mapping[TopicPartition, int | None],
        ends: Mapping[TopicPartition, int],
        starts: Mapping[TopicPartition, int],
        now: float,
    ) -> dict[TopicPartition, int]:
        """The stalled partitions, with the records waiting on each."""
        stalled: dict[TopicPartition, int] = {}
        for tp, end in ends.items():
            at = group_position(committed, starts, tp)
            if at >= end:
                self._seen.pop(tp, None)
                continue
            seen = self._seen.get(tp)
            if seen is None or seen.committed != at:
                self._seen[tp] = _Seen(at, now)
            elif seen.since is None:
                seen.since = now
            elif now - seen.since >= self.stall_after_s:
                stalled[tp] = end - at
        return stalled

    def unseen(self) -> None:
        """A probe failed: time is counted again from the next one that answers."""
        for seen in self._seen.values():
            seen.since = None

    def longest(self, now: float) -> float:
        return max((now - s.since for s in self._seen.values() if s.since is not None), default=0.0)


class GroupProbe:
    """The group's committed offsets and its partitions' bounds, read with clients of its own."""

    def __init__(self, bootstrap_servers: str, group_id: str, topics: Iterable[str], *, timeout_s: float) -> None:
        self._bootstrap, self.group, self._topics = bootstrap_servers, group_id, tuple(topics)
        self._timeout_s = timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None  # group-less: reads the partitions' bounds

    async def read(
        self,
    ) -> tuple[dict[TopicPartition, int | None], dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(committed, ends, starts) of every partition of the topics; raises on any failure or timeout."""
        async with asyncio.timeout(self._timeout_s):
            admin, offsets = await self._clients()
            described = await admin.describe_topics(list(self._topics))
            parts = [
                TopicPartition(topic["topic"], p["partition"])
                for topic in described
                if not topic.get("error_code")
                for p in topic.get("partitions", ())
            ]
            if not parts:
                return {}, {}, {}
            ends = await offsets.end_offsets(parts)
            starts = await offsets.beginning_offsets(parts)
            group = await admin.list_consumer_group_offsets(self.group, partitions=parts)
        committed = {tp: (meta.offset if meta.offset >= 0 else None) for tp, meta in group.items()}
        return committed, ends, starts

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        # (kept before they start: a start that fails is closed by ``close`` like the rest)
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=f"{self.group}-watch")
            await self._admin.start()
        if self._offsets is None:
            self._offsets = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, client_id=f"{self.group}-watch")
            await self._offsets.start()
        return self._admin, self._offsets

    async def close(self) -> None:
        admin, offsets, self._admin, self._offsets = self._admin, self._offsets, None, None
        stops = ([admin.close()] if admin is not None else []) + ([offsets.stop()] if offsets is not None else [])
        for stop in stops:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stop, self._timeout_s)


async def watch_progress(
    probe: GroupProbe, *, stall_after_s: float, waiting: Callable[[], bool] = lambda: False
) -> NoReturn:
    """Probe the group every third of ``stall_after_s``; raise :class:`GroupStalled` once it has
    stood still that long with records waiting. ``waiting()`` True (the member knowingly waits
    out a database or broker failure, and says so) holds the count back."""
    tracker = StallTracker(stall_after_s)
    interval = max(1.0, stall_after_s / 3)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                committed, ends, starts = await probe.read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker out of reach: nothing to count (and nothing a restart mends)
                log.debug("group progress probe failed", group=probe.group, error=type(exc).__name__)
                tracker.unseen()
                await probe.close()
                continue
            now = time.monotonic()
            stalled = tracker.observe(committed, ends, starts, now)
            if waiting():
                tracker.unseen()
            elif stalled:
                _stalls.add(1, {"group": probe.group})
                raise GroupStalled(probe.group, stalled, tracker.longest(now))
    finally:
        await probe.close()


async def run_watched(loop: Awaitable[None], watch: Awaitable[NoReturn], *, cancel_timeout_s: float = 5.0) -> None:
    """Run a consumer's loop with its watch beside it: returns or raises as the loop does; when the
    watch raises (a stall), the loop is cancelled — given ``cancel_timeout_s``, cancelled again if
    it waits on something that never returns — and the watch's error is raised."""
    run: asyncio.Task[Any] = asyncio.ensure_future(loop)
    watcher: asyncio.Task[Any] = asyncio.ensure_future(watch)
    try:
        done, _ = await asyncio.wait({run, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watcher, run):
            for _ in range(3):
                if task.done():
                    break
                task.cancel()
                await asyncio.wait({task}, timeout=cancel_timeout_s)
            if not task.done():
                log.error("consumer task did not stop when cancelled; left behind", task=task.get_name())
    if run in done:
        run.result()  # the loop's own end or error
        return
    watcher.result()  # a watch only ever ends by raising: GroupStalled


async def run_group_watched(
    loop: Coroutine[Any, Any, None],
    *,
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    stall_after_s: float,
    waiting: Callable[[], bool] = lambda: False,
) -> None:
    """Run a consumer group member's loop (its join included) with the group's progress on
    ``topics`` watched beside it, as :func:`run_watched` (a stall raises :class:`GroupStalled`);
    ``stall_after_s`` 0 runs it unwatched. The watch reads through clients of its own
    (:class:`GroupProbe`), each answer awaited at most a third of ``stall_after_s`` (≤ 10 s)."""
    if not stall_after_s:
        await loop
        return
    probe = GroupProbe(bootstrap, group, topics, timeout_s=min(10.0, stall_after_s / 3))
    await run_watched(loop, watch_progress(probe, stall_after_s=stall_after_s, waiting=waiting))
