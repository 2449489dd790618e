"""The revocation log: every change that can turn a live token dead, written where the change is made
and streamed to guards (AuthService.WatchRevocations), so their caches drop answers at once rather
than at the end of their TTL. No gRPC and no database types here: only the Store protocol.

Writing (`RevocationLog`): one append to the tenant's log in the store, right after the store change
it reports (logout, logout everywhere, refresh-token reuse, password change, admin lock, role change,
service account deleted or rotated). The log is in the store, not in process memory, so a revocation
made through any replica reaches guards connected to any other. The append is a second write after
the change, not one transaction with it: should the process die between the two, the change stands
and guards learn nothing (their TTL still bounds the delay).

Reading (`RevocationFeed`): one poller thread per tenant per process, running only while that tenant
has open streams, reads the log every `interval` seconds (one indexed range query) and hands new
entries to every stream of the tenant; a stream resuming from an older cursor first reads the store
itself until it reaches what the poller holds. The number of open streams is capped (each holds a
server thread): beyond it RESOURCE_EXHAUSTED / WATCH_STREAMS_EXHAUSTED. A cursor is the entry's
seq in decimal; the store's seqs never let a later-visible entry sort before one already seen
(store/base.py Revocation), so resuming after a cursor skips nothing and replays nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from auth_server.domain.errors import AuthError, Code, FieldViolation, validation_failed
from auth_server.infra.clock import utcnow
from auth_server.store.base import Revocation, Store, StoreUnavailable

log = logging.getLogger(__name__)

SESSION_REVOKED = "session_revoked"
USER_SESSIONS_REVOKED = "user_sessions_revoked"
PASSWORD_CHANGED = "password_changed"  # noqa: S105 (an event kind)
USER_LOCKED = "user_locked"
ROLE_CHANGED = "role_changed"
SERVICE_ACCOUNT_DELETED = "service_account_deleted"
SERVICE_ACCOUNT_ROTATED = "service_account_rotated"
KINDS = (
    SESSION_REVOKED,
    USER_SESSIONS_REVOKED,
    PASSWORD_CHANGED,
    USER_LOCKED,
    ROLE_CHANGED,
    SERVICE_ACCOUNT_DELETED,
    SERVICE_ACCOUNT_ROTATED,
)

DEFAULT_INTERVAL = 0.025  # seconds between two reads of a tenant's log while it has streams
_BATCH = 500  # entries one read returns at most
_KEPT = 4096  # entries the poller keeps for its streams; a stream further behind reads the store
_WAIT = 0.5  # seconds a stream waits for news before it checks that its caller is still there
_MAX_CURSOR_DIGITS = 19


class RevocationLog:
    """Appends entries to a tenant's revocation log (the domain's writing side).

    `listener`, when given, hears every entry this process appends (or fails to append), right after
    the append: the process's own session cache (domain/session_cache.py) drops what it names before
    the call that revoked returns, instead of when its tail reads the entry back.
    """

    def __init__(self, store: Store, listener: Callable[[str, Revocation], None] | None = None) -> None:
        self._store = store
        self._listener = listener

    def session(self, tenant: str, session_id: str, user_id: str) -> None:
        self._append(tenant, SESSION_REVOKED, session_id=session_id, user_id=user_id)

    def user(self, tenant: str, kind: str, user_id: str) -> None:
        """A user-wide entry: every session of the user is concerned."""
        self._append(tenant, kind, user_id=user_id)

    def service_account(self, tenants: Iterable[str], kind: str, account_id: str) -> None:
        """A service-account entry, in each tenant the account may call in."""
        for tenant in tenants:
            self._append(tenant, kind, service_account_id=account_id)

    def _append(self, tenant: str, kind: str, **ids: str) -> None:
        assert kind in KINDS, kind
        entry = Revocation(seq=0, kind=kind, at=utcnow(), **ids)
        try:
            self._store.append_revocation(tenant, entry)
        finally:
            # Also when the append failed: the change it reports is already in the store, and this
            # process's cache must not keep admitting what the store now refuses.
            if self._listener is not None:
                self._listener(tenant, entry)


def parse_cursor(cursor: str) -> int | None:
    """The seq a cursor names; None for an empty cursor ("from now"). INVALID_ARGUMENT when malformed."""
    if not cursor:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= _MAX_CURSOR_DIGITS):
        raise validation_failed([FieldViolation("after", "Must be a cursor received from WatchRevocations.")])
    return int(cursor)


def cursor_of(revocation: Revocation) -> str:
    return str(revocation.seq)


class Watch:
    """One open stream of entries; close() ends it and gives its slot back (once, however it ended)."""

    def __init__(self, entries: Iterator[Revocation], release: Callable[[], None]) -> None:
        self._entries = entries
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Revocation:
        return next(self._entries)

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            self._entries.close()  # type: ignore[attr-defined]
            release()


class _TenantFeed:
    """One tenant's poller and what it has read; guarded by `cond`."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.cond = threading.Condition()
        self.entries: deque[Revocation] = deque()
        self.base = 0  # every entry of the tenant with base < seq <= high is in `entries`
        self.high = 0
        self.streams = 0
        self.running = False
        self.failed: StoreUnavailable | None = None


class RevocationFeed:
    """Streams of a process's revocation logs, one shared poller per tenant (see the module docstring)."""

    def __init__(self, store: Store, *, max_streams: int, interval: float = DEFAULT_INTERVAL) -> None:
        self._store = store
        self._max_streams = max_streams
        self._interval = interval
        self._lock = threading.Lock()
        self._feeds: dict[str, _TenantFeed] = {}
        self._streams = 0
        self._closed = threading.Event()

    @property
    def open_streams(self) -> int:
        return self._streams

    def watch(self, tenant: str, after: str, alive: Callable[[], bool]) -> Watch:
        """Entries after the cursor `after` (empty: from now), until `alive()` turns False or close().

        Checks the cursor and takes a stream slot now (AuthError), not at the first next(); the caller
        must close() the Watch to give the slot back. Raises StoreUnavailable when the store fails, and
        AuthError UNAVAILABLE / SERVER_SHUTTING_DOWN when the feed closes.
        """
        position = parse_cursor(after)
        if position is None:
            position = self._store.last_revocation_seq(tenant)
        with self._lock:
            if self._closed.is_set():
                raise _shutting_down()
            if self._streams >= self._max_streams:
                raise AuthError(
                    Code.RESOURCE_EXHAUSTED,
                    "WATCH_STREAMS_EXHAUSTED",
                    "Too many revocation streams on this server; retry later or on another replica.",
                    retry_after=1,
                )
            self._streams += 1
            feed = self._feeds.get(tenant)
            if feed is None:
                feed = self._feeds[tenant] = _TenantFeed(tenant)
        with feed.cond:
            feed.streams += 1
            if not feed.running:
                feed.running = True
                feed.failed = None
                threading.Thread(target=self._poll, args=(feed,), name=f"revocations-{tenant}", daemon=True).start()
        return Watch(self._stream(feed, position, alive), lambda: self._release(feed))

    def _release(self, feed: _TenantFeed) -> None:
        with feed.cond:
            feed.streams -= 1
        with self._lock:
            self._streams -= 1

    def _stream(self, feed: _TenantFeed, position: int, alive: Callable[[], bool]) -> Iterator[Revocation]:
        while True:
            with feed.cond:
                while True:
                    if self._closed.is_set():
                        raise _shutting_down()
                    if feed.failed is not None:
                        raise feed.failed
                    if not alive():
                        return
                    if position < feed.base:
                        pending = None  # behind what the poller holds: read the store below
                        base = feed.base
                        break
                    pending = _after(feed.entries, position)
                    if pending:
                        break
                    feed.cond.wait(_WAIT)
            if pending is None:
                pending = self._store.list_revocations(feed.tenant, position, _BATCH)
                for entry in pending:
                    position = entry.seq
                    yield entry
                if len(pending) < _BATCH:
                    # Every entry up to `base` was visible before this read: all of them were returned.
                    position = max(position, base)
                continue
            for entry in pending:
                position = entry.seq
                yield entry

    def _poll(self, feed: _TenantFeed) -> None:
        """The tenant's poller: runs while the tenant has streams."""
        try:
            high = self._store.last_revocation_seq(feed.tenant)
        except StoreUnavailable as exc:
            high = None
            error = exc
        with feed.cond:
            if high is None:
                feed.failed, feed.running = error, False
                feed.cond.notify_all()
                return
            feed.entries.clear()
            feed.base = feed.high = high
        while not self._closed.is_set():
            try:
                fresh = self._store.list_revocations(feed.tenant, feed.high, _BATCH)
            except StoreUnavailable as exc:
                log.warning("revocation log of tenant %s unreadable: %s", feed.tenant, exc)
                with feed.cond:
                    feed.failed, feed.running = exc, False
                    feed.cond.notify_all()
                return
            with feed.cond:
                if fresh:
                    feed.entries.extend(fresh)
                    feed.high = fresh[-1].seq
                    while len(feed.entries) > _KEPT:
                        feed.base = feed.entries.popleft().seq
                    feed.cond.notify_all()
                if feed.streams == 0:
                    feed.running = False
                    return
            if len(fresh) < _BATCH:
                self._closed.wait(self._interval)
        with feed.cond:
            feed.running = False
            feed.cond.notify_all()

    def close(self) -> None:
        """End every stream (UNAVAILABLE / SERVER_SHUTTING_DOWN) and every poller: server shutdown."""
        self._closed.set()
        with self._lock:
            feeds = list(self._feeds.values())
        for feed in feeds:
            with feed.cond:
                feed.cond.notify_all()


def _after(entries: deque[Revocation], position: int) -> list[Revocation]:
    """The entries with seq > position, oldest first (scanning from the newest end)."""
    newer: list[Revocation] = []
    for entry in reversed(entries):
        if entry.seq <= position:
            break
        newer.append(entry)
    newer.reverse()
    return newer


def _shutting_down() -> AuthError:
    return AuthError(Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "The server is shutting down; reconnect.")
