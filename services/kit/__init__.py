"""The service kit: the shared runtime of every Zhongtai service (no business rules here).

This is the kit's public face: everything a service author needs, and services import the kit
only from here (``from services.kit import ...``). The submodules stay importable for the kit's
own tests and for the gateway's edge plumbing, but they are not a service's API.

- **Building a capability:** ``Capability``, ``Wiring``, ``Runtime``, ``ServiceSettings``,
  ``CallerSettings``, ``load_settings``, ``GrpcServer``, ``run_until_signalled``.
- **Writing:** ``Commands`` (the command port), ``UnitOfWork``, ``sessionmaker``, ``add_event``, ``stage_insert``,
  ``Tx`` (``Commands.run_core``'s transaction of Core statements, ADR 0042), ``source_of``, the
  errors (``InvalidArgument``, ``NotFound``, ... and ``invalid``).
- **Reading:** ``Reader`` (one Core statement at the driver's cost, ADR 0029), ``read_sessionmaker``
  (PostgreSQL reads without BEGIN/ROLLBACK round trips).
- **Consuming:** ``InboxConsumer``, ``Projection``, ``ReceivedEvent``, ``PoisonEvent``, the topics.
- **Migrations:** the kit tables' versioned steps (``create_outbox_v1``, ...), ``run_env``, ``upgrade``.
- **Data protection:** ``FieldCipher``, ``BlindIndex``, ``mask_message``, ``scrub_text``.
- **Money:** ``Amount``, ``to_money``, ``MoneyError``.

Pure modules (a capability's ``domain``, the hub's ``fold``) must not load I/O, which this face
does: they take the kit's value types from the modules defining them (``services.kit.money``,
``services.kit.events``). ``make lint`` (import-linter) holds both rules.
"""

from services.kit.audit import AuditChain, AuditEntry, AuditReport, audit_tables, current_trace_id
from services.kit.auth import ALL_SCOPES, Principal, TokenVerifier, current_principal, mint_token
from services.kit.bulk import (
    COPY_MIN_ROWS,
    as_dicts,
    bulk_insert,
    bulk_insert_statement,
    bulk_update,
    bulk_update_statement,
    bulk_upsert,
    bulk_writes,
    copy_insert,
    defer_write,
)
from services.kit.clients import CallerSettings, ServiceClient
from services.kit.commands import Commands, Sealer, canonical_request, first_or_replay
from services.kit.config import ServiceSettings, load_settings
from services.kit.consumer import InboxConsumer, Projection
from services.kit.crypto import BlindIndex, FieldCipher, parse_key, parse_old_keys
from services.kit.db import (
    BigIntPK,
    UnitOfWork,
    create_engine,
    dialect_of,
    in_list,
    is_postgres,
    read_sessionmaker,
    sessionmaker,
)
from services.kit.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    Unauthenticated,
    Unavailable,
    ZhongtaiError,
    invalid,
)
from services.kit.etags import etag_of
from services.kit.events import (
    TOPIC_CUSTOMER,
    TOPIC_PRODUCT,
    TOPIC_SUBSCRIPTION,
    EncodedPayload,
    PoisonEvent,
    ReceivedEvent,
    build_record,
    parse_record,
    source_of,
)
from services.kit.faults import is_infrastructure_error
from services.kit.fetch import fetch
from services.kit.grpc_server import GrpcServer, client_channel
from services.kit.kafka import (
    SESSION_TIMEOUT_MS,
    Outgoing,
    ProducerLifecycle,
    commit_unless_rebalancing,
    ensure_topics,
    make_consumer,
    make_producer,
    send_all,
)
from services.kit.lifecycle import cancel_and_wait, run_until_signalled
from services.kit.logging import configure_logging, get_logger, scrub_text
from services.kit.masking import PII_READ_SCOPE, mask_message
from services.kit.migrations import (
    create_audit_chain_v1,
    create_consumer_tables_v1,
    create_idempotency_keys_v1,
    create_outbox_unpublished_index,
    create_outbox_v1,
    drop_audit_chain_v1,
    drop_consumer_tables_v1,
    drop_outbox_unpublished_index,
    drop_outbox_v1,
    run_env,
    upgrade,
)
from services.kit.money import Amount, MoneyError, is_supported, to_money
from services.kit.outbox import OutboxRelay, add_event
from services.kit.outbox_status import outbox_status, outbox_status_handler
from services.kit.progress import (
    GroupProbe,
    GroupStalled,
    group_reached,
    run_group_watched,
    run_watched,
    watch_progress,
)
from services.kit.reads import Reader
from services.kit.replay import reapply
from services.kit.service import Capability, Runtime, Wiring
from services.kit.staging import stage_insert
from services.kit.telemetry import setup_telemetry
from services.kit.times import epoch_us, from_epoch_us, timestamp_us
from services.kit.writes import Tx, guard_staged

__all__ = [
    "ALL_SCOPES",
    "COPY_MIN_ROWS",
    "PII_READ_SCOPE",
    "SESSION_TIMEOUT_MS",
    "TOPIC_CUSTOMER",
    "TOPIC_PRODUCT",
    "TOPIC_SUBSCRIPTION",
    "Aborted",
    "AlreadyExists",
    "Amount",
    "AuditChain",
    "AuditEntry",
    "AuditReport",
    "BigIntPK",
    "BlindIndex",
    "CallerSettings",
    "Capability",
    "Commands",
    "EncodedPayload",
    "FailedPrecondition",
    "FieldCipher",
    "FieldViolation",
    "GroupProbe",
    "GroupStalled",
    "GrpcServer",
    "InboxConsumer",
    "InvalidArgument",
    "MoneyError",
    "NotFound",
    "OutboxRelay",
    "Outgoing",
    "PermissionDenied",
    "PoisonEvent",
    "PreconditionViolation",
    "Principal",
    "ProducerLifecycle",
    "Projection",
    "Reader",
    "ReceivedEvent",
    "Runtime",
    "Sealer",
    "ServiceClient",
    "ServiceSettings",
    "TokenVerifier",
    "Tx",
    "Unauthenticated",
    "Unavailable",
    "UnitOfWork",
    "Wiring",
    "ZhongtaiError",
    "add_event",
    "as_dicts",
    "audit_tables",
    "build_record",
    "bulk_insert",
    "bulk_insert_statement",
    "bulk_update",
    "bulk_update_statement",
    "bulk_upsert",
    "bulk_writes",
    "cancel_and_wait",
    "canonical_request",
    "client_channel",
    "commit_unless_rebalancing",
    "configure_logging",
    "copy_insert",
    "create_audit_chain_v1",
    "create_consumer_tables_v1",
    "create_engine",
    "create_idempotency_keys_v1",
    "create_outbox_unpublished_index",
    "create_outbox_v1",
    "current_principal",
    "current_trace_id",
    "defer_write",
    "dialect_of",
    "drop_audit_chain_v1",
    "drop_consumer_tables_v1",
    "drop_outbox_unpublished_index",
    "drop_outbox_v1",
    "ensure_topics",
    "epoch_us",
    "etag_of",
    "fetch",
    "first_or_replay",
    "from_epoch_us",
    "get_logger",
    "group_reached",
    "guard_staged",
    "in_list",
    "invalid",
    "is_infrastructure_error",
    "is_postgres",
    "is_supported",
    "load_settings",
    "make_consumer",
    "make_producer",
    "mask_message",
    "mint_token",
    "outbox_status",
    "outbox_status_handler",
    "parse_key",
    "parse_old_keys",
    "parse_record",
    "read_sessionmaker",
    "reapply",
    "run_env",
    "run_group_watched",
    "run_until_signalled",
    "run_watched",
    "scrub_text",
    "send_all",
    "sessionmaker",
    "setup_telemetry",
    "source_of",
    "stage_insert",
    "timestamp_us",
    "to_money",
    "upgrade",
    "watch_progress",
]
