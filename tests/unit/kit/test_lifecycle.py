"""services.kit.lifecycle.run_until_signalled: start in order, stop in reverse, whatever fails."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator

import pytest

from services.kit.lifecycle import run_until_signalled


class Recorder:
    """A component that logs its start/stop into a shared list, optionally failing."""

    def __init__(self, name: str, log: list[str], *, fail_start: bool = False, fail_stop: bool = False) -> None:
        self.name, self.log, self.fail_start, self.fail_stop = name, log, fail_start, fail_stop

    async def start(self) -> None:
        if self.fail_start:
            self.log.append(f"start {self.name} failed")
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


@pytest.fixture(autouse=True)
async def _restore_signal_handlers() -> AsyncIterator[None]:
    """run_until_signalled installs SIGTERM/SIGINT handlers on the loop and leaves them there."""
    loop = asyncio.get_running_loop()
    yield
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


async def run_until_started(components: list[Recorder], log: list[str], stop: asyncio.Event) -> asyncio.Task[None]:
    task = asyncio.create_task(run_until_signalled(components, stop_event=stop))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        while len([e for e in log if e.startswith("start")]) < len(components):
            await asyncio.sleep(0.001)
    return task


async def test_components_start_in_order_and_stop_in_reverse_when_the_stop_event_is_set() -> None:
    log: list[str] = []
    stop = asyncio.Event()
    task = await run_until_started([Recorder(n, log) for n in "abc"], log, stop)
    await asyncio.sleep(0.01)
    assert log == ["start a", "start b", "start c"]  # nothing stops before the event
    assert not task.done()
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_a_failed_start_stops_the_already_started_ones_and_raises() -> None:
    log: list[str] = []
    components = [Recorder("a", log), Recorder("b", log), Recorder("c", log, fail_start=True), Recorder("d", log)]
    with pytest.raises(RuntimeError, match="c cannot start"):
        async with asyncio.timeout(5):
            await run_until_signalled(components, stop_event=asyncio.Event())  # type: ignore[arg-type]
    assert log == ["start a", "start b", "start c failed", "stop b", "stop a"]


async def test_a_failing_stop_does_not_prevent_stopping_the_rest() -> None:
    log: list[str] = []
    stop = asyncio.Event()
    stop.set()  # stop as soon as everything started
    components = [Recorder("a", log), Recorder("b", log, fail_stop=True), Recorder("c", log)]
    async with asyncio.timeout(5):
        await run_until_signalled(components, stop_event=stop)  # type: ignore[arg-type]
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_cancelling_the_run_still_stops_the_started_components() -> None:
    log: list[str] = []
    task = await run_until_started([Recorder("a", log), Recorder("b", log)], log, asyncio.Event())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["start a", "start b", "stop b", "stop a"]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
async def test_sigterm_stops_the_components() -> None:
    log: list[str] = []
    stop = asyncio.Event()
    task = await run_until_started([Recorder("a", log), Recorder("b", log)], log, stop)
    os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: sets the stop event
    async with asyncio.timeout(5):
        await task
    assert stop.is_set()
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_after_serving_components_start_last_and_stop_right_after_the_server() -> None:
    """The last of ``components`` is the server: it drains first, then what started after it."""
    log: list[str] = []
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(5):
        await run_until_signalled(
            [Recorder("engine", log), Recorder("server", log)],  # type: ignore[list-item]
            stop_event=stop,
            after_serving=[Recorder("producer", log), Recorder("consumer", log)],  # type: ignore[list-item]
        )
    assert log == [
        *("start engine", "start server", "start producer", "start consumer"),
        *("stop server", "stop consumer", "stop producer", "stop engine"),
    ]


async def test_a_failed_start_after_serving_stops_everything_started() -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="consumer cannot start"):
        async with asyncio.timeout(5):
            await run_until_signalled(
                [Recorder("engine", log), Recorder("server", log)],  # type: ignore[list-item]
                stop_event=asyncio.Event(),
                after_serving=[Recorder("producer", log), Recorder("consumer", log, fail_start=True)],  # type: ignore[list-item]
            )
    assert log[-3:] == ["stop server", "stop producer", "stop engine"]


async def test_the_young_gc_threshold_holds_while_serving_and_is_put_back_at_the_stop() -> None:
    before = gc.get_threshold()
    log: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_until_signalled([Recorder("a", log)], stop_event=stop, gc_young_threshold=12_345))  # type: ignore[list-item]
    async with asyncio.timeout(5):
        while gc.get_threshold()[0] != 12_345:  # (set once everything has started)
            await asyncio.sleep(0.001)
    assert gc.get_threshold() == (12_345, *before[1:])
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert log == ["start a", "stop a"]
    assert gc.get_threshold() == before
