"""Account flows: sign-up, the two-step login (password, then an e-mailed code), password change,
failed-login lockout and the e-mailed unlock. No gRPC and no database types: only the Store protocol.

Login never tells whether a user exists: unknown users get the same reason and spend the same bcrypt
time as a wrong password. Every counter lives in the store and moves by atomic increments, so parallel
guesses are all counted and the lockout holds across replicas and restarts.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import errors, otp, validation
from auth_server.domain.audit import Audit
from auth_server.domain.errors import AuthError, Code, FieldViolation, unauthenticated, validation_failed
from auth_server.domain.passwords import PasswordHasher
from auth_server.domain.sessions import Caller, Device, IssuedTokens, Sessions
from auth_server.infra.clock import utcnow
from auth_server.infra.config import Settings
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import Mailer, MailError
from auth_server.store.base import DuplicateKey, LoginChallenge, Store, User

log = logging.getLogger(__name__)

MAX_LOCKOUT = timedelta(hours=24)


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
    ) -> None:
        self._audit = audit
        self._store = store
        self._settings = settings
        self._keys = keys
        self._hasher = hasher
        self._mailer = mailer
        self._sessions = sessions

    # --- sign-up

    def signup(self, tenant: str, username: str, email: str, password: str, name: str, phone: str) -> User:
        username = validation.normalise_username(username)
        email = validation.normalise_email(email)
        name, phone = name.strip(), phone.strip()
        violations = (
            validation.check_username(username)
            + validation.check_email(email)
            + validation.check_password(password, "password", username=username, email=email)
            + validation.check_name(name)
            + validation.check_phone(phone)
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
            password_hash=self._hasher.hash(password),
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

    def login(self, tenant: str, username_or_email: str, password: str) -> LoginStarted:
        identifier = username_or_email.strip().lower()
        missing = [
            FieldViolation(f, "Required.")
            for f, v in (("username_or_email", identifier), ("password", password))
            if not v
        ]
        if missing:
            raise validation_failed(missing)
        user = self._store.find_user(tenant, identifier) if len(identifier) <= validation.MAX_IDENTIFIER_CHARS else None
        now = utcnow()
        if user is None:
            self._hasher.verify_dummy()
            self._audit.record(tenant, "login.failed", reason="unknown_user")
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        if user.is_locked(now):
            self._hasher.verify_dummy()  # no password check while locked: guessing gains nothing
            self._audit.record(tenant, "login.refused", user_id=user.id, reason="locked")
            raise unauthenticated(*errors.ACCOUNT_LOCKED)
        if not self._hasher.verify(password, user.password_hash):
            self._audit.record(tenant, "login.failed", user_id=user.id, reason="wrong_password")
            self._record_failure(tenant, user)
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        # Success resets the counters, unless a lock landed while we were hashing.
        user = self._store.update_user(
            tenant,
            user.id,
            set={"failed_logins": 0, "lockouts": 0},
            expect={"admin_locked": False, "locked_until": user.locked_until},
        )
        if user is None:
            raise unauthenticated(*errors.ACCOUNT_LOCKED)
        return self._send_code(tenant, user, now)

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

    def _record_failure(self, tenant: str, user: User) -> None:
        counted = self._store.update_user(tenant, user.id, inc={"failed_logins": 1})
        # Exactly one of any number of parallel failures sees the threshold itself, so it alone locks.
        if counted is not None and counted.failed_logins == self._settings.lockout_threshold:
            self._lock_out(tenant, counted)

    def _lock_out(self, tenant: str, user: User) -> None:
        now = utcnow()
        duration = min(timedelta(seconds=self._settings.lockout_duration) * 2 ** min(user.lockouts, 16), MAX_LOCKOUT)
        secret = secrets.token_urlsafe(32)
        token = f"{user.id}.{secret}"
        self._store.update_user(
            tenant,
            user.id,
            set={
                "locked_until": now + duration,
                "failed_logins": 0,
                "unlock_token_hash": self._keys.hash("unlock", token),
                "unlock_token_expires_at": now + timedelta(seconds=self._settings.unlock_ttl),
            },
            inc={"lockouts": 1},
        )
        revoked = self._store.revoke_sessions(tenant, user.id, now, "locked")
        self._store.consume_challenges(tenant, user.id, now)
        self._audit.record(
            tenant,
            "account.locked",
            user_id=user.id,
            reason="failed_logins",
            seconds=str(int(duration.total_seconds())),
            revoked_sessions=str(revoked),
        )
        link = f"{self._settings.public_url}/api/v1/auth/unlock?token={token}"
        try:
            self._mailer.send(
                user.email,
                "Your account was locked",
                f"Too many failed sign-in attempts locked your account for {int(duration.total_seconds() // 60)} "
                f"minutes.\nIf this was you, unlock it now:\n{link}\n",
            )
        except MailError:
            log.warning("unlock mail failed; the lock still expires by itself", exc_info=True)

    # --- login, step 2: the code

    def verify_otp(self, tenant: str, login_id: str, code: str, device: Device) -> IssuedTokens:
        invalid = unauthenticated("OTP_INVALID", "The code is not valid.")
        if not login_id or len(login_id) > 64 or not login_id.isalnum():
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
        if user is None or user.is_locked(now):
            raise unauthenticated(*errors.ACCOUNT_LOCKED)
        tokens = self._sessions.open(tenant, user, device)
        self._audit.record(tenant, "login.succeeded", user_id=user.id, session_id=tokens.session_id)
        return tokens

    # --- password change and unlock

    def change_password(self, caller: Caller, current: str, new: str) -> int:
        user = caller.user
        if not current:
            raise validation_failed([FieldViolation("current_password", "Required.")])
        violations = validation.check_password(new, "new_password", username=user.username, email=user.email)
        if violations:
            raise validation_failed(violations)
        if not self._hasher.verify(current, user.password_hash):
            self._audit.record(caller.tenant, "password.change_failed", user_id=user.id)
            self._record_failure(caller.tenant, user)
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        if new == current:
            raise validation_failed([FieldViolation("new_password", "Must differ from the current password.")])
        now = utcnow()
        changed = self._store.update_user(
            caller.tenant,
            user.id,
            set={"password_hash": self._hasher.hash(new), "password_changed_at": now},
            expect={"password_hash": user.password_hash},
        )
        if changed is None:  # changed concurrently by another session: make the caller retry
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        revoked = self._store.revoke_sessions(caller.tenant, user.id, now, "password_changed")
        self._audit.record(caller.tenant, "password.changed", user_id=user.id, revoked_sessions=str(revoked))
        return revoked

    def unlock_account(self, tenant: str, token: str) -> None:
        invalid = unauthenticated("TOKEN_INVALID", "The unlock token is not valid or has expired.")
        user_id, _, secret = token.partition(".")
        if not secret or len(token) > 256 or not user_id.isalnum():
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
        self._audit.record(tenant, "account.unlocked", user_id=user.id, via="mailed_token")
