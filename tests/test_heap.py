"""The start-up heap freeze: frozen cycles are skipped by collections until the heap is released."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bot.heap import freeze_startup_heap, release_startup_heap


class _Finalized:
    """A node of a reference cycle that records when the collector finalizes it."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.partner: _Finalized | None = None

    def __del__(self) -> None:
        self.log.append("finalized")


def _make_cycle(log: list[str]) -> list[_Finalized]:
    """Return a holder of a two-node cycle; clearing the holder leaves the cycle as garbage."""
    first, second = _Finalized(log), _Finalized(log)
    first.partner, second.partner = second, first
    return [first]


@pytest.fixture
def thawed_afterwards() -> Iterator[None]:
    try:
        yield
    finally:
        gc.unfreeze()


def test_frozen_cycle_survives_collection(thawed_afterwards: None) -> None:
    log: list[str] = []
    holder = _make_cycle(log)

    assert freeze_startup_heap() > 0
    holder.clear()
    gc.collect()

    assert log == []


def test_release_finalizes_frozen_cycle(thawed_afterwards: None) -> None:
    log: list[str] = []
    holder = _make_cycle(log)
    freeze_startup_heap()
    holder.clear()

    release_startup_heap()

    assert gc.get_freeze_count() == 0
    assert log == ["finalized", "finalized"]


def test_objects_made_after_freeze_are_collected(thawed_afterwards: None) -> None:
    freeze_startup_heap()
    log: list[str] = []
    holder = _make_cycle(log)
    holder.clear()

    gc.collect()

    assert log == ["finalized", "finalized"]
