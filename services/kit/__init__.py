"""The service kit: the shared runtime of every Zhongtai service (no business rules here).

Public face (import from the submodules for the rest):
"""

from services.kit.audit import AuditChain, AuditEntry, AuditReport, audit_tables
from services.kit.auth import Principal, TokenVerifier, current_principal, mint_token
from services.kit.clients import CallerSettings, ServiceClient
from services.kit.commands import Commands
from services.kit.config import ServiceSettings, load_settings
from services.kit.consumer import InboxConsumer, Projection
from services.kit.db import UnitOfWork, create_engine
from services.kit.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    ZhongtaiError,
)
from services.kit.events import ReceivedEvent, build_record, parse_record, source_of
from services.kit.faults import is_infrastructure_error
from services.kit.grpc_server import GrpcServer, client_channel
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import run_until_signalled
from services.kit.logging import configure_logging, get_logger
from services.kit.outbox import OutboxRelay, add_event
from services.kit.replay import reapply
from services.kit.service import Capability, Runtime, Wiring
from services.kit.telemetry import setup_telemetry

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AuditChain",
    "AuditEntry",
    "AuditReport",
    "CallerSettings",
    "Capability",
    "Commands",
    "FailedPrecondition",
    "FieldViolation",
    "GrpcServer",
    "InboxConsumer",
    "InvalidArgument",
    "NotFound",
    "OutboxRelay",
    "PermissionDenied",
    "Principal",
    "Projection",
    "ReceivedEvent",
    "Runtime",
    "ServiceClient",
    "ServiceSettings",
    "TokenVerifier",
    "Unauthenticated",
    "Unavailable",
    "UnitOfWork",
    "Wiring",
    "ZhongtaiError",
    "add_event",
    "audit_tables",
    "build_record",
    "client_channel",
    "configure_logging",
    "create_engine",
    "current_principal",
    "ensure_topics",
    "get_logger",
    "is_infrastructure_error",
    "load_settings",
    "make_producer",
    "mint_token",
    "parse_record",
    "reapply",
    "run_until_signalled",
    "setup_telemetry",
    "source_of",
]
