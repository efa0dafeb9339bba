"""in_order: results come back in task order from real worker processes; a failure stops the pool."""

from __future__ import annotations

import time

import pytest

from cs336_basics.utils.pool import in_order


def _init(tag: str) -> None:
    global _TAG
    _TAG = tag


def _square(x: int) -> tuple[str, int]:
    time.sleep(0.01 * (x % 3))  # finish out of order
    if x < 0:
        raise ValueError(f"bad task {x}")
    return _TAG, x * x


def test_results_in_task_order_with_the_initializer_run_in_each_worker():
    got = [(task, fut.result()) for task, fut in in_order(_square, range(20), 2, _init, ("w",))]
    assert got == [(x, ("w", x * x)) for x in range(20)]


def test_a_failing_task_raises_and_the_pool_stops():
    with pytest.raises(ValueError, match="bad task -1"):
        for _task, fut in in_order(_square, [1, 2, -1, 4], 2, _init, ("w",)):
            fut.result()
