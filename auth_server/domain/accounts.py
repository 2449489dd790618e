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

from auth_server.domain import errors, known_devices, otp, revocations, validation
from auth_server.domain.audit import Audit
from auth_server.domain.errors import AuthError, Code, FieldViolation, server_busy, unauthenticated, validation_failed
from auth_server.domain.passwords import PasswordHasher
from auth_server.domain.revocations import RevocationLog
from auth_server.domain.sessions import Caller, Device, IssuedTokens, Sessions
from auth_server.domain.throttle import Throttle
from auth_server.infra.clock import utcnow
from auth_server.infra.config import Settings
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import Mailer, MailError
from auth_server.store.base import DuplicateKey, LoginChallenge, Store, User

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


def mask_email(email: str) -> str:
    """'jane@example.com' -> 'j***@example.com'."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _rate_limited(retry_after: int) -> AuthError:
    return AuthError(
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"A code was sent moments ago; wait {retry_after} s before asking for another.",
        metadata={"retry_after_seconds": str(retry_after)},
    )


def _mail_unavailable() -> AuthError:
    return AuthError(Code.UNAVAILABLE, "MAIL_UNAVAILABLE", "The code could not be e-mailed; retry later.")


class Accounts:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        keys: KeyRing,
        hasher: PasswordHasher,
        mailer: Mailer,
        sessions: Sessions,
        audit: Audit,
        throttle: Throttle,
    ) -> None:
        self._throttle = throttle
        self._audit = audit
        self._store = store
        self._settings = settings
        self._keys = keys
        self._hasher = hasher
        self._mailer = mailer
        self._sessions = sessions
        self._revocations = RevocationLog(store)

    # --- sign-up

    def signup(
        self, tenant: str, username: str, email: str, password: str, name: str, phone: str, source: str = ""
    ) -> User:
        username = validation.normalise_username(username)
        email = validation.normalise_email(email)
        name, phone = name.strip(), phone.strip()
        violations = (
            validation.check_username(username)
            + validation.check_email(email)
            + validation.check_password(password, "password", username=username, email=email)
            + validation.check_name(name)
            + validation.check_phone(phone, self._settings.default_phone_region)[1]
        )
        if violations:
            raise validation_failed(violations)
        user = User(
            id=new_id(),
            username=username,
            email=email,
            name=name,
            phone=phone,
            role="user",
            password_hash=self._hasher.hash(password, source),
            created_at=utcnow(),
        )
        try:
            self._store.create_user(tenant, user)
        except DuplicateKey as dup:
            if dup.field == "email":
                raise AuthError(Code.ALREADY_EXISTS, "EMAIL_TAKEN", "This e-mail is already registered.") from None
            raise AuthError(Code.ALREADY_EXISTS, "USERNAME_TAKEN", "This username is taken.") from None
        self._audit.record(tenant, "user.created", user_id=user.id)
        return user

    # --- login, step 1: the password

    def login(
        self, tenant: str, username_or_email: str, password: str, source: str = "", device_token: str = ""
    ) -> LoginStarted:
        """Check the password and e-mail a code. `source` is the client IP; `device_token` a known device's."""
        identifier = username_or_email.strip().lower()
        missing = [
            FieldViolation(f, "Required.")
            for f, v in (("username_or_email", identifier), ("password", password))
            if not v
        ]
        if missing:
            raise validation_failed(missing)
        if not self._hasher.has_room(source):  # this source's share of the hashing queue is full
            raise server_busy()
        user = self._store.find_user(tenant, identifier) if len(identifier) <= validation.MAX_IDENTIFIER_CHARS else None
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
        return self._send_code(tenant, user, now)

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

    def _send_code(self, tenant: str, user: User, now: datetime) -> LoginStarted:
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
            raise _mail_unavailable() from None
        self._audit.record(tenant, "login.code_sent", user_id=user.id, login_id=challenge.id)
        return LoginStarted(challenge.id, challenge.expires_at, mask_email(user.email))

    # --- login, step 2: the code

    def verify_otp(self, tenant: str, login_id: str, code: str, device: Callable[[], Device]) -> SignedIn:
        """Redeem a login's code; `device` describes the caller's device and is called only on success."""
        invalid = unauthenticated("OTP_INVALID", "The code is not valid.")
        if not login_id or len(login_id) > 64 or not (login_id.isascii() and login_id.isalnum()):
            raise invalid
        challenge = self._store.get_challenge(tenant, login_id)
        if challenge is None or challenge.consumed_at is not None:
            raise invalid
        if challenge.expires_at <= utcnow():
            raise unauthenticated("OTP_EXPIRED", "The code has expired; log in again for a new one.")
        # Count the attempt before comparing, atomically, so parallel guesses cannot exceed the limit.
        counted = self._store.update_challenge(tenant, login_id, inc={"attempts": 1}, expect={"consumed_at": None})
        if counted is None:
            raise invalid
        if counted.attempts > self._settings.otp_max_attempts:
            self._audit.record(tenant, "otp.attempts_exceeded", user_id=challenge.user_id, login_id=login_id)
            raise AuthError(
                Code.RESOURCE_EXHAUSTED, "OTP_ATTEMPTS_EXCEEDED", "Too many wrong codes; log in again for a new one."
            )
        if not otp.well_formed(code) or not self._keys.matches(challenge.otp_hash, "otp", login_id, code):
            left = self._settings.otp_max_attempts - counted.attempts
            self._audit.record(tenant, "otp.failed", user_id=challenge.user_id, login_id=login_id)
            self._code_failed(tenant, challenge.user_id)
            raise AuthError(
                Code.UNAUTHENTICATED, "OTP_INVALID", "The code is not valid.", metadata={"attempts_left": str(left)}
            )
        now = utcnow()
        if (
            self._store.update_challenge(tenant, login_id, set={"consumed_at": now}, expect={"consumed_at": None})
            is None
        ):
            raise invalid  # a parallel call redeemed it first: a code works once
        user = self._store.get_user(tenant, challenge.user_id)
        if user is None or user.admin_locked:
            raise unauthenticated(*errors.ACCOUNT_LOCKED)
        tokens = self._sessions.open(tenant, user, device())
        self._audit.record(tenant, "login.succeeded", user_id=user.id, session_id=tokens.session_id)
        return SignedIn(tokens, known_devices.issue(self._keys, user, now))

    def _code_failed(self, tenant: str, user_id: str) -> None:
        """A wrong code spends the account's budget under both its names (see throttle.py)."""
        user = self._store.get_user(tenant, user_id)
        if user is None:
            return
        now = utcnow()
        if self._throttle.spend_account(tenant, (user.username, user.email), now):
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
        if not self._check_password(caller.tenant, user.username, user, current, source, utcnow()):
            self._audit.record(caller.tenant, "password.change_failed", user_id=user.id)
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        if new == current:
            raise validation_failed([FieldViolation("new_password", "Must differ from the current password.")])
        now = utcnow()
        changed = self._store.update_user(
            caller.tenant,
            user.id,
            set={"password_hash": self._hasher.hash(new, source), "password_changed_at": now},
            expect={"password_hash": user.password_hash},
        )
        if changed is None:  # changed concurrently by another session: make the caller retry
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        revoked = self._store.revoke_sessions(caller.tenant, user.id, now, "password_changed")
        self._revocations.user(caller.tenant, revocations.PASSWORD_CHANGED, user.id)
        # A login started with the old password must not finish after the change.
        self._store.consume_challenges(caller.tenant, user.id, now)
        self._audit.record(caller.tenant, "password.changed", user_id=user.id, revoked_sessions=str(revoked))
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
        self._throttle.forgive(tenant, (user.username, user.email))
        self._audit.record(tenant, "account.unlocked", user_id=user.id, via="mailed_token")
