"""Run the gateway: ``python -m services.cli gateway`` (or ``zhongtai gateway``).

The ASGI server is uvicorn (uvloop, httptools) by default, granian (embedded, in this process
and loop) with ``ZT_HTTP_SERVER=granian``; docs/perf/gateway.md and ADR 0007 have the benchmark
behind the choice. Both run the app's lifespan, which opens the backend channels; SIGTERM/SIGINT
(or ``stop_event``) stops accepting, lets in-flight requests finish, then closes the channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

from gateway.app import GatewayApp
from gateway.settings import GatewaySettings
from services.kit.config import load_settings
from services.kit.logging import configure_logging, get_logger
from services.kit.telemetry import setup_telemetry, shutdown_telemetry

log = get_logger("zhongtai.gateway")


async def _serve_uvicorn(app: GatewayApp, settings: GatewaySettings, stop: asyncio.Event) -> None:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # serve() owns SIGTERM/SIGINT (stop_event)
            yield

    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # The app never reads the peer address (quotas are per client id): skip the
        # X-Forwarded-For middleware uvicorn wraps every request in by default.
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.grpc_shutdown_grace_s) or 1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    _done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task


async def _serve_granian(app: GatewayApp, settings: GatewaySettings, stop: asyncio.Event) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    server = Server(
        app,
        address=settings.http_host,
        port=settings.http_port,
        interface=Interfaces.ASGI,
        websockets=False,
        log_enabled=False,
    )
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        server.stop()
    stopper.cancel()
    await task


async def serve(settings: GatewaySettings, stop_event: asyncio.Event | None = None) -> None:
    """Serve HTTP until SIGTERM/SIGINT or ``stop_event``."""
    configure_logging(settings.service_name, settings.log_level)
    setup_telemetry(settings.service_name, console=settings.otel_console, metrics_port=settings.metrics_port)
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    app = GatewayApp(settings)
    log.info(
        "gateway starting",
        server=settings.http_server,
        loop=type(loop).__module__.partition(".")[0],
        host=settings.http_host,
        port=settings.http_port,
    )
    try:
        if settings.http_server == "uvicorn":
            await _serve_uvicorn(app, settings, stop)
        else:
            await _serve_granian(app, settings, stop)
    finally:
        await app.shutdown()
        shutdown_telemetry()
        log.info("gateway stopped")


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed, else the standard one (None)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def migrate() -> None:
    """``zhongtai migrate gateway``: the shared Idempotency-Key table in ZT_DATABASE_URL (ADR 0022)."""
    from gateway.idempotency import MIGRATIONS
    from services.kit import create_engine
    from services.kit.migrations import upgrade

    settings = load_settings(GatewaySettings)
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


def run() -> None:
    settings = load_settings(GatewaySettings)
    with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
        runner.run(serve(settings))
