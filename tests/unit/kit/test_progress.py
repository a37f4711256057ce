"""The group watchdog's rules (services/kit/progress.py): pure, no broker."""

from __future__ import annotations

import asyncio
from typing import NoReturn

import pytest
from aiokafka import TopicPartition

from services.kit.progress import GroupStalled, StallTracker, run_watched

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_records_waiting_with_an_unmoved_committed_offset_stall_after_the_threshold() -> None:
    tracker = StallTracker(30)
    assert tracker.observe({P0: 5}, {P0: 9}, {}, now=0) == {}  # first seen
    assert tracker.observe({P0: 5}, {P0: 9}, {}, now=29) == {}
    assert tracker.observe({P0: 5}, {P0: 12}, {}, now=30) == {P0: 7}  # new records do not reset it


def test_a_moving_or_caught_up_group_never_stalls() -> None:
    tracker = StallTracker(30)
    for t in range(0, 300, 10):
        assert tracker.observe({P0: t, P1: 40}, {P0: t + 3, P1: 40}, {}, now=t) == {}


def test_a_never_committed_partition_counts_from_its_first_record_still_there() -> None:
    tracker = StallTracker(10)
    # retention removed everything: nothing waits, though the group never committed
    assert tracker.observe({P0: None}, {P0: 50}, {P0: 50}, now=0) == {}
    assert tracker.observe({P0: None}, {P0: 50}, {P0: 50}, now=100) == {}
    assert tracker.observe({}, {P1: 8}, {P1: 2}, now=0) == {}
    assert tracker.observe({}, {P1: 8}, {P1: 2}, now=10) == {P1: 6}


def test_time_is_counted_only_across_probes_that_answered() -> None:
    tracker = StallTracker(30)
    tracker.observe({P0: 5}, {P0: 9}, {}, now=0)
    tracker.unseen()  # the broker out of reach from 0 to 40 s
    assert tracker.observe({P0: 5}, {P0: 9}, {}, now=40) == {}  # the clock starts again here
    assert tracker.observe({P0: 5}, {P0: 9}, {}, now=69) == {}
    assert tracker.observe({P0: 5}, {P0: 9}, {}, now=70) == {P0: 4}
    assert tracker.longest(70) == 30


def test_the_stall_names_the_group_and_each_partition_behind() -> None:
    stalled = GroupStalled("data-hub", {P1: 6, P0: 2}, 31.4)
    assert str(stalled) == "group data-hub has not moved for 31 s with records waiting (t[0]: 2, t[1]: 6)"


async def _stall_after(seconds: float) -> NoReturn:
    await asyncio.sleep(seconds)
    raise GroupStalled("g", {P0: 1}, seconds)


async def test_a_stall_cancels_the_loop_and_is_raised() -> None:
    cancelled = asyncio.Event()

    async def wedged() -> None:
        try:
            await asyncio.Event().wait()  # a call that never returns
        finally:
            cancelled.set()

    with pytest.raises(GroupStalled):
        await run_watched(wedged(), _stall_after(0.01))
    assert cancelled.is_set()


async def test_a_loop_that_ignores_its_first_cancel_is_cancelled_again() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()  # e.g. awaiting a write in flight in its ``finally``

    with pytest.raises(GroupStalled):
        await run_watched(stubborn(), _stall_after(0.01), cancel_timeout_s=0.05)


async def test_the_loops_own_end_and_errors_pass_through() -> None:
    async def fails() -> None:
        raise RuntimeError("the loop's own error")

    async def ends() -> None:
        return None

    with pytest.raises(RuntimeError, match="own error"):
        await run_watched(fails(), _stall_after(10))
    await run_watched(ends(), _stall_after(10))
