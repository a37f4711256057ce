"""Run a process's components: start in order, stop in reverse on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Sequence
from typing import Any, Protocol

from services.kit.logging import get_logger
from services.kit.telemetry import shutdown_telemetry

log = get_logger("zhongtai.lifecycle")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task we own and wait until it has finished (safe with None)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Component(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def run_until_signalled(
    components: Sequence[Component],
    *,
    stop_event: asyncio.Event | None = None,
    after_serving: Sequence[Component] = (),
    gc_young_threshold: int | None = None,
) -> None:
    """Start each component; on SIGTERM/SIGINT (or ``stop_event``) stop them in reverse order.

    ``after_serving`` are started after all of ``components`` — whose last is the gRPC server,
    already serving then — and stopped right after that last one (the server drains first), before
    the others: what serving does not need waits no longer than it must (a restarted data hub
    serves views from its database while its Kafka clients connect, ADR 0035).
    """
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started: list[Component] = []
    later: list[Component] = []
    thresholds = gc.get_threshold()
    try:
        for component in components:
            await component.start()
            started.append(component)
        for component in after_serving:
            await component.start()
            later.append(component)
        log.info("started", components=[type(c).__name__ for c in [*started, *later]])
        # Everything allocated so far (modules, descriptors, pools) lives as long as the process:
        # move it out of the collector's reach, so full collections stay short (no ~100 ms pauses
        # in the middle of a request or a consumer batch). The command line may have switched the
        # collector off for the start-up (services.cli): it is on from here.
        gc.collect()
        gc.freeze()
        if gc_young_threshold is not None:
            # (allocations between young collections: a consumer holding a batch of thousands of
            # decoded events alive pays ~10 % of its CPU at CPython's 700, ADR 0069)
            gc.set_threshold(gc_young_threshold, *gc.get_threshold()[1:])
        gc.enable()
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        for component in [*started[-1:], *reversed(later), *reversed(started[:-1])]:
            try:
                await component.stop()
            except Exception:
                log.exception("stop failed", component=type(component).__name__)
        shutdown_telemetry()
        gc.set_threshold(*thresholds)  # (a process that serves again, e.g. a test, starts as it was)
