"""Compare-and-swap over the store's counters, and the leases built on it.

The store keeps a `Counter` and knows nothing of what it means; a rule that must hold across threads
and replicas (a throttle, "keep one active admin") is written here as a pure step over the current
counter and applied with `swap`, which writes only if no one wrote meanwhile and otherwise retries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TypeVar

from auth_server.domain.errors import AuthError, Code, server_busy
from auth_server.infra.clock import utcnow
from auth_server.store.base import Counter, DuplicateKey, Store

T = TypeVar("T")

# Each round has one winner, so N parallel callers finish within N rounds.
MAX_SWAPS = 64

# step(current counter or None) -> (result, fields to write, or None to write nothing)
Step = Callable[[Counter | None], tuple[T, dict[str, object] | None]]


def live(counter: Counter | None, now: datetime) -> Counter | None:
    """The counter unless it has expired (an expired counter means nothing, even before it is purged)."""
    if counter is None or (counter.expires_at is not None and counter.expires_at <= now):
        return None
    return counter


def swap(store: Store, tenant: str, key: str, step: Step[T]) -> T:
    """Apply `step` to the counter atomically: read, decide, write only if the version is unchanged."""
    for _ in range(MAX_SWAPS):
        current = store.get_counter(tenant, key)
        result, fields = step(current)
        if fields is None:
            return result
        if current is None:
            try:
                store.create_counter(tenant, Counter(id=key, version=1, **fields))  # type: ignore[arg-type]
                return result
            except DuplicateKey:
                continue
        if store.update_counter(tenant, key, set=dict(fields), inc={"version": 1}, expect={"version": current.version}):
            return result
    raise server_busy()


@contextmanager
def lease(store: Store, tenant: str, name: str, ttl: float = 10.0, wait: float = 5.0) -> Iterator[None]:
    """Hold the tenant-wide lease `name` for a short check-then-write; other holders wait their turn.

    A holder that dies leaves the lease to expire after `ttl` seconds; the counter expires with it, so
    the purge (domain/purge.py) deletes leases no one takes again (one per user for the session cap).
    Waiting polls, with jitter: holders keep it for a few store round trips, and contention is rare
    (admin changes, parallel logins of one user).
    """
    key = f"lease:{name}"
    deadline = time.monotonic() + wait
    held: list[int] = []

    def take(counter: Counter | None) -> tuple[bool, dict[str, object] | None]:
        now = utcnow()
        if counter is not None and counter.blocked_until is not None and counter.blocked_until > now:
            return False, None
        held[:] = [counter.version + 1 if counter is not None else 1]
        ends = now + timedelta(seconds=ttl)
        return True, {"blocked_until": ends, "expires_at": ends}

    while not swap(store, tenant, key, take):
        if time.monotonic() > deadline:
            raise AuthError(Code.UNAVAILABLE, "BUSY", "Another change of this kind is in progress; retry.")
        time.sleep(0.002 + 0.008 * random.random())  # noqa: S311 (jitter, not a secret)
    try:
        yield
    finally:
        # Released only if still ours (a holder that outlived its lease must not free another's).
        store.update_counter(tenant, key, set={"blocked_until": None}, inc={"version": 1}, expect={"version": held[0]})
