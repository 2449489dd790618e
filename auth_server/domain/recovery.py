"""Forgotten password (RequestPasswordReset, ResetPassword) and the "This wasn't me" link of a new-device
sign-in notice (ReportSignIn, which ends that session and starts a reset). No gRPC, no database types.

A reset request never tells whether an account exists: it answers a new reset_id every time and does
the same store work either way (the challenge is created for an unknown identifier too, with a hash
no code matches), and the mail is handed to a background sender, so SMTP time is never in the answer.
Its throttles key on the identifier string, as Login's do: the per-source rate (Throttle.admit_source)
and a resend interval per identifier (AUTH_OTP_RESEND_INTERVAL), so nobody can mail-bomb a mailbox and
a refusal reads the same for every identifier.

A reset id takes AUTH_OTP_MAX_ATTEMPTS codes, then it is dead (OTP_ATTEMPTS_EXCEEDED, as VerifyOtp).
Wrong codes also spend the account's failure budget like wrong login codes, and a spent budget refuses
ResetPassword, so asking for new reset ids gives no more guesses than logging in again would. The
password itself is set by Accounts.set_password, the step ChangePassword ends in too.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import new_device, otp, validation
from auth_server.domain.accounts import Accounts
from auth_server.domain.codes import code_invalid
from auth_server.domain.errors import AuthError, FieldViolation, unauthenticated, validation_failed
from auth_server.domain.parts import AccountFlow, Parts
from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.infra.mail import MailError
from auth_server.store.base import LoginChallenge, User

log = logging.getLogger(__name__)

KIND = "reset"
_HASH_LABEL = "reset"  # reset codes are hashed apart from login codes: one can never redeem the other
_UNUSABLE = b"\x00" * 32  # the stored hash of an unknown identifier's reset: no keyed hash equals it
_MAIL_THREADS = 2
_STAND_IN = "~"  # prefix of the owner of an unknown identifier's resets


@dataclass(frozen=True)
class ResetStarted:
    reset_id: str
    expires_at: datetime


def _tokencode_invalid() -> AuthError:
    return unauthenticated("TOKEN_INVALID", "This link is not valid, was already used or has expired.")


class Recovery(AccountFlow):
    def __init__(self, parts: Parts, accounts: Accounts) -> None:
        super().__init__(parts)
        self._revocations = parts.sessions.revocations
        # The shared steps (the password step, the budget a wrong code spends) live with the login's.
        self._accounts = accounts
        # Mail leaves off the request path, so a known account answers no slower than an unknown one.
        self._outbox = ThreadPoolExecutor(max_workers=_MAIL_THREADS, thread_name_prefix="reset-mail")

    # --- RequestPasswordReset

    def request_reset(self, tenant: str, username_or_email: str, source: str = "") -> ResetStarted:
        """Start a reset for whoever the identifier names; the same answer when it names no one."""
        # Read as Login reads it: a username, an e-mail, or a phone number in any spelling.
        named = validation.parse_identifier(username_or_email, self._settings.default_phone_region)
        if not named.text:
            raise validation_failed([FieldViolation("username_or_email", "Required.")])
        identifier = named.key  # what throttles count under, as Login's do
        now = utcnow()
        self._throttle.admit_source(tenant, source, now, "reset")  # per source, at Login's rate
        # One reset mail per identifier string per AUTH_OTP_RESEND_INTERVAL, whether or not an account has
        # it, so the refusal tells nothing.
        self._codes.claim_send(tenant, "reset:" + self._keys.hash("reset-interval", identifier)[:16].hex(), now)
        user = self._accounts.find_account(tenant, named)
        if user is not None and user.admin_locked:
            user = None  # an admin's lock is lifted by an admin, not by a reset; answered as for no one
        started = self._start(tenant, user, identifier, now)
        self._audit.record(
            tenant, "password.reset_requested", user_id=user.id if user else "", reset_id=started.reset_id
        )
        return started

    def _start(self, tenant: str, user: User | None, identifier: str, now: datetime) -> ResetStarted:
        """Create the reset challenge (for an unknown identifier too: the same writes) and queue its mail.
        A new reset makes the user's older reset ids dead."""
        reset_id = new_id()
        code = otp.new_code()
        code_hash = self._keys.hash(_HASH_LABEL, reset_id, code)
        owner = user.id if user else self._stand_in(identifier)
        self._store.consume_challenges(tenant, owner, now, kind=KIND)
        challenge = LoginChallenge(
            id=reset_id,
            user_id=owner,
            otp_hash=code_hash if user else _UNUSABLE,
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.reset_ttl),
            kind=KIND,
            # The identifier asked for: a wrong code spends its budget too (it may be the phone).
            payload=json.dumps({"identifier": identifier}),
        )
        self._store.create_challenge(tenant, challenge)
        if user is not None:
            minutes = max(1, self._settings.reset_ttl // 60)
            body = (
                f"Your password reset code is {code}\n\nIt expires in {minutes} minutes and works once.\n"
                "If you did not ask to reset your password, ignore this mail: your password stays as it is.\n"
            )
            self._send_later(user.email, "Your password reset code", body)
        return ResetStarted(reset_id, challenge.expires_at)

    def _stand_in(self, identifier: str) -> str:
        """The owner an unknown identifier's resets are filed under: no user has it ('~' is no id
        character), and one identifier always gets the same one, so a second request supersedes the
        first with the same store work as for an account (a row written, not a no-op)."""
        return _STAND_IN + self._keys.hash("reset-stand-in", identifier)[:15].hex()

    def _send_later(self, to: str, subject: str, body: str) -> None:
        def send() -> None:
            try:
                self._mailer.send(to, subject, body)
            except MailError:
                log.warning("password reset mail failed; the owner can ask again", exc_info=True)
            except Exception:
                log.exception("password reset mail failed")

        self._outbox.submit(send)

    # --- ResetPassword

    def reset_password(self, tenant: str, reset_id: str, code: str, new_password: str, source: str = "") -> int:
        """Redeem a reset's code and set the new password; how many sessions ended."""
        # The rules that need no account first (they tell nothing about one), so a too-short password
        # does not spend an attempt; the rules naming the username and e-mail once the code is right.
        violations = validation.check_password(new_password, "new_password")
        if violations:
            raise validation_failed(violations)
        now = utcnow()

        def refuse_over_budget(challenge: LoginChallenge) -> None:
            identifier = self._identifier_of(challenge)
            refusal = self._throttle.account_over_budget(tenant, identifier, now) if identifier else None
            if refusal is not None:
                raise refusal

        def spend_budget(challenge: LoginChallenge) -> None:
            self._code_failed(tenant, challenge.user_id, self._identifier_of(challenge), now)

        challenge = self._codes.check(
            tenant,
            reset_id,
            code,
            kind=KIND,
            again="ask for a new reset code",
            label=_HASH_LABEL,
            before_count=refuse_over_budget,
            on_wrong=spend_budget,
        )
        user = self._store.get_user(tenant, challenge.user_id)
        if user is None or user.admin_locked:
            raise code_invalid()
        violations = validation.check_password(new_password, "new_password", username=user.username, email=user.email)
        if violations:
            raise validation_failed(violations)  # the reset id stays open: try another password
        self._codes.consume(tenant, challenge, now)
        revoked = self._accounts.set_password(tenant, user, new_password, source, reset=True)
        if revoked is None:  # the password changed between our read and our write: the reset is spent
            raise code_invalid()
        self._audit.record(tenant, "password.reset", user_id=user.id, revoked_sessions=str(revoked))
        when = now.strftime("%Y-%m-%d %H:%M UTC")
        self._send_later(
            user.email,
            "Your password was reset",
            f"Your password was reset at {when}. Every device was signed out.\n"
            'If this was not you, reset it again with "Forgot password" and check your mailbox\'s security.\n',
        )
        return revoked

    @staticmethod
    def _identifier_of(challenge: LoginChallenge) -> str:
        try:
            value = json.loads(challenge.payload or "{}").get("identifier", "")
        except (ValueError, AttributeError):
            return ""
        return value if isinstance(value, str) else ""

    def _code_failed(self, tenant: str, user_id: str, identifier: str, now: datetime) -> None:
        """A wrong reset code spends the failure budget as a wrong login code does; for an identifier no
        account has, the identifier's own budget, so the two read the same at the next Login."""
        also = (identifier,) if identifier else ()
        if user_id and not user_id.startswith(_STAND_IN):
            self._accounts._code_failed(tenant, user_id, also)
        elif also:
            self._throttle.spend_account(tenant, also, now)

    # --- ReportSignIn

    def report_sign_in(self, tenant: str, token: str, source: str = "") -> ResetStarted:
        """Redeem a "This wasn't me" link: end that sign-in's session and start a password reset."""
        now = utcnow()
        self._throttle.admit_source(tenant, source, now, "reset")
        parsed = new_device.decode_token(token)
        if parsed is None:
            raise _tokencode_invalid()
        challenge_id, whole = parsed
        challenge = self._store.get_challenge(tenant, challenge_id)
        if (
            challenge is None
            or challenge.kind != new_device.KIND
            or challenge.consumed_at is not None
            or challenge.expires_at <= now
            or not self._keys.matches(challenge.otp_hash, new_device.HASH_LABEL, whole)
        ):
            raise _tokencode_invalid()
        if (
            self._store.update_challenge(tenant, challenge_id, set={"consumed_at": now}, expect={"consumed_at": None})
            is None
        ):
            raise _tokencode_invalid()  # redeemed concurrently: single use
        user = self._store.get_user(tenant, challenge.user_id)
        if user is None:
            raise _tokencode_invalid()
        session_id = new_device.session_of(challenge)
        ended = session_id and self._store.update_session(
            tenant, session_id, set={"revoked_at": now, "revoke_reason": "reported"}, expect={"revoked_at": None}
        )
        if ended:
            self._revocations.session(tenant, session_id, user.id)
        started = self._start(tenant, user, user.email, now)
        self._audit.record(tenant, "signin.reported", user_id=user.id, session_id=session_id, reset_id=started.reset_id)
        return started
