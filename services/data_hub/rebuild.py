"""Rebuild every view from offset 0 into the idle table set, then swap it in.

    python -m services.data_hub.rebuild [--no-swap]

1. Truncate the idle set (``dh_b_*`` when ``dh_a_*`` serves, and vice versa).
2. Replay bank.customer.v1, bank.product.v1 and bank.subscription.v1 (with the environment's
   ``ZT_KAFKA_TOPIC_PREFIX``) from offset 0 with manual
   partition assignment (no consumer group: the live group's offsets are untouched) up to the
   end offsets seen at the start, through the live consumer's projection port: the same fold
   (services/data_hub/fold.py) and the same adapter (services/data_hub/facts.py). Duplicates and
   stale versions are no-ops by the projection's own version checks.
3. Render every view; if segments were ever refreshed, recompute RFM at that same time.
4. Swap, in one transaction holding the ``dh_state`` row lock (live batches wait on it): catch
   up with what arrived meanwhile, continue view versions above the old ones (so consumers of
   bank.customer-view.v1 never see a version go back), flip ``active``. The live process keeps
   serving the old set until this commit and the new one right after; its worker republishes
   the views.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.data_hub import store
from services.data_hub.domain import Rules
from services.data_hub.facts import apply_patches
from services.data_hub.fold import BadEvent, Patches
from services.data_hub.main import MIGRATIONS, DataHubSettings
from services.kit import (
    PoisonEvent,
    ReceivedEvent,
    UnitOfWork,
    configure_logging,
    create_engine,
    get_logger,
    load_settings,
    parse_record,
    upgrade,
)

log = get_logger("zhongtai.data_hub.rebuild")


@dataclass
class RebuildReport:
    source: str = ""
    target: str = ""
    events: int = 0
    poison: int = 0
    catch_up_events: int = 0
    customers: int = 0
    differing_views: list[str] = field(default_factory=list)
    swapped: bool = False
    seconds: float = 0.0


async def partitions_of(bootstrap: str, topics: tuple[str, ...]) -> list[TopicPartition]:
    """Every partition of the topics that exist (the consumer's own metadata is lazy)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t.get("error_code", 0) == 0
        for p in t.get("partitions", [])
    )


class _Replayer:
    def __init__(self, bootstrap: str, batch_size: int, topics: tuple[str, ...]) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._batch = batch_size
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="zhongtai-data-hub-rebuild",
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            max_poll_records=batch_size,
        )
        self.partitions: list[TopicPartition] = []
        # The live consumer's inbox rules, in memory: an event id seen before is a duplicate, an
        # event not newer than its aggregate's last applied version is stale.
        self._versions: dict[tuple[str, str], int] = {}
        self._ids: set[str] = set()

    def _is_new(self, event: ReceivedEvent) -> bool:
        if event.id in self._ids:
            return False
        self._ids.add(event.id)
        if not event.aggregate_type or not event.version:
            return True
        key = (event.aggregate_type, event.aggregate_id)
        if self._versions.get(key, 0) >= event.version:
            return False
        self._versions[key] = event.version
        return True

    async def start(self) -> None:
        await self.consumer.start()
        self.partitions = await partitions_of(self._bootstrap, self._topics)
        self.consumer.assign(self.partitions)
        if self.partitions:
            await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def replay_until(
        self, engine: AsyncEngine, t: store.Tables, report: RebuildReport, session: AsyncSession | None = None
    ) -> int:
        """Apply everything up to the current end offsets; in ``session`` if given, else a UoW per batch."""
        if not self.partitions:
            return 0
        end = await self.consumer.end_offsets(self.partitions)
        applied = 0
        while True:
            pending = [tp for tp in self.partitions if await self.consumer.position(tp) < end[tp]]
            if not pending:
                return applied
            fetched = await self.consumer.getmany(*pending, timeout_ms=500, max_records=self._batch)
            patches = Patches()
            for records in fetched.values():
                for r in records:
                    try:
                        event = parse_record(
                            list(r.headers or ()),
                            r.value,
                            key=r.key,
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                        )
                        if self._is_new(event):
                            patches.add(event)  # (event by event: a bad one is counted and skipped)
                    except (PoisonEvent, BadEvent):
                        report.poison += 1  # the live consumer dead-lettered it too
                    applied += 1
            if not patches:
                continue
            if session is not None:
                await apply_patches(session, t, patches)
            else:
                async with UnitOfWork(engine) as uow:
                    await apply_patches(uow.session, t, patches)
                    await uow.commit()


async def _render_all(engine: AsyncEngine, t: store.Tables, rules: Rules) -> None:
    while True:
        async with UnitOfWork(engine) as uow:
            rendered, _ = await store.materialize(uow.session, t, rules, limit=1000)
            await uow.commit()
        if not rendered:
            return


async def _swap(
    engine: AsyncEngine, replayer: _Replayer, target: store.Tables, source: store.Tables, report: RebuildReport
) -> None:
    """Catch the rebuilt set up with what arrived meanwhile and make it the live one, in one
    transaction holding the state row's lock (a concurrent rebuild loses and raises)."""
    async with UnitOfWork(engine) as uow:
        locked = await store.read_state(uow.session, lock="update")
        if locked["active"] != report.source:
            raise RuntimeError("another rebuild swapped meanwhile")
        report.catch_up_events = await replayer.replay_until(engine, target, report, session=uow.session)
        await store.carry_versions(uow.session, target, source)
        await uow.session.execute(
            update(store.state)
            .where(store.state.c.id == 1)
            .values(active=report.target, rebuild_us=store.now_us(), rebuilds=store.state.c.rebuilds + 1)
        )
        await uow.commit()
    report.swapped = True


async def rebuild(settings: DataHubSettings, *, swap: bool = True, batch_size: int = 2000) -> RebuildReport:
    started = time.perf_counter()
    rules = settings.rules
    report = RebuildReport()
    engine = create_engine(settings.database_url)
    replayer = _Replayer(settings.kafka_bootstrap_servers, batch_size, settings.source_topics)
    try:
        await upgrade(engine, MIGRATIONS)
        async with UnitOfWork(engine) as uow:
            st = await store.read_state(uow.session)
            report.source, report.target = st["active"], store.other(st["active"])
            target = store.SETS[report.target]
            await store.truncate(uow.session, target)
            await uow.commit()
        source = store.SETS[report.source]
        log.info("rebuild started", source=report.source, target=report.target)
        await replayer.start()
        report.events = await replayer.replay_until(engine, target, report)
        async with UnitOfWork(engine) as uow:  # a catalogue replayed after its customers re-renders them all
            await uow.session.execute(update(target.customers).values(dirty=True))
            await uow.commit()
        await _render_all(engine, target, rules)
        if st["refresh_us"]:
            async with UnitOfWork(engine) as uow:
                await store.refresh_rfm(uow.session, target, rules, st["refresh_us"])
                await uow.commit()
            await _render_all(engine, target, rules)
        async with UnitOfWork(engine) as uow:
            live, rebuilt = await store.all_docs(uow.session, source), await store.all_docs(uow.session, target)
        report.customers = len(rebuilt)
        report.differing_views = sorted(k for k in live.keys() | rebuilt.keys() if live.get(k) != rebuilt.get(k))
        if swap:
            await _swap(engine, replayer, target, source, report)
            await _render_all(engine, target, rules)
        log.info(
            "rebuild finished",
            events=report.events,
            customers=report.customers,
            swapped=report.swapped,
            differing=len(report.differing_views),
        )
    finally:
        await replayer.stop()
        await engine.dispose()
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.data_hub.rebuild", description="rebuild every view")
    parser.add_argument("--no-swap", action="store_true", help="replay and compare only; keep the live set serving")
    args = parser.parse_args(argv)
    settings = load_settings(DataHubSettings)
    configure_logging("data_hub-rebuild", settings.log_level)
    report = asyncio.run(rebuild(settings, swap=not args.no_swap))
    print(
        f"rebuilt set {report.target} from offset 0: {report.events} events (+{report.catch_up_events} caught up), "
        f"{report.customers} views, {len(report.differing_views)} differ from set {report.source}; "
        f"{'swapped in' if report.swapped else 'not swapped'} in {report.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
