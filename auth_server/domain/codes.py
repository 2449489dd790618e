"""Mailed one-time codes, as every flow that mails one uses them (login, sign-up, password reset, e-mail
change): one mail per recipient per AUTH_OTP_RESEND_INTERVAL, and redeeming a code against its challenge.

Written once so the flows cannot drift apart: an attempt is counted before the code is compared, so
parallel guesses never exceed AUTH_OTP_MAX_ATTEMPTS; of parallel right codes exactly one redeems; and
the answers are the same everywhere: OTP_INVALID (with attempts_left after a wrong code), OTP_EXPIRED,
OTP_ATTEMPTS_EXCEEDED (then even the right code is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from auth_server.domain import otp
from auth_server.domain.audit import Audit
from auth_server.domain.counters import live, swap
from auth_server.domain.errors import AuthError, Code, rate_limited, unauthenticated
from auth_server.infra.clock import utcnow
from auth_server.infra.config import Settings
from auth_server.infra.keys import KeyRing
from auth_server.store.base import Counter, LoginChallenge, Store


def mask_email(email: str) -> str:
    """'jane@example.com' -> 'j***@example.com': where a code went, as the caller is told."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def code_invalid(attempts_left: int | None = None) -> AuthError:
    metadata = {"attempts_left": str(attempts_left)} if attempts_left is not None else None
    return AuthError(Code.UNAUTHENTICATED, "OTP_INVALID", "The code is not valid.", metadata=metadata)


def mail_unavailable() -> AuthError:
    return AuthError(Code.UNAVAILABLE, "MAIL_UNAVAILABLE", "The code could not be e-mailed; retry later.")


def _well_formed_id(value: str) -> bool:
    return 0 < len(value) <= 64 and value.isascii() and value.isalnum()


class MailedCodes:
    def __init__(self, store: Store, settings: Settings, keys: KeyRing, audit: Audit) -> None:
        self._store = store
        self._settings = settings
        self._keys = keys
        self._audit = audit

    # --- the resend interval

    def claim_send(self, tenant: str, key: str, now: datetime) -> None:
        """Take the recipient's send slot (`key` names it: a keyed digest, never an address), or refuse
        with RATE_LIMITED while the last mail is younger than AUTH_OTP_RESEND_INTERVAL."""
        interval = self._settings.otp_resend_interval
        if not interval:
            return
        until = now + timedelta(seconds=interval)

        def step(counter: Counter | None) -> tuple[float | None, dict[str, object] | None]:
            held = live(counter, now)
            if held is not None and held.blocked_until is not None and held.blocked_until > now:
                return (held.blocked_until - now).total_seconds(), None
            return None, {"blocked_until": until, "expires_at": until, "window_start": now}

        wait = swap(self._store, tenant, key, step)
        if wait is not None:
            raise rate_limited(f"A code was sent moments ago; wait {int(wait) + 1} s before asking for another.", wait)

    def release_send(self, tenant: str, key: str, now: datetime) -> None:
        """Give back the slot taken at `now`: nothing was mailed (a later claim keeps its own)."""
        if not self._settings.otp_resend_interval:
            return

        def step(counter: Counter | None) -> tuple[None, dict[str, object] | None]:
            held = live(counter, now)
            if held is None or held.window_start != now:
                return None, None
            return None, {"blocked_until": None, "expires_at": now}

        swap(self._store, tenant, key, step)

    # --- redeeming

    def check(
        self,
        tenant: str,
        challenge_id: str,
        code: str,
        *,
        kind: str,
        again: str,
        label: str = "otp",
        owner: str | None = None,
        before_count: Callable[[LoginChallenge], None] | None = None,
        on_wrong: Callable[[LoginChallenge], None] | None = None,
    ) -> LoginChallenge:
        """The open challenge of `kind` that `code` answers, its attempt counted; not yet consumed.

        `again` ends the expiry message ("log in again for a new one"); `label` is the one the code's hash
        was made with; `owner`: only this user's challenge (another's reads as unknown); `before_count` may
        refuse before an attempt is spent; `on_wrong` runs after a wrong code (a failure budget).
        """
        if not _well_formed_id(challenge_id):
            raise code_invalid()
        challenge = self._store.get_challenge(tenant, challenge_id)
        if (
            challenge is None
            or challenge.kind != kind
            or challenge.consumed_at is not None
            or (owner is not None and challenge.user_id != owner)
        ):
            raise code_invalid()
        if challenge.expires_at <= utcnow():
            raise unauthenticated("OTP_EXPIRED", f"The code has expired; {again}.")
        if before_count is not None:
            before_count(challenge)
        counted = self._store.update_challenge(tenant, challenge_id, inc={"attempts": 1}, expect={"consumed_at": None})
        if counted is None:
            raise code_invalid()
        details = {"kind": kind, "challenge_id": challenge_id}
        if counted.attempts > self._settings.otp_max_attempts:
            self._audit.record(tenant, "otp.attempts_exceeded", user_id=challenge.user_id, **details)
            raise AuthError(Code.RESOURCE_EXHAUSTED, "OTP_ATTEMPTS_EXCEEDED", f"Too many wrong codes; {again}.")
        if not otp.well_formed(code) or not self._keys.matches(challenge.otp_hash, label, challenge_id, code):
            self._audit.record(tenant, "otp.failed", user_id=challenge.user_id, **details)
            if on_wrong is not None:
                on_wrong(challenge)
            raise code_invalid(self._settings.otp_max_attempts - counted.attempts)
        return challenge

    def consume(self, tenant: str, challenge: LoginChallenge, now: datetime) -> None:
        """Mark a checked challenge used; OTP_INVALID when a parallel call redeemed it first."""
        if (
            self._store.update_challenge(tenant, challenge.id, set={"consumed_at": now}, expect={"consumed_at": None})
            is None
        ):
            raise code_invalid()
