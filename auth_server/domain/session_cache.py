"""Sessions and users the guard read lately, per process: what lets an authenticated call skip the store.

Every call with a person's token used to read its session and user from the store. That read is most
of what a guarded call costs beyond gRPC itself: SQLite releases the GIL around each statement, so
under load every read is also two or three thread switches (docs/performance.md, "The guarded call").
This cache keeps the pair for at most AUTH_SESSION_CACHE_TTL seconds and drops it as soon as anything
that can refuse the token is known:

- **Revocations made in this process** (logout, logout everywhere, refresh-token reuse, a password
  change or reset, the session cap, an admin's lock or role change): `revoked` is the revocation log's
  listener (domain/revocations.py), called right after the append, before the call that revoked returns.
- **Revocations made by any other process** (another replica, `auth-server user set-role`): one tail thread
  reads each tenant's revocation log every `interval` (25 ms, as the WatchRevocations poller) and drops
  what the new entries name. Until the tail has read a tenant's log successfully within `STALE_AFTER`
  seconds, nothing of that tenant is served from here (the store is read, as without a cache), so a
  store outage or a stuck tail can never stretch a revoked token's life.
- **A refusal is never served from here.** An entry only ever admits: when the cached pair would refuse
  the call (revoked, expired, locked, or a role the method does not admit), the store is read and
  decides, so a refresh that moved the session's expiry, or a promotion, is seen at once.
- **Profile changes** made in this process (UpdateMe, an e-mail change) drop the user's entries
  (`forget_user`); made on another replica, they show here within the TTL. No such change can refuse a
  token, which is why they need no log entry.

A read races an invalidation: the pair read just before a revocation must not be stored just after it.
`epoch(tenant)` is taken before the read and `put` stores nothing if the tenant saw an invalidation since.
The cache holds at most `max_entries` pairs (the oldest go first) and never a service account.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from auth_server.domain import revocations
from auth_server.store.base import Revocation, Session, Store, StoreUnavailable, User

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 10_000
STALE_AFTER = 1.0  # seconds without a successful read of a tenant's log before its entries stop serving
_BATCH = 500
# Entry kinds that end every session of a user (the rest name one session, or a service account).
_USER_WIDE = frozenset(
    {revocations.USER_SESSIONS_REVOKED, revocations.PASSWORD_CHANGED, revocations.USER_LOCKED, revocations.ROLE_CHANGED}
)


@dataclass(frozen=True, slots=True)
class _Entry:
    session: Session
    user: User
    until: float  # monotonic time after which the entry is not served


class _Tenant:
    """One tenant's tail position and invalidation count; the epoch is guarded by the cache's lock."""

    def __init__(self) -> None:
        self.epoch = 0  # how many invalidations so far
        self.high: int | None = None  # the last log seq the tail has read (None: not read yet)
        self.read_at = float("-inf")  # monotonic time of the tail's last successful read


class SessionCache:
    def __init__(
        self,
        store: Store,
        tenants: Iterable[str],
        ttl: float,
        *,
        interval: float = revocations.DEFAULT_INTERVAL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        on_read: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self._on_read = on_read  # hears every lookup: True served from here, False not (metrics)
        self._ttl = ttl
        self._interval = interval
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._following = threading.Lock()  # one follow() at a time: the tail thread's, or a test's
        self._tenants = {tenant: _Tenant() for tenant in tenants}
        # Guarded by _lock for writes. By (tenant, session id), oldest first, across tenants.
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._by_user: dict[tuple[str, str], set[str]] = {}  # (tenant, user id) -> its session ids held
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the guard's side

    def get(self, tenant: str, session_id: str) -> tuple[Session, User] | None:
        """The cached pair, if fresh and the tenant's log is being followed; else None (read the store)."""
        found = self._lookup(tenant, session_id)
        if self._on_read is not None:
            self._on_read(found is not None)
        return found

    def _lookup(self, tenant: str, session_id: str) -> tuple[Session, User] | None:
        state = self._tenants.get(tenant)
        if state is None:
            return None
        entry = self._entries.get((tenant, session_id))  # a dict read: atomic, no lock needed
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.until or now - state.read_at > STALE_AFTER:
            return None
        return entry.session, entry.user

    def entry_count(self) -> int:
        return len(self._entries)

    def tail_age(self) -> float:
        """Seconds since the tail last read the log of the tenant read longest ago (inf: never)."""
        now = self._clock()
        return max((now - state.read_at for state in self._tenants.values()), default=0.0)

    def epoch(self, tenant: str) -> int:
        """Take before reading the store; hand to `put` with what was read."""
        state = self._tenants.get(tenant)
        return state.epoch if state is not None else -1

    def put(self, tenant: str, session: Session, user: User, epoch: int) -> None:
        """Keep a pair read from the store, unless an invalidation came since `epoch` was taken."""
        state = self._tenants.get(tenant)
        if state is None:
            return
        with self._lock:
            if state.epoch != epoch:
                return
            key = (tenant, session.id)
            if self._entries.pop(key, None) is None and len(self._entries) >= self._max_entries:
                self._drop(*next(iter(self._entries)))  # the oldest goes
            self._entries[key] = _Entry(session, user, self._clock() + self._ttl)  # the newest again
            self._by_user.setdefault((tenant, user.id), set()).add(session.id)

    # --- invalidation

    def forget_user(self, tenant: str, user_id: str) -> None:
        """Drop every entry of the user (a change made in this process)."""
        self._forget(tenant, lambda: list(self._by_user.get((tenant, user_id), ())))

    def forget_session(self, tenant: str, session_id: str) -> None:
        self._forget(tenant, lambda: [session_id])

    def _forget(self, tenant: str, which: Callable[[], list[str]]) -> None:
        """Count an invalidation of the tenant (see `put`) and drop the sessions `which` names (called
        under the lock)."""
        state = self._tenants.get(tenant)
        if state is None:
            return
        with self._lock:
            state.epoch += 1
            for session_id in which():
                self._drop(tenant, session_id)

    def revoked(self, tenant: str, entry: Revocation) -> None:
        """The revocation log's listener, and the tail's: drop what the entry names."""
        if entry.kind in _USER_WIDE and entry.user_id:
            self.forget_user(tenant, entry.user_id)
        elif entry.kind == revocations.SESSION_REVOKED and entry.session_id:
            self.forget_session(tenant, entry.session_id)

    def _drop(self, tenant: str, session_id: str) -> None:
        """Remove one entry; the caller holds the lock."""
        entry = self._entries.pop((tenant, session_id), None)
        if entry is None:
            return
        user_key = (tenant, entry.user.id)
        ids = self._by_user.get(user_key)
        if ids is not None:
            ids.discard(session_id)
            if not ids:
                del self._by_user[user_key]

    # --- the tail of the revocation logs

    def follow(self) -> None:
        """One read of every tenant's log (the tail thread's step; tests call it to be deterministic)."""
        with self._following:
            for tenant, state in self._tenants.items():
                self._follow(tenant, state)

    def _follow(self, tenant: str, state: _Tenant) -> None:
        try:
            if state.high is None:
                state.high = self._store.last_revocation_seq(tenant)
            else:
                while True:
                    fresh = self._store.list_revocations(tenant, state.high, _BATCH)
                    for entry in fresh:
                        self.revoked(tenant, entry)
                        state.high = entry.seq
                    if len(fresh) < _BATCH:
                        break
        except StoreUnavailable as exc:
            # Entries would stop serving by themselves after STALE_AFTER; dropping them now is simpler to
            # reason about, and calls read the store meanwhile anyway.
            log.warning("session cache: revocation log of tenant %s unreadable: %s", tenant, exc)
            self._forget(tenant, lambda: [session_id for t, session_id in self._entries if t == tenant])
            return
        state.read_at = self._clock()

    def start(self) -> SessionCache:
        """Start the tail thread (after a first synchronous read, so entries serve from the first call)."""
        self.follow()
        self._thread = threading.Thread(target=self._run, name="session-cache-tail", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.follow()
            except Exception:  # never let the tail die silently: entries would stop serving, calls go on
                log.exception("session cache tail failed")

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
