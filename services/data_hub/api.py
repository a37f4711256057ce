"""gRPC servicer of bank.datahub.v1.CustomerViewService: request -> store/use case -> response.

Auth, scopes and protovalidate run in the kit's per-call wrapper before these handlers.
"""

from __future__ import annotations

import asyncio
import binascii
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from bank.datahub.v1 import datahub_pb2, datahub_pb2_grpc
from services.data_hub import event_log, store
from services.data_hub.domain import Rules
from services.data_hub.projector import ViewWorker
from services.data_hub.segments import churn_watchlist, decode_churn_token, segment_stage_counts
from services.kit import (
    NotFound,
    Reader,
    Unavailable,
    UnitOfWork,
    ZhongtaiError,
    cancel_and_wait,
    get_logger,
    invalid,
    read_sessionmaker,
    sessionmaker,
)

DEFAULT_PAGE_SIZE = 50
EVENTS_PAGE_SIZE = 20
T = TypeVar("T")
#: When a channel app should ask again for a view that is being built (RetryInfo → Retry-After).
VIEW_RETRY_AFTER_S = 1.0

log = get_logger("zhongtai.data_hub")


class CustomerCheck(Protocol):
    """The system of record's answer to "does this customer exist?" (:class:`KnownCustomers`)."""

    async def exists(self, customer_id: str, *, time_remaining: float | None = None) -> bool: ...


async def view_miss(
    customer_id: str, customers: CustomerCheck, *, time_remaining: float | None = None
) -> ZhongtaiError:
    """What "no view for this id" means, asked of the customer service (ADR 0008).

    - the customer exists: its events have not reached the hub yet (new customer, broker or
      consumer down, replay) → UNAVAILABLE ``VIEW_NOT_BUILT`` with RetryInfo: retry, it will come;
    - the customer service does not know it → NOT_FOUND ``CUSTOMER_NOT_FOUND``;
    - the customer service cannot say (down, too slow, no service token) → UNAVAILABLE with its
      reason (``CUSTOMER_SERVICE_UNAVAILABLE``, ``SERVICE_TOKEN_UNAVAILABLE``): the hub cannot
      tell the two apart and says so, it never guesses NOT_FOUND.
    """
    meta = {"customer_id": customer_id}
    try:
        known = await customers.exists(customer_id, time_remaining=time_remaining)
    except Unavailable as exc:
        return Unavailable(
            f"no view for customer {customer_id}, and the customer service cannot say whether the "
            "customer exists; retry later",
            reason=exc.reason,
            metadata={**exc.metadata, **meta},
        )
    if known:
        return Unavailable(
            f"the view of customer {customer_id} is being built; retry in {VIEW_RETRY_AFTER_S:g} s",
            reason="VIEW_NOT_BUILT",
            metadata=meta,
            retry_delay_s=VIEW_RETRY_AFTER_S,
        )
    return NotFound(f"customer {customer_id} not found", reason="CUSTOMER_NOT_FOUND", metadata=meta)


async def refresh_segments(
    engine: AsyncEngine, rules: Rules, worker: ViewWorker | None, as_of_us: int
) -> datahub_pb2.RefreshSegmentsResponse:
    """RFM quintiles in SQL, then re-render every view; changed views are republished."""
    async with UnitOfWork(engine) as uow:
        tables = await store.active_tables(uow.session, lock="update")
        scored = await store.refresh_rfm(uow.session, tables, rules, as_of_us)
        await uow.commit()
    changed = 0
    while True:
        async with UnitOfWork(engine) as uow:
            rendered, ch = await store.materialize(uow.session, tables, rules, limit=1000)
            await uow.commit()
        changed += ch
        if rendered == 0:
            break
    if worker is not None:
        worker.wake()
    async with sessionmaker(engine)() as session:
        segments, _, _ = await store.segment_counts(session, tables)
    reply = datahub_pb2.RefreshSegmentsResponse(customers_scored=scored, views_changed=changed)
    reply.refresh_time.FromMicroseconds(as_of_us)
    for value in _segment_values():
        reply.segments.add(segment=value, customer_count=segments.get(value, 0))  # type: ignore[arg-type]
    return reply


def _segment_values() -> list[int]:
    return [v.number for v in datahub_pb2.Segment.DESCRIPTOR.values if v.number != 0]


def _stage_values() -> list[int]:
    return [v.number for v in datahub_pb2.LifecycleStage.DESCRIPTOR.values if v.number != 0]


def _after(token: str, decode: Callable[[str], T]) -> T | None:
    """The decoded page token (None without one); INVALID_ARGUMENT naming it when not ours."""
    if not token:
        return None
    try:
        return decode(token)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid("page_token", "not a page token returned by this method") from exc


class CustomerViewApi(datahub_pb2_grpc.CustomerViewServiceServicer):
    def __init__(
        self, *, engine: AsyncEngine, rules: Rules, customers: CustomerCheck, worker: ViewWorker | None = None
    ) -> None:
        self._engine = engine
        self._customers = customers
        self._sessions = read_sessionmaker(engine)  # (reads only: no BEGIN/ROLLBACK, ADR 0026)
        self._reader = Reader(engine)  # (one statement on the pool's driver connection, ADR 0029)
        self._rules = rules
        self._worker = worker
        # AIP-155: a retried RefreshSegments with the same request_id gets the first answer.
        self._refreshes: OrderedDict[str, datahub_pb2.RefreshSegmentsResponse] = OrderedDict()

    async def GetCustomerView(
        self, request: datahub_pb2.GetCustomerViewRequest, context: Any
    ) -> datahub_pb2.CustomerView:
        view = await store.get_view(self._reader, request.customer_id)
        if view is None:
            raise await view_miss(request.customer_id, self._customers, time_remaining=context.time_remaining())
        return view

    async def ListSegments(
        self, request: datahub_pb2.ListSegmentsRequest, context: Any
    ) -> datahub_pb2.ListSegmentsResponse:
        async with self._sessions() as session:
            st = await store.read_state(session)
            segments, stages, total = await store.segment_counts(session, store.SETS[st["active"]])
            cells = await segment_stage_counts(session, store.SETS[st["active"]])
        reply = datahub_pb2.ListSegmentsResponse(total_customers=total)
        for value in _segment_values():
            reply.segments.add(segment=value, customer_count=segments.get(value, 0))  # type: ignore[arg-type]
        for value in _stage_values():
            reply.lifecycle_stages.add(lifecycle_stage=value, customer_count=stages.get(value, 0))  # type: ignore[arg-type]
        for segment, stage, count in cells:
            reply.segment_stages.add(segment=segment, lifecycle_stage=stage, customer_count=count)  # type: ignore[arg-type]
        if (ts := store.us_ts(st["refresh_us"])) is not None:
            reply.refresh_time.CopyFrom(ts)
        return reply

    async def ListSegmentMembers(
        self, request: datahub_pb2.ListSegmentMembersRequest, context: Any
    ) -> datahub_pb2.ListSegmentMembersResponse:
        after = _after(request.page_token, store.decode_token) or ""
        size = request.page_size or DEFAULT_PAGE_SIZE
        async with self._sessions() as session:
            tables = await store.active_tables(session)
            views, token, total = await store.segment_members(session, tables, request.segment, size, after)
        return datahub_pb2.ListSegmentMembersResponse(customer_views=views, next_page_token=token, total_size=total)

    async def ListChurnRisks(
        self, request: datahub_pb2.ListChurnRisksRequest, context: Any
    ) -> datahub_pb2.ListChurnRisksResponse:
        after = _after(request.page_token, decode_churn_token)
        size = request.page_size or DEFAULT_PAGE_SIZE
        async with self._sessions() as session:
            tables = await store.active_tables(session)
            views, token, total = await churn_watchlist(session, tables, request.min_score, size, after)
        return datahub_pb2.ListChurnRisksResponse(customer_views=views, next_page_token=token, total_size=total)

    async def ListCustomerEvents(
        self, request: datahub_pb2.ListCustomerEventsRequest, context: Any
    ) -> datahub_pb2.ListCustomerEventsResponse:
        after = _after(request.page_token, event_log.decode_token)
        async with self._sessions() as session:
            return await event_log.page(session, request.customer_id, request.page_size or EVENTS_PAGE_SIZE, after)

    async def RefreshSegments(
        self, request: datahub_pb2.RefreshSegmentsRequest, context: Any
    ) -> datahub_pb2.RefreshSegmentsResponse:
        if request.request_id and request.request_id in self._refreshes:
            return self._refreshes[request.request_id]
        reply = await refresh_segments(self._engine, self._rules, self._worker, store.now_us())
        if request.request_id:
            self._refreshes[request.request_id] = reply
            while len(self._refreshes) > 256:
                self._refreshes.popitem(last=False)
        return reply


class PeriodicRefresh:
    """RefreshSegments on a timer (off unless ZT_DATAHUB_REFRESH_INTERVAL_S > 0)."""

    def __init__(self, interval_s: float, engine: AsyncEngine, rules: Rules, worker: ViewWorker) -> None:
        self._interval, self._engine, self._rules, self._worker = interval_s, engine, rules, worker
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="data-hub-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await refresh_segments(self._engine, self._rules, self._worker, store.now_us())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("periodic refresh failed", error=type(exc).__name__)
