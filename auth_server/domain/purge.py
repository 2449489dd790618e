"""Purge: deleting, in every tenant, the records that have ended, and the periodic job that does it in
every server process (issue 14). No gRPC and no database types here: only the Store protocol.

What goes, and when (the cut-offs `Purge.cutoffs` hands to `Store.purge`):

- sessions revoked, or past their expiry, more than GRACE ago;
- challenges of every kind (login codes, pending sign-ups, resets, e-mail changes, sign-in reports)
  expired or consumed more than GRACE ago; expired counters (throttles, holds, leases) likewise;
- unlock tokens expired more than GRACE ago: the user keeps everything else;
- audit events older than AUTH_AUDIT_RETENTION;
- revocation log entries older than REVOCATION_HORIZON past AUTH_ACCESS_TTL, never the newest.

GRACE is twice AUTH_ACCESS_TTL. An access token outlives the end of its session by at most one TTL,
and until then it must answer SESSION_REVOKED (or SESSION_EXPIRED), not SESSION_NOT_FOUND: after one
TTL every such token fails its own expiry check before the store is read. The second TTL is margin
for clocks that differ between replicas; it grows with the TTL the operator chose. A refresh token
of a session that went answers REFRESH_TOKEN_INVALID instead of SESSION_REVOKED: 401 all the same.

The revocation log is safe to prune after AUTH_ACCESS_TTL: an entry matters only to a guard holding
an answer cached before it, and a guard never keeps an answer past the expiry of the token it is
about (the Introspect answer's `expires_at`; service tokens have the same TTL). So a guard resuming
from a cursor older than the pruned part gets every entry that can still matter, and those it misses
concern tokens that are all dead. REVOCATION_HORIZON (a day) is margin for clocks and for a TTL
lowered since the tokens were issued. The newest entry always stays, so seqs go on from it.

Every delete is conditional on the record being past its cut-off (the store's contract), so replicas
running the job at once are safe: each record goes once, and nothing live is touched.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.infra.clock import utcnow
from auth_server.infra.config import Settings
from auth_server.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

REVOCATION_HORIZON = timedelta(days=1)  # kept past AUTH_ACCESS_TTL (module docstring)
KINDS = ("sessions", "challenges", "counters", "unlock_tokens", "audit_events", "revocations")


@dataclass(frozen=True)
class Cutoffs:
    ended_before: datetime  # sessions, challenges, counters, unlock tokens that ended before it go
    events_before: datetime  # audit events created before it go
    revocations_before: datetime  # revocation log entries appended before it go (not the newest)


class Purge:
    """One purge over every configured tenant (`run`); `PurgeJob` runs it periodically."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._tenants = sorted(settings.tenants)
        access_ttl = timedelta(seconds=settings.access_ttl)
        self._grace = 2 * access_ttl
        self._retention = timedelta(seconds=settings.audit_retention)
        self._horizon = access_ttl + REVOCATION_HORIZON

    def cutoffs(self, now: datetime) -> Cutoffs:
        return Cutoffs(
            ended_before=now - self._grace,
            events_before=now - self._retention,
            revocations_before=now - self._horizon,
        )

    def run(self, now: datetime | None = None) -> dict[str, dict[str, int]]:
        """Purge every tenant; what went, per tenant and kind. Logs one INFO line when anything went.

        StoreUnavailable from any tenant stops the run (what was deleted stays deleted).
        """
        cut = self.cutoffs(now or utcnow())
        deleted: dict[str, dict[str, int]] = {}
        for tenant in self._tenants:
            deleted[tenant] = self._store.purge(
                tenant,
                ended_before=cut.ended_before,
                events_before=cut.events_before,
                revocations_before=cut.revocations_before,
            )
        totals: Counter[str] = Counter()
        for counts in deleted.values():
            totals.update(counts)
        if any(totals.values()):
            summary = " ".join(f"{kind}={totals[kind]}" for kind in KINDS)
            tenants = ",".join(t for t, counts in deleted.items() if any(counts.values()))
            log.info("purged ended records: %s (tenants %s)", summary, tenants, extra={"purged": dict(totals)})
        return deleted


class PurgeJob:
    """A daemon thread running `Purge.run` every `interval` seconds until stop().

    The first run comes after half to one and a half intervals, and each later one after 0.9 to 1.1,
    at random: replicas started together spread their purges out (running at once would be safe,
    only wasteful). A failing store is logged and tried again at the next turn.
    """

    def __init__(self, purge: Purge, interval: float) -> None:
        self._purge = purge
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="purge", daemon=True)

    def start(self) -> PurgeJob:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        delay = self._interval * (0.5 + random.random())  # noqa: S311 (jitter, not a secret)
        while not self._stop.wait(delay):
            try:
                self._purge.run()
            except StoreUnavailable as exc:
                log.warning("purge skipped, store unavailable: %s", exc)
            except Exception:  # the job must outlive any one failure; the next turn tries again
                log.exception("purge failed")
            delay = self._interval * (0.9 + 0.2 * random.random())  # noqa: S311
