"""gRPC servicer of bank.datahub.v1.OperationsService: the pipeline's status and the dead-letter
browser (list, get, replay, quarantine), for operators holding ``ops:admin``.

Every call that shows or changes a dead letter appends to the hub's hash-chained operations
audit log (``ops_audit_log``, the kit's :class:`~services.kit.AuditChain`) in the transaction
that answers it, like the customer service's unmasked PII reads: no audit row, no answer.
A replay applies the stored event through the kit's inbox (:func:`services.kit.reapply`) in the
same transaction as the dead letter's new state and the audit row: exactly once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.api.v1 import outbox_pb2
from bank.datahub.v1 import datahub_pb2_grpc, operations_pb2, operations_pb2_grpc
from services.data_hub import dead_letters as dl
from services.data_hub import schema
from services.data_hub.codecs import now_us, us_ts
from services.data_hub.config import DataHubSettings
from services.data_hub.dead_letters import DeadLetterIndex
from services.data_hub.projector import HubProjection
from services.kit import (
    AuditChain,
    AuditEntry,
    BlindIndex,
    FailedPrecondition,
    InboxConsumer,
    NotFound,
    PoisonEvent,
    UnitOfWork,
    audit_tables,
    current_principal,
    current_trace_id,
    get_logger,
    invalid,
    is_infrastructure_error,
    parse_record,
    reapply,
    scrub_text,
    sessionmaker,
)

log = get_logger("zhongtai.data_hub")
OPERATIONS_NAME = operations_pb2.DESCRIPTOR.services_by_name["OperationsService"].full_name
AUDIT = audit_tables(schema.metadata, "ops_audit_log")
_PURPOSE = "ops-audit-chain"
DEFAULT_PAGE_SIZE = 50


def ops_audit_chain(keyring: BlindIndex) -> AuditChain:
    """The chain of operators' dead-letter reads and decisions (``ops_audit_log``)."""
    return AuditChain(keyring, AUDIT, purpose=_PURPOSE)


@dataclass(frozen=True)
class PipelineProbe:
    """What the running consumer knows about itself (read on each GetPipelineStatus)."""

    group: str
    consumer: InboxConsumer | None = None


def _entries(method: str, rows: list[Any], what: Callable[[Any], str]) -> list[AuditEntry]:
    principal = current_principal.get()
    client = principal.client_id if principal is not None else ""
    at, trace_id = datetime.now(UTC), current_trace_id()
    return [AuditEntry(client, row.subject, (what(row),), method, trace_id, at) for row in rows]


def wire_operations(
    settings: DataHubSettings, engine: AsyncEngine, projection: HubProjection, consumer: InboxConsumer
) -> tuple[OperationsApi, DeadLetterIndex]:
    """The servicer and the DLQ topic's index, for the capability's wiring (main.py)."""
    probe = PipelineProbe(settings.group_id, consumer)
    api = OperationsApi(engine=engine, keyring=settings.audit_keyring(), projection=projection, probe=probe)
    index = DeadLetterIndex(
        engine, settings.kafka_bootstrap_servers, settings.dlq_topic, client_id=settings.kafka_client_id,
        stall_after_s=settings.datahub_stall_after_s,
    )  # fmt: skip
    return api, index


def register_services(server: grpc.aio.Server, *, views: Any, operations: OperationsApi) -> None:
    """The hub's two gRPC services on its server."""
    datahub_pb2_grpc.add_CustomerViewServiceServicer_to_server(views, server)
    operations_pb2_grpc.add_OperationsServiceServicer_to_server(operations, server)


class OperationsApi(operations_pb2_grpc.OperationsServiceServicer):
    def __init__(self, *, engine: AsyncEngine, keyring: BlindIndex, projection: HubProjection, probe: PipelineProbe):
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self._audit = ops_audit_chain(keyring)
        self._projection = projection
        self._probe = probe
        # AIP-155: a retried replay/quarantine with the same request_id gets the first answer.
        self._answers: OrderedDict[str, operations_pb2.DeadLetter] = OrderedDict()

    async def GetPipelineStatus(self, request: Any, context: Any) -> operations_pb2.PipelineStatus:
        async with self._sessions() as session:
            counts = await dl.counts(session)
            tables = await schema.active_tables(session)
            c = tables.customers.c
            backlog = (await session.execute(select(func.count()).where(c.pending_publish.is_(True)))).scalar_one()
            customers = (await session.execute(select(func.count()).where(c.doc.is_not(None)))).scalar_one()
        consumer = self._probe.consumer
        return operations_pb2.PipelineStatus(
            consumer_group=self._probe.group,
            consuming=consumer.consuming if consumer is not None else False,
            state_reason=consumer.state_reason if consumer is not None else "not consuming in this process",
            consumer_lag=consumer.lag if consumer is not None else 0,
            events_applied=consumer.applied_total if consumer is not None else 0,
            view_publish_backlog=int(backlog),
            dead_letters_dead=counts.get(dl.DEAD, 0),
            dead_letters_replayed=counts.get(dl.REPLAYED, 0),
            dead_letters_quarantined=counts.get(dl.QUARANTINED, 0),
            customers=int(customers),
        )

    async def GetOutboxStatus(self, request: Any, context: Any) -> outbox_pb2.OutboxStatus:
        """The views waiting to be published (the customers table is the hub's outbox)."""
        async with self._sessions() as session:
            c = (await schema.active_tables(session)).customers.c
            query = select(func.count(), func.min(c.update_us)).where(c.pending_publish.is_(True))
            backlog, oldest_us = (await session.execute(query)).one()
        status = outbox_pb2.OutboxStatus(capability="data_hub", backlog=int(backlog))
        if (ts := us_ts(oldest_us)) is not None:
            status.oldest_pending_time.CopyFrom(ts)
        return status

    async def ListDeadLetters(self, request: Any, context: Any) -> operations_pb2.ListDeadLettersResponse:
        after = None
        if request.page_token:
            try:
                after = dl.decode_token(request.page_token)
            except ValueError as exc:
                raise invalid("page_token", "not a page token returned by this method") from exc
        async with UnitOfWork(self._engine) as uow:
            rows, token, total = await dl.page(
                uow.session, request.state, request.page_size or DEFAULT_PAGE_SIZE, after
            )
            await self._audit.append(uow.session, _entries("ListDeadLetters", rows, _seen))
            await uow.commit()
        return operations_pb2.ListDeadLettersResponse(
            dead_letters=[dl.to_message(r) for r in rows], next_page_token=token, total_size=total
        )

    async def GetDeadLetter(self, request: Any, context: Any) -> operations_pb2.DeadLetter:
        async with UnitOfWork(self._engine) as uow:
            row = await _found(uow.session, request.dead_letter_id)
            await self._audit.append(uow.session, _entries("GetDeadLetter", [row], _seen))
            await uow.commit()
        return dl.to_message(row)

    async def ReplayDeadLetter(self, request: Any, context: Any) -> operations_pb2.DeadLetter:
        return await self._once(request.request_id, lambda: self._replay(request.dead_letter_id))

    async def QuarantineDeadLetter(self, request: Any, context: Any) -> operations_pb2.DeadLetter:
        return await self._once(request.request_id, lambda: self._quarantine(request.dead_letter_id, request.reason))

    async def _once(self, request_id: str, run: Callable[[], Any]) -> operations_pb2.DeadLetter:
        if request_id and request_id in self._answers:
            return self._answers[request_id]
        answer: operations_pb2.DeadLetter = await run()
        if request_id:
            self._answers[request_id] = answer
            while len(self._answers) > 256:
                self._answers.popitem(last=False)
        return answer

    async def _replay(self, dead_letter_id: str) -> operations_pb2.DeadLetter:
        try:
            async with UnitOfWork(self._engine) as uow:
                row = await _found(uow.session, dead_letter_id, lock=True)
                if row.state == dl.REPLAYED:
                    await self._audit.append(uow.session, _entries("ReplayDeadLetter", [row], _seen))
                    await uow.commit()
                    return dl.to_message(row)  # replayed before: exactly once, answered as it is
                if row.state == dl.QUARANTINED:
                    raise _refused(dead_letter_id, "quarantined", "a quarantined dead letter is never replayed")
                outcome, applied = await reapply(uow.session, _event(row), projection=self._projection)
                row = await _resolve(uow.session, dead_letter_id, dl.REPLAYED, replay_outcome=outcome)
                await self._audit.append(uow.session, _entries("ReplayDeadLetter", [row], _done))
                await uow.commit()
        except FailedPrecondition:
            raise
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise
            await self._failed_replay(dead_letter_id, exc)
            raise _refused(dead_letter_id, "still_failing", f"the event still fails: {type(exc).__name__}") from None
        if applied is not None:
            self._projection.committed(applied)
        log.info("dead letter replayed", dead_letter_id=dead_letter_id, outcome=outcome)
        return dl.to_message(row)

    async def _failed_replay(self, dead_letter_id: str, exc: Exception) -> None:
        """The attempt is audited even though nothing changed (its own transaction)."""
        log.warning("dead letter replay failed", dead_letter_id=dead_letter_id, error=type(exc).__name__)
        async with UnitOfWork(self._engine) as uow:
            row = await _found(uow.session, dead_letter_id)
            entries = _entries("ReplayDeadLetter", [row], lambda r: f"dead_letter:{r.dead_letter_id}:FAILED")
            await self._audit.append(uow.session, entries)
            await uow.commit()

    async def _quarantine(self, dead_letter_id: str, reason: str) -> operations_pb2.DeadLetter:
        async with UnitOfWork(self._engine) as uow:
            row = await _found(uow.session, dead_letter_id, lock=True)
            if row.state == dl.REPLAYED:
                raise _refused(dead_letter_id, "replayed", "a replayed dead letter cannot be quarantined")
            if row.state == dl.DEAD:
                row = await _resolve(uow.session, dead_letter_id, dl.QUARANTINED, quarantine_reason=reason)
            await self._audit.append(uow.session, _entries("QuarantineDeadLetter", [row], _done))
            await uow.commit()
        return dl.to_message(row)


def _seen(row: Any) -> str:
    return f"dead_letter:{row.dead_letter_id}"


def _done(row: Any) -> str:
    return f"dead_letter:{row.dead_letter_id}:{dl.DeadLetter.State.Name(row.state).removeprefix('STATE_')}"


def _refused(dead_letter_id: str, state: str, message: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"dead letter {dead_letter_id}: {message}",
        reason=f"DEAD_LETTER_{state.upper()}",
        metadata={"dead_letter_id": dead_letter_id},
    )


async def _found(session: Any, dead_letter_id: str, *, lock: bool = False) -> Any:
    row = await dl.get(session, dead_letter_id, lock=lock)
    if row is None:
        raise NotFound(
            f"dead letter {dead_letter_id} not found",
            reason="DEAD_LETTER_NOT_FOUND",
            metadata={"dead_letter_id": dead_letter_id},
        )
    return row


def _event(row: Any) -> Any:
    """The stored record as the consumer decoded it; a record that never decodes cannot be replayed."""
    try:
        return parse_record(dl.original_headers(row), row.payload, topic=row.topic, partition=row.partition,
                            offset=row.offset)  # fmt: skip
    except PoisonEvent as exc:
        why = f"the record can never be decoded ({scrub_text(str(exc))}); quarantine it"
        raise _refused(row.dead_letter_id, "undecodable", why) from None


async def _resolve(session: Any, dead_letter_id: str, state: int, **values: str) -> Any:
    principal = current_principal.get()
    who = principal.client_id if principal is not None else ""
    await session.execute(
        update(dl.dead_letters)
        .where(dl.dead_letters.c.dead_letter_id == dead_letter_id)
        .values(state=state, resolve_us=now_us(), resolved_by=who, **values)
    )
    return await dl.get(session, dead_letter_id)
