"""services.data_hub.topic_index.committed: a commit the group's rebalance refused is no failure."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import CommitFailedError

from services.data_hub.topic_index import committed


class _Committer:
    """What ``committed`` calls on a consumer: ``commit`` (and nothing of a group)."""

    def __init__(self, outcome: BaseException | None = None, *, hang: bool = False) -> None:
        self.outcome, self.hang = outcome, hang

    async def commit(self, offsets: object = None) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.outcome is not None:
            raise self.outcome


async def test_a_refused_commit_is_not_committed_and_not_raised() -> None:
    assert await committed(_Committer()) is True
    # the group rebalanced while the records were stored: they come again, insert-if-absent
    assert await committed(_Committer(CommitFailedError("rebalanced"))) is False


async def test_a_commit_that_never_goes_through_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.data_hub.topic_index._SESSION_S", 0.05)
    with pytest.raises(TimeoutError):  # (the index restarts from its committed offsets)
        await committed(_Committer(hang=True))
