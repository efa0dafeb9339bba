"""One way to run work in worker processes with results in input order (tokenize_data, corpus encoding).

A ``ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: if a worker dies (killed for memory,
say) the pending results fail with ``BrokenProcessPool`` instead of waiting forever. A sliding
window of ``3 * workers`` tasks in flight keeps memory bounded and the output in order.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def start_method() -> str:
    """``fork`` where there is one (workers inherit the parent's memory: a loaded tokenizer, its
    warm cache), else ``spawn``."""
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def in_order(
    work: Callable[[Any], Any],
    tasks: Iterable[Any],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple,
) -> Iterator[tuple[Any, Future]]:
    """``(task, future)`` for each task, in task order, with at most ``3 * workers`` in flight.

    Leaving the loop early (an exception, Ctrl-C) stops the workers at once (:func:`stop_pool`).
    """
    pool = ProcessPoolExecutor(
        workers, mp_context=mp.get_context(start_method()), initializer=initializer, initargs=initargs
    )
    ok = False
    try:
        inflight: deque = deque()
        for task in tasks:
            inflight.append((task, pool.submit(work, task)))
            if len(inflight) >= 3 * workers:
                yield inflight.popleft()
        while inflight:
            yield inflight.popleft()
        ok = True
    finally:
        if ok:
            pool.shutdown(wait=True)
        else:
            stop_pool(pool)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """On failure (bad input, Ctrl-C, a dead worker) stop at once: terminate the workers instead of
    letting them finish chunks nobody will read. A plain ``shutdown(wait=False)`` leaves the exit to
    the executor's atexit join, which can hang in CPython 3.11 when workers are mid-task."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # gone after shutdown()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
