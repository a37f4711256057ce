"""A capability is a declaration; the kit builds and runs the process (ARCHITECTURE §9).

A service's ``main.py`` declares a :class:`Capability`: its name, settings class, migrations,
gRPC services, whether it writes an outbox, and ``wire`` — a function from the process's
:class:`Runtime` (settings, engine, commit wake-ups, readiness) to its :class:`Wiring` (how its
servicers register, and its own long-lived components: consumers, workers, clients). The kit
gives every capability the same three commands:

- ``serve``: logging and telemetry (metrics port), engine, migrations to head, topics, the outbox
  relay (``ZT_OUTBOX_RELAY_ENABLED``), the service's components, then the gRPC server with
  health (readiness + ``liveness``), reflection, auth, validation, then the components serving
  does not wait for (``Wiring.after_serving``); SIGTERM/SIGINT stop them in reverse order (the
  server drains first, the engine is disposed last).
- ``migrate``: migrations to head and exit.
- ``relay``: a standalone outbox relay (same stop signals, topic creation and metrics port).

Usage in ``services/<name>/main.py``::

    CAPABILITY = Capability(name="product", settings=ProductSettings, migrations=MIGRATIONS,
                            grpc_services=[SERVICE], wire=wire)
    serve, migrate, relay, run = CAPABILITY.commands()
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.auth import TokenVerifier
from services.kit.config import ServiceSettings, load_settings
from services.kit.db import EngineLifecycle, create_engine
from services.kit.grpc_server import GrpcServer
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import Component, run_until_signalled
from services.kit.logging import configure_logging, get_logger
from services.kit.migrations import upgrade
from services.kit.outbox import OutboxRelay, relayed_in_process
from services.kit.telemetry import setup_telemetry

S = TypeVar("S", bound=ServiceSettings)
log = get_logger("zhongtai.service")


@dataclass
class Runtime(Generic[S]):
    """What the kit built for a process, handed to the capability's ``wire``."""

    settings: S
    engine: AsyncEngine
    #: Called after each committed write transaction (wakes the outbox relay): pass to use cases.
    after_commit: list[Callable[[], None]]
    _server: GrpcServer | None = field(default=None, repr=False)

    async def set_ready(self, ready: bool, reason: str = "") -> None:
        """Report the process ready or not in its gRPC health (e.g. a consumer that cannot apply)."""
        if self._server is not None:
            await self._server.set_ready(ready, reason)


@dataclass
class Wiring:
    """A capability's part of the process: its servicers and its own components (started after
    the kit's, before the gRPC server; stopped in reverse)."""

    register: Callable[[grpc.aio.Server], None]
    components: Sequence[Component] = ()
    #: Components that serving does not wait for (e.g. a consumer and its Kafka clients, when the
    #: servicers read only the database): started once the gRPC server serves, stopped right after
    #: it has drained. A capability with these creates its topics then too (ADR 0035).
    after_serving: Sequence[Component] = ()


@dataclass(frozen=True)
class Capability(Generic[S]):
    """The declaration of one capability (one process kind)."""

    name: str
    settings: type[S]
    migrations: Path
    grpc_services: Sequence[str]
    wire: Callable[[Runtime[S]], Awaitable[Wiring]]
    #: Writes a transactional outbox (customer, product): the kit runs its relay.
    writes_outbox: bool = True

    # -- the three commands ---------------------------------------------------------------

    async def serve(self, settings: S, stop_event: asyncio.Event | None = None) -> None:
        configure_logging(settings.service_name, settings.log_level)
        setup_telemetry(settings.service_name, console=settings.otel_console, metrics_port=settings.metrics_port)
        engine = create_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            trace_statements=settings.db_trace_statements,
        )
        await upgrade(engine, self.migrations)  # idempotent; in Kubernetes the migrations Job ran it first
        relaying = self.writes_outbox and settings.outbox_relay_enabled
        runtime = Runtime(settings=settings, engine=engine, after_commit=[])
        components: list[Component] = [EngineLifecycle(engine)]
        if relaying:
            relay = _relay(settings, engine, name=settings.service_name)
            components += [_Topics(settings), relay]  # (the topics it publishes to)
            runtime.after_commit.append(relay.wake)
            relayed_in_process(engine)  # (its writers' wake-up is local: no NOTIFY per commit, ADR 0027)
        wiring = await self.wire(runtime)
        own, after_serving = list(wiring.components), list(wiring.after_serving)
        if not self.writes_outbox:  # (the topics it consumes): before its first own component
            (own if own or not after_serving else after_serving).insert(0, _Topics(settings))
        server = GrpcServer(
            host=settings.grpc_host,
            port=settings.grpc_port,
            register=wiring.register,
            service_names=list(self.grpc_services),
            verifier=TokenVerifier.from_settings(settings),
            max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            shutdown_grace_s=settings.grpc_shutdown_grace_s,
        )
        runtime._server = server
        log.info("starting", capability=self.name, relay=relaying)
        # Start in order, stop in reverse: the server drains first, then the capability's own
        # components, the relay, and the engine last.
        await run_until_signalled(
            [*components, *own, server],
            stop_event=stop_event,
            after_serving=after_serving,
            gc_young_threshold=settings.gc_young_threshold,
        )

    async def migrate(self) -> None:
        settings = load_settings(self.settings)
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine, self.migrations)
        finally:
            await engine.dispose()

    async def relay(self, stop_event: asyncio.Event | None = None) -> None:
        """A standalone outbox relay for this capability's database (``zhongtai relay --service``)."""
        settings = load_settings(self.settings)
        name = f"{settings.service_name}-relay"
        configure_logging(name, settings.log_level)
        setup_telemetry(name, console=settings.otel_console, metrics_port=settings.metrics_port)
        engine = create_engine(settings.database_url, pool_size=2, trace_statements=settings.db_trace_statements)
        await _ensure_topics(settings)
        outbox = _relay(settings, engine, name=f"{settings.service_name}-standalone", client_suffix="-relay")
        await run_until_signalled(
            [EngineLifecycle(engine), outbox], stop_event=stop_event, gc_young_threshold=settings.gc_young_threshold
        )

    def run(self) -> None:
        # (The import-time heap is frozen out of the cyclic GC by the lifecycle once everything has
        # started: run_until_signalled, ADR 0032/0035.)
        asyncio.run(self.serve(load_settings(self.settings)))

    def commands(self) -> tuple[Any, Any, Any, Callable[[], None]]:
        """``serve``, ``migrate``, ``relay`` and ``run``: what ``zhongtai`` calls in a main module."""
        return self.serve, self.migrate, self.relay, self.run


async def _ensure_topics(settings: ServiceSettings) -> None:
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        prefix=settings.kafka_topic_prefix,
    )


class _Topics:
    """The platform's topics, created if missing when the process starts (a component, so that a
    capability that serves without Kafka creates them only after it serves)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings

    async def start(self) -> None:
        await _ensure_topics(self._settings)

    async def stop(self) -> None:
        return None


def _relay(settings: ServiceSettings, engine: AsyncEngine, *, name: str, client_suffix: str = "") -> OutboxRelay:
    return OutboxRelay(
        engine,
        make_producer(settings.kafka_bootstrap_servers, client_id=settings.kafka_client_id + client_suffix),
        name=name,
        owns_producer=True,
        batch_size=settings.outbox_batch_size,
        poll_interval_s=settings.outbox_poll_interval_s,
        topic_prefix=settings.kafka_topic_prefix,
    )
