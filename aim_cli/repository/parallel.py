"""Parallel maps over storage requests: each call of ``fn`` is a request, so threads overlap
their round trips."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_bounded(fn: Callable[[T], R], items: Iterable[T], jobs: int, name: str) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) in the order of ``items``, on ``jobs`` threads, with at most ``2 x jobs``
    calls submitted at once (``Executor.map`` would hold a future for every one of a 70B
    model's ~112k chunks, and every result until the end)."""
    jobs = max(1, jobs)
    with ThreadPoolExecutor(jobs, thread_name_prefix=name) as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 2 * jobs:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def map_parallel(fn: Callable[[T], R], items: Sequence[T], jobs: int) -> list[R]:
    """``fn`` over ``items`` on up to ``jobs`` threads (each call is a storage request)."""
    if not items:
        return []
    with ThreadPoolExecutor(max(1, min(jobs, len(items)))) as pool:
        return list(pool.map(fn, items))
