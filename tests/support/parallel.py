"""Running one piece of work in many threads at once, for the race tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def in_parallel(count: int, work: Callable[[], Any]) -> list[Any]:
    """Run `work` in `count` threads released together by a barrier; return their results."""
    barrier = threading.Barrier(count, timeout=30)

    def run() -> Any:
        barrier.wait()
        return work()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run) for _ in range(count)]
        return [future.result() for future in futures]
