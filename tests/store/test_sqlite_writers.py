"""SQLite writers of one process take turns instead of failing (issue 15).

SQLite's busy handler retries a blocked writer by sleeping, up to 100 ms a try, so with many threads
writing some lost every try until the busy timeout and failed with "database is locked"
(STORE_UNAVAILABLE). The adapter queues its own writers in front of SQLite's lock. Here 32 threads
(the server's pool size) rotate sessions with conditional updates, as Refresh does, against a store
whose busy timeout is short enough that the old starvation failed within seconds; none may fail.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auth_server.store.base import StoreUnavailable
from auth_server.store.sqlite import SqliteStore
from tests.support.records import new_session, utcnow

TENANT = "default"
THREADS = 32
ROTATIONS = 60  # per thread: 1,920 conditional writes, each its own commit


def test_concurrent_conditional_writes_queue_instead_of_failing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "auth.db", busy_timeout=1.0)
    store.open()
    try:
        for n in range(THREADS):
            store.create_session(TENANT, new_session(f"u{n}", id=f"s{n}"))
        start = threading.Barrier(THREADS)
        failures: Counter[str] = Counter()
        lock = threading.Lock()

        def rotate(n: int) -> None:
            start.wait(timeout=30)
            for generation in range(ROTATIONS):
                try:
                    rotated = store.update_session(
                        TENANT,
                        f"s{n}",
                        set={"refresh_generation": generation + 1, "rotated_at": utcnow()},
                        expect={"refresh_generation": generation},
                    )
                except StoreUnavailable as error:
                    with lock:
                        failures[str(error)] += 1
                    return
                assert rotated is not None and rotated.refresh_generation == generation + 1

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(rotate, range(THREADS)))
        assert not failures, f"writers failed instead of waiting their turn: {dict(failures)}"
        assert all(store.get_session(TENANT, f"s{n}").refresh_generation == ROTATIONS for n in range(THREADS))
    finally:
        store.close()
