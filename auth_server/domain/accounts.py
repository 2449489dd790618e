"""Account flows: sign-up, the two-step login (password, then an e-mailed code), password change and
the e-mailed unlock. No gRPC and no database types: only the Store protocol.

Login never tells whether a user exists: unknown users get the same reason, spend the same bcrypt
time as a wrong password and meet the same throttles (throttle.py), whose counters live in the store
and change atomically, so they hold across replicas and restarts. A failure never ends a session and
never locks the owner out: only an admin's lock answers ACCOUNT_LOCKED.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import errors, known_devices, new_device, otp, revocations, validation
from auth_server.domain.codes import mail_unavailable, mask_email
from auth_server.domain.errors import AuthError, Code, FieldViolation, server_busy, unauthenticated, validation_failed
from auth_server.domain.parts import AccountFlow, Parts
from auth_server.domain.sessions import Caller, Device, IssuedTokens
from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.infra.mail import MailError
from auth_server.store.base import LoginChallenge, User

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedIn:
    tokens: IssuedTokens
    device_token: str  # proof of a known device for later logins (known_devices.py)


@dataclass(frozen=True)
class LoginStarted:
    login_id: str
    expires_at: datetime
    delivery_hint: str


def account_names(user: User) -> tuple[str, ...]:
    """Every name the account can be signed in by, as the throttles key them (the phone in E.164)."""
    return (user.username, user.email, user.phone) if user.phone else (user.username, user.email)


def _rate_limited(retry_after: int) -> AuthError:
    return AuthError(
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"A code was sent moments ago; wait {retry_after} s before asking for another.",
        metadata={"retry_after_seconds": str(retry_after)},
    )


class Accounts(AccountFlow):
    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        self._revocations = parts.sessions.revocations
        self._notices = new_device.NewDeviceNotices(parts.store, parts.settings, parts.keys, parts.mailer, parts.audit)

    # --- login, step 1: the password

    def login(
        self, tenant: str, username_or_email: str, password: str, source: str = "", device_token: str = ""
    ) -> LoginStarted:
        """Check the password and e-mail a code. `source` is the client IP; `device_token` a known device's."""
        # A username, an e-mail or a phone number; every spelling of one phone is one throttle key.
        parsed = validation.parse_identifier(username_or_email, self._settings.default_phone_region)
        identifier = parsed.key
        missing = [
            FieldViolation(f, "Required.")
            for f, v in (("username_or_email", parsed.text), ("password", password))
            if not v
        ]
        if missing:
            raise validation_failed(missing)
        if not self._hasher.has_room(source):  # this source's share of the hashing queue is full
            raise server_busy()
        user = self.find_account(tenant, parsed)
        now = utcnow()
        known = user is not None and known_devices.is_known(
            self._keys, device_token, user, now, self._settings.device_token_ttl
        )
        # Refusals come before any bcrypt work and read the same for an identifier no account has.
        refusal = self._throttle.pair_blocked(tenant, identifier, source, now)
        if refusal is None and not known:
            refusal = self._throttle.account_over_budget(tenant, identifier, now)
        if refusal is not None:
            self._audit.record(tenant, "login.refused", user_id=user.id if user else "", reason="rate_limited")
            raise refusal
        if not self._check_password(tenant, identifier, user, password, source, now):
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        assert user is not None  # _check_password is never true without a user
        if user.admin_locked:  # told only to whoever knows the password
            self._audit.record(tenant, "login.refused", user_id=user.id, reason="admin_locked")
            raise unauthenticated(*errors.ACCOUNT_LOCKED)
        return self._send_code(tenant, user, now, known_device=known)

    def find_account(self, tenant: str, parsed: validation.Identifier) -> User | None:
        """The account an identifier names: a username or e-mail match first, then the phone's.

        Every lookup of `parsed.lookups` is made even after a match, so the number of store reads
        depends on how the identifier is spelled, never on whether (or which) account has it.
        """
        if len(parsed.text) > validation.MAX_IDENTIFIER_CHARS:
            return None
        found = [self._store.find_user(tenant, lookup) for lookup in parsed.lookups]
        return next((user for user in found if user is not None), None)

    def check_own_password(self, tenant: str, user: User, password: str, source: str) -> bool:
        """The throttled check a signed-in caller's password meets (ChangePassword, ChangeEmail):
        counted as a login by the username, so a stolen access token is no password oracle."""
        return self._check_password(tenant, user.username, user, password, source, utcnow())

    def _check_password(
        self, tenant: str, identifier: str, user: User | None, password: str, source: str, now: datetime
    ) -> bool:
        """One throttled password check: counted per source and per (identifier, source), and on
        failure against the identifier's account budget. A failure never ends a session."""
        ordinal = self._throttle.begin_check(tenant, identifier, source, now)
        try:
            if user is None:
                self._hasher.verify_dummy(source)
                ok = False
            else:
                ok = self._hasher.verify(password, user.password_hash, source)
        except AuthError:  # the hashing gate was full: nothing was checked, so nothing is counted
            self._throttle.pair_release(tenant, identifier, source, now)
            self._throttle.refund_source(tenant, source, now)
            raise
        if ok:
            self._throttle.pair_succeeded(tenant, identifier, source, now)
            return True
        user_id = user.id if user else ""
        self._audit.record(tenant, "login.failed", user_id=user_id, reason="wrong_password" if user else "unknown_user")
        locked_for = self._throttle.pair_failed(tenant, identifier, source, ordinal, now)
        if locked_for is not None:
            self._audit.record(
                tenant, "login.source_locked", user_id=user_id, seconds=str(int(locked_for.total_seconds()))
            )
        if self._throttle.spend_account(tenant, (identifier,), now) and user is not None:
            self._budget_spent(tenant, user, now)
        return False

    def _budget_spent(self, tenant: str, user: User, now: datetime) -> None:
        """The account's failure budget just ran out: mail the owner an unlock link, once per episode."""
        secret = secrets.token_urlsafe(32)
        token = f"{user.id}.{secret}"
        self._store.update_user(
            tenant,
            user.id,
            set={
                "unlock_token_hash": self._keys.hash("unlock", token),
                "unlock_token_expires_at": now + timedelta(seconds=self._settings.unlock_ttl),
            },
        )
        window = self._settings.failure_window
        self._audit.record(tenant, "account.throttled", user_id=user.id, seconds=str(window))
        link = f"{self._settings.public_url}/api/v1/auth/unlock?token={token}"
        try:
            self._mailer.send(
                user.email,
                "Failed sign-in attempts on your account",
                "There were many failed attempts to sign in to your account, so sign-ins from devices you have "
                f"not used before are paused for up to {max(1, window // 60)} minutes. Your signed-in devices "
                "are not affected.\n"
                f"If this was you, lift the pause now:\n{link}\n"
                "If it was not you, nothing else is needed; consider changing your password.\n",
            )
        except MailError:
            log.warning("unlock mail failed; the pause still ends by itself", exc_info=True)

    def _send_code(self, tenant: str, user: User, now: datetime, known_device: bool = False) -> LoginStarted:
        interval = self._settings.otp_resend_interval
        last = user.last_otp_sent_at
        if interval and last is not None and now - last < timedelta(seconds=interval):
            raise _rate_limited(interval - int((now - last).total_seconds()))
        # Claim the send slot atomically: of two concurrent logins only one mails a code.
        if (
            self._store.update_user(tenant, user.id, set={"last_otp_sent_at": now}, expect={"last_otp_sent_at": last})
            is None
        ):
            raise _rate_limited(interval)
        self._store.consume_challenges(tenant, user.id, now)  # only the newest code is valid
        code = otp.new_code()
        challenge_id = new_id()
        challenge = LoginChallenge(
            id=challenge_id,
            user_id=user.id,
            otp_hash=otp.hash_code(self._keys, challenge_id, code),
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.otp_ttl),
            payload=new_device.login_payload(known_device),  # VerifyOtp's new-device rule reads it
        )
        self._store.create_challenge(tenant, challenge)
        minutes = max(1, self._settings.otp_ttl // 60)
        try:
            self._mailer.send(
                user.email,
                "Your sign-in code",
                f"Your sign-in code is {code}\n\nIt expires in {minutes} minutes and works once.\n"
                "If you did not try to sign in, change your password.\n",
            )
        except MailError:
            log.warning("login code mail failed", exc_info=True)
            self._store.update_challenge(tenant, challenge.id, set={"consumed_at": now})
            self._store.update_user(tenant, user.id, set={"last_otp_sent_at": last}, expect={"last_otp_sent_at": now})
            raise mail_unavailable() from None
        self._audit.record(tenant, "login.code_sent", user_id=user.id, login_id=challenge.id)
        return LoginStarted(challenge.id, challenge.expires_at, mask_email(user.email))

    # --- login, step 2: the code

    def verify_otp(self, tenant: str, login_id: str, code: str, device: Callable[[], Device]) -> SignedIn:
        """Redeem a login's code; `device` describes the caller's device and is called only on success."""
        # Only a login's code opens a session: a reset or sign-up code is no login code.
        challenge = self._codes.check(
            tenant,
            login_id,
            code,
            kind="login",
            again="log in again for a new one",
            on_wrong=lambda challenge: self._code_failed(tenant, challenge.user_id),
        )
        now = utcnow()
        self._codes.consume(tenant, challenge, now)
        user = self._store.get_user(tenant, challenge.user_id)
        if user is None or user.admin_locked:
            raise unauthenticated(*errors.ACCOUNT_LOCKED)
        this_device = device()
        known = self._notices.is_known(tenant, user, challenge.payload, this_device, now)  # before it opens
        tokens = self._sessions.open(tenant, user, this_device)
        self._audit.record(tenant, "login.succeeded", user_id=user.id, session_id=tokens.session_id)
        if not known:
            try:
                self._notices.notify(tenant, new_device.SignIn(user, tokens.session_id, this_device, now))
            except Exception:  # the session is open: a notice that failed (the store) must not undo it
                log.warning("new sign-in notice failed; the sign-in stands", exc_info=True)
        return SignedIn(tokens, known_devices.issue(self._keys, user, now))

    def _code_failed(self, tenant: str, user_id: str, also: tuple[str, ...] = ()) -> None:
        """A wrong code spends the account's budget under every one of its names (account_names; see
        throttle.py), and under `also` (the identifier a password reset was asked for)."""
        user = self._store.get_user(tenant, user_id)
        if user is None:
            return
        now = utcnow()
        if self._throttle.spend_account(tenant, (*account_names(user), *also), now):
            self._budget_spent(tenant, user, now)

    # --- password change and unlock

    def change_password(self, caller: Caller, current: str, new: str, source: str = "") -> int:
        user = caller.user
        if not current:
            raise validation_failed([FieldViolation("current_password", "Required.")])
        violations = validation.check_password(new, "new_password", username=user.username, email=user.email)
        if violations:
            raise validation_failed(violations)
        # Throttled like a login by username: a stolen access token must not become a password oracle.
        if not self.check_own_password(caller.tenant, user, current, source):
            self._audit.record(caller.tenant, "password.change_failed", user_id=user.id)
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        if new == current:
            raise validation_failed([FieldViolation("new_password", "Must differ from the current password.")])
        revoked = self.set_password(caller.tenant, user, new, source)
        if revoked is None:  # changed concurrently by another session: make the caller retry
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        self._audit.record(caller.tenant, "password.changed", user_id=user.id, revoked_sessions=str(revoked))
        return revoked

    def set_password(self, tenant: str, user: User, new: str, source: str, *, reset: bool = False) -> int | None:
        """Set a new (already validated) password and end everything the old one opened: every session
        (a PASSWORD_CHANGED revocation entry), every known device (`password_changed_at` voids their
        tokens), pending logins and resets. A reset also clears the unlock token and forgives the
        account's throttles: the owner proved the mailbox. How many sessions ended; None when the
        password changed meanwhile (nothing was done). ChangePassword and ResetPassword both end here.
        """
        now = utcnow()
        fields: dict[str, object] = {"password_hash": self._hasher.hash(new, source), "password_changed_at": now}
        if reset:
            fields |= {"unlock_token_hash": None, "unlock_token_expires_at": None, "locked_until": None}
            fields |= {"failed_logins": 0}
        if self._store.update_user(tenant, user.id, set=fields, expect={"password_hash": user.password_hash}) is None:
            return None
        revoked = self._store.revoke_sessions(tenant, user.id, now, "password_reset" if reset else "password_changed")
        self._revocations.user(tenant, revocations.PASSWORD_CHANGED, user.id)
        # A login (or a reset) started before the change must not finish after it.
        self._store.consume_challenges(tenant, user.id, now)
        self._store.consume_challenges(tenant, user.id, now, kind="reset")
        if reset:
            self._throttle.forgive(tenant, tuple(i for i in (user.username, user.email, user.phone) if i))
        return revoked

    def unlock_account(self, tenant: str, token: str) -> None:
        invalid = unauthenticated("TOKEN_INVALID", "The unlock token is not valid or has expired.")
        user_id, _, secret = token.partition(".")
        if not secret or len(token) > 256 or not (user_id.isascii() and user_id.isalnum()):
            raise invalid
        user = self._store.get_user(tenant, user_id)
        if (
            user is None
            or user.unlock_token_hash is None
            or user.unlock_token_expires_at is None
            or user.unlock_token_expires_at <= utcnow()
            or not self._keys.matches(user.unlock_token_hash, "unlock", token)
        ):
            raise invalid
        unlocked = self._store.update_user(
            tenant,
            user.id,
            set={"locked_until": None, "failed_logins": 0, "unlock_token_hash": None, "unlock_token_expires_at": None},
            expect={"unlock_token_hash": user.unlock_token_hash},
        )
        if unlocked is None:
            raise invalid  # redeemed concurrently: single use
        # The owner vouched: end the account's failure budget and every per-source lock on its names.
        self._throttle.forgive(tenant, account_names(user))
        self._audit.record(tenant, "account.unlocked", user_id=user.id, via="mailed_token")
