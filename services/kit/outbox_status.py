"""``<package>.OperationsService.GetOutboxStatus`` for every capability that writes an outbox.

The customer and product services (and any later capability with a transactional outbox) answer
the same contract-declared RPC (``bank.api.v1.GetOutboxStatusRequest`` → ``OutboxStatus``,
scope ``ops:admin``, ADR 0039) from their own ``outbox`` table: rows not yet published, the
oldest one's write time, and the newest publish time still on record. The kit serves it as a
generic handler under the capability's own ``OperationsService`` name, so each package only
declares the RPC with its HTTP rule; the handler goes through the kit's call wrapper like any
other (token, scopes, validation, tracing).

Two index-backed statements on PostgreSQL (the partial ``ix_outbox_unpublished`` index and
``ix_outbox_pending``), whatever the backlog.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.db import read_sessionmaker
from services.kit.outbox import OutboxRow

_OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]
METHOD = "GetOutboxStatus"


def _messages() -> Any:
    # Generated code is loaded at first use (the kit imports no contract module at import time).
    return importlib.import_module("bank.api.v1.outbox_pb2")


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))  # SQLite returns naive UTC
    return ts


async def outbox_status(engine: AsyncEngine, capability: str) -> Any:
    """The ``OutboxStatus`` of the ``outbox`` table behind ``engine``."""
    c = _OUTBOX.c
    pending = select(func.count(), func.min(c.created_at)).where(c.published_at.is_(None))
    async with read_sessionmaker(engine)() as session:
        backlog, oldest = (await session.execute(pending)).one()
        last = (await session.execute(select(func.max(c.published_at)))).scalar_one()
    status = _messages().OutboxStatus(capability=capability, backlog=int(backlog))
    if (ts := _timestamp(oldest)) is not None:
        status.oldest_pending_time.CopyFrom(ts)
    if (ts := _timestamp(last)) is not None:
        status.last_publish_time.CopyFrom(ts)
    return status


def outbox_status_handler(engine: AsyncEngine, service: str, capability: str) -> grpc.GenericRpcHandler:
    """The generic handler of ``<service>/GetOutboxStatus`` (``service``: the capability's
    ``OperationsService`` full name), for its ``Wiring.register``."""
    messages = _messages()

    async def get_outbox_status(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await outbox_status(engine, capability)

    handler = grpc.unary_unary_rpc_method_handler(
        get_outbox_status,
        request_deserializer=messages.GetOutboxStatusRequest.FromString,
        response_serializer=messages.OutboxStatus.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(service, {METHOD: handler})
