"""Login throttles that cannot be turned against the people they protect.

Three limits, in the shape of Synapse's `rc_login.address`, `.failed_attempts` and `.account`, but with
every counter in the store, so replicas share them, and every change a compare-and-swap on the
counter's version, so parallel callers can never both pass a limit that only one may pass:

- per source: at most AUTH_SOURCE_LOGIN_RATE password checks a minute from one source, refused before
  any bcrypt work (`admit_source`); sign-ups and password-reset requests, which cost a bcrypt or a mail,
  count in buckets of their own at the same rate, so neither spends the sign-in budget of a shared NAT;
- per (identifier, source): after AUTH_LOCKOUT_THRESHOLD consecutive wrong passwords that source is
  refused for that identifier, for AUTH_LOCKOUT_DURATION doubling to 24 h (`reserve_pair`). The
  attempt is reserved *before* the password is checked, so a burst verifies at most the threshold and
  starts one lock episode. The owner elsewhere is not affected, and no mail is sent (a mail bomb);
- per account: wrong passwords and wrong codes from every source spend AUTH_ACCOUNT_FAILURE_LIMIT per
  AUTH_FAILURE_WINDOW (`account_over_budget`, `spend_account`); a login without a known device is
  refused while it is spent.

Keys hold a keyed digest of the identifier string, never the string, and the same string gets the same
answer whether or not an account has it: the throttle never tells who exists. A source is an IPv4
address or an IPv6 /64 (one host usually owns a whole /64).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import TypeVar

from auth_server.domain.counters import Step, live, swap
from auth_server.domain.errors import AuthError, rate_limited
from auth_server.infra.config import Settings
from auth_server.infra.keys import KeyRing
from auth_server.store.base import Counter, Store

T = TypeVar("T")
SOURCE_WINDOW = timedelta(minutes=1)
MAX_LOCKOUT = timedelta(hours=24)
PAIR_MEMORY = timedelta(hours=24)  # how long a pair's escalation level outlives its last lock


def source_of(ip: str) -> str:
    """The unit a source is throttled by: the IPv4 address, or the IPv6 /64 it is in."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]  # not an address (a unix socket peer): one shared source
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


class Throttle:
    def __init__(self, store: Store, settings: Settings, keys: KeyRing) -> None:
        self._store = store
        self._settings = settings
        self._keys = keys

    # -- keys ------------------------------------------------------------------------------------

    def _digest(self, identifier: str) -> str:
        return self._keys.hash("throttle", identifier)[:16].hex()

    def _pair_prefix(self, identifier: str) -> str:
        return f"pair:{self._digest(identifier)}:"

    def _pair_key(self, identifier: str, ip: str) -> str:
        return self._pair_prefix(identifier) + source_of(ip)

    def _account_key(self, identifier: str) -> str:
        return f"acct:{self._digest(identifier)}"

    def _swap(self, tenant: str, key: str, step: Step[T]) -> T:
        return swap(self._store, tenant, key, step)

    # -- per source --------------------------------------------------------------------------------

    def admit_source(self, tenant: str, ip: str, now: datetime, flow: str = "login") -> None:
        """Count one password check (or, by `flow`, one "signup" or "reset" request) from this source,
        or refuse it (refused tries are not counted)."""
        rate = self._settings.source_login_rate
        if not rate:
            return

        def step(counter: Counter | None) -> tuple[float | None, dict[str, object] | None]:
            counter = live(counter, now)
            if counter is None or counter.window_start is None:
                return None, _fresh(now, now + SOURCE_WINDOW)
            if counter.count >= rate:
                return (counter.window_start + SOURCE_WINDOW - now).total_seconds(), None
            return None, {"count": counter.count + 1}

        key = f"src:{source_of(ip)}" if flow == "login" else f"src:{flow}:{source_of(ip)}"
        wait = self._swap(tenant, key, step)
        if wait is not None:
            what = "sign-in attempts" if flow == "login" else "requests"
            raise rate_limited(f"Too many {what} from your network; retry later.", wait)

    def refund_source(self, tenant: str, ip: str, now: datetime) -> None:
        """Give back a check that was admitted but then refused before any password was checked."""
        if self._settings.source_login_rate:
            self._decrement(tenant, f"src:{source_of(ip)}", now)

    def _decrement(self, tenant: str, key: str, now: datetime) -> None:
        def step(counter: Counter | None) -> tuple[None, dict[str, object] | None]:
            counter = live(counter, now)
            return None, ({"count": counter.count - 1} if counter is not None and counter.count > 0 else None)

        self._swap(tenant, key, step)

    def begin_check(self, tenant: str, identifier: str, ip: str, now: datetime) -> int:
        """Count a password (or secret) check per source and reserve it per (identifier, source); its
        ordinal in the run of failures (see `reserve_pair`). A refusal gives the source's count back."""
        self.admit_source(tenant, ip, now)
        try:
            return self.reserve_pair(tenant, identifier, ip, now)
        except AuthError:
            self.refund_source(tenant, ip, now)
            raise

    # -- per (identifier, source) ----------------------------------------------------------------

    def pair_blocked(self, tenant: str, identifier: str, ip: str, now: datetime) -> AuthError | None:
        """The refusal for this (identifier, source) if it is locked now; a read, no write."""
        counter = live(self._store.get_counter(tenant, self._pair_key(identifier, ip)), now)
        if counter is not None and counter.blocked_until is not None and counter.blocked_until > now:
            return _pair_locked((counter.blocked_until - now).total_seconds())
        return None

    def reserve_pair(self, tenant: str, identifier: str, ip: str, now: datetime) -> int:
        """Reserve one password check for (identifier, source); return its ordinal in the run of failures.

        The reservation counts as a failure until `pair_succeeded` clears it, so parallel guesses see
        each other before any of them is checked: at most the threshold get through.
        """
        threshold = self._settings.lockout_threshold

        def step(counter: Counter | None) -> tuple[int | float, dict[str, object] | None]:
            counter = live(counter, now)
            if counter is not None and counter.blocked_until is not None and counter.blocked_until > now:
                return -(counter.blocked_until - now).total_seconds(), None
            count = counter.count if counter is not None else 0
            if count >= threshold:  # the threshold's checks are still running: one of them will lock
                return -1.0, None
            fields: dict[str, object] = {"count": count + 1, "expires_at": now + PAIR_MEMORY}
            if counter is None:
                fields = {**_fresh(now, now + PAIR_MEMORY), **fields}
            return count + 1, fields

        ordinal = self._swap(tenant, self._pair_key(identifier, ip), step)
        if ordinal <= 0:
            raise _pair_locked(-ordinal)
        return int(ordinal)

    def pair_failed(self, tenant: str, identifier: str, ip: str, ordinal: int, now: datetime) -> timedelta | None:
        """A reserved check failed. The one whose ordinal is the threshold starts the lock; its length."""
        if ordinal != self._settings.lockout_threshold:
            return None
        first = timedelta(seconds=self._settings.lockout_duration)

        def step(counter: Counter | None) -> tuple[timedelta | None, dict[str, object] | None]:
            counter = live(counter, now)
            if counter is None or counter.count < ordinal:  # a correct password reset the run meanwhile
                return None, None
            duration = min(first * 2 ** min(counter.level, 16), MAX_LOCKOUT)
            until = now + duration
            fields = {"count": 0, "blocked_until": until, "level": counter.level + 1, "expires_at": until + PAIR_MEMORY}
            return duration, fields

        return self._swap(tenant, self._pair_key(identifier, ip), step)

    def pair_release(self, tenant: str, identifier: str, ip: str, now: datetime) -> None:
        """Give back a reservation whose password was never checked (the hashing gate refused it)."""
        self._decrement(tenant, self._pair_key(identifier, ip), now)

    def pair_succeeded(self, tenant: str, identifier: str, ip: str, now: datetime) -> None:
        """A correct password from this source ends its run of failures and its escalation."""

        def step(counter: Counter | None) -> tuple[None, dict[str, object] | None]:
            counter = live(counter, now)
            if counter is None or (counter.count == 0 and counter.level == 0):
                return None, None
            return None, {"count": 0, "level": 0}

        self._swap(tenant, self._pair_key(identifier, ip), step)

    # -- per account -------------------------------------------------------------------------------

    def account_over_budget(self, tenant: str, identifier: str, now: datetime) -> AuthError | None:
        """The refusal for a login without a known device while the identifier's budget is spent."""
        counter = live(self._store.get_counter(tenant, self._account_key(identifier)), now)
        if counter is None or counter.count < self._settings.account_failure_limit or counter.expires_at is None:
            return None
        return rate_limited(
            "Too many failed sign-in attempts for this account; retry later, sign in from a device you used "
            "before, or use the link we e-mailed to the account's owner.",
            (counter.expires_at - now).total_seconds(),
        )

    def spend_account(self, tenant: str, identifiers: tuple[str, ...], now: datetime) -> bool:
        """Spend one failure of each identifier's budget; True when this failure used up one of them.

        Exactly one failure per window sees a budget reach its limit, so an episode mails once.
        """
        limit = self._settings.account_failure_limit
        window = timedelta(seconds=self._settings.failure_window)

        def step(counter: Counter | None) -> tuple[bool, dict[str, object] | None]:
            counter = live(counter, now)
            if counter is None:
                return limit == 1, _fresh(now, now + window, count=1)
            return counter.count + 1 == limit, {"count": counter.count + 1}

        spent = [self._swap(tenant, self._account_key(i), step) for i in dict.fromkeys(identifiers)]
        return any(spent)

    def forgive(self, tenant: str, identifiers: tuple[str, ...]) -> None:
        """End the account budgets and every per-source lock of these identifiers (the unlock link)."""
        for identifier in dict.fromkeys(identifiers):
            self._store.delete_counters(tenant, self._account_key(identifier))
            self._store.delete_counters(tenant, self._pair_prefix(identifier))


def _fresh(now: datetime, expires_at: datetime, count: int = 1) -> dict[str, object]:
    return {"count": count, "window_start": now, "blocked_until": None, "level": 0, "expires_at": expires_at}


def _pair_locked(wait: float) -> AuthError:
    return rate_limited("Too many failed sign-in attempts from your network for this account; retry later.", wait)
