"""The service kit: the shared runtime of every Zhongtai service (no business rules here).

Public face (import from the submodules for the rest):
"""

from services.kit.auth import Principal, TokenVerifier, current_principal, mint_token
from services.kit.clients import CallerSettings, ServiceClient
from services.kit.config import ServiceSettings, load_settings
from services.kit.consumer import InboxConsumer
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
from services.kit.events import ReceivedEvent, build_record, parse_record
from services.kit.grpc_server import GrpcServer, client_channel
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import run_until_signalled
from services.kit.logging import configure_logging, get_logger
from services.kit.outbox import OutboxRelay, add_event
from services.kit.telemetry import setup_telemetry

__all__ = [
    "Aborted",
    "AlreadyExists",
    "CallerSettings",
    "FailedPrecondition",
    "FieldViolation",
    "GrpcServer",
    "InboxConsumer",
    "InvalidArgument",
    "NotFound",
    "OutboxRelay",
    "PermissionDenied",
    "Principal",
    "ReceivedEvent",
    "ServiceClient",
    "ServiceSettings",
    "TokenVerifier",
    "Unauthenticated",
    "Unavailable",
    "UnitOfWork",
    "ZhongtaiError",
    "add_event",
    "build_record",
    "client_channel",
    "configure_logging",
    "create_engine",
    "current_principal",
    "ensure_topics",
    "get_logger",
    "load_settings",
    "make_producer",
    "mint_token",
    "parse_record",
    "run_until_signalled",
    "setup_telemetry",
]
