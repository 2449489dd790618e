"""SQLite writers of one process take turns instead of failing (issue 15).

SQLite's busy handler retries a blocked writer by sleeping, up to 100 ms a try, so with many threads
writing some lost every try until the busy timeout and failed with "database is locked"
(STORE_UNAVAILABLE). The adapter now hands every write to one writer thread, which commits what is
queued together. Here 32 threads (the server's pool size) rotate sessions with conditional updates, as
Refresh does, against a store whose busy timeout is short enough that the old starvation failed within
seconds; none may fail, and every rotation must have happened exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auth_server.store.base import DuplicateKey, StoreUnavailable, User
from auth_server.store.sqlite import SqliteStore
from tests.support.records import new_session, new_user, utcnow

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


def test_a_failed_write_in_a_shared_commit_fails_alone(tmp_path: Path) -> None:
    """Writes queued together commit together, but a constraint failure undoes only its own statement:
    of two users claiming one username at once exactly one exists, and every other user is stored."""
    store = SqliteStore(tmp_path / "auth.db")
    store.open()
    try:
        users = [new_user(username=f"name{n // 2}", email=f"user{n}@example.test") for n in range(2 * THREADS)]
        start = threading.Barrier(len(users))
        outcomes: list[str] = []
        lock = threading.Lock()

        def create(user: User) -> None:
            start.wait(timeout=30)
            try:
                store.create_user(TENANT, user)
                outcome = "created"
            except DuplicateKey as error:
                outcome = f"duplicate {error.field}"
            with lock:
                outcomes.append(outcome)

        with ThreadPoolExecutor(len(users)) as pool:
            list(pool.map(create, users))
        assert sorted(Counter(outcomes).items()) == [("created", THREADS), ("duplicate username", THREADS)]
        stored = [store.get_user(TENANT, user.id) for user in users]
        assert sorted(u.username for u in stored if u is not None) == sorted(f"name{n}" for n in range(THREADS))
    finally:
        store.close()
