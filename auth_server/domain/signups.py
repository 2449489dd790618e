"""Verified sign-up without enumeration: Signup mails a code, VerifySignup redeems it and creates the user.

Signup never tells whether an e-mail has an account. Both cases do the same work in the same order (the
same store reads and writes, one bcrypt, one pending record, one mail) and answer with the same fields:
a new address is mailed a 6-digit code; an address that has an account is mailed a notice without one,
and its signup_id can never be redeemed, since its stored hash is of a secret no 6-digit code equals.
The refusals (per-source rate, resend interval per address) read the same for both.

Usernames are public handles, so USERNAME_TAKEN stays. A pending sign-up holds its username until it
expires: a counter keyed by the username whose `owner` is a digest of the e-mail, taken by compare-and-
swap, so of two parallel sign-ups for one username only one gets it, and a retry from the same address
takes its own hold over. The hold is taken for an address that has an account too: otherwise a second
sign-up for the same username would tell whether the first address was new.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import otp, validation
from auth_server.domain.codes import mail_unavailable, mask_email
from auth_server.domain.counters import live, swap
from auth_server.domain.errors import AuthError, Code, server_busy, validation_failed
from auth_server.domain.parts import AccountFlow
from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import MailError
from auth_server.store.base import Counter, DuplicateKey, LoginChallenge, User

log = logging.getLogger(__name__)

KIND = "signup"
FORGOT_PATH = "/api/v1/auth/password/forgot"


@dataclass(frozen=True)
class SignupStarted:
    signup_id: str
    expires_at: datetime
    delivery_hint: str


def hold_key(keys: KeyRing, username: str) -> str:
    """The counter that holds a (normalised) username for a pending sign-up: a keyed digest, not the name."""
    return f"signup-hold:{keys.hash('signup-hold', username)[:16].hex()}"


def _username_taken() -> AuthError:
    return AuthError(Code.ALREADY_EXISTS, "USERNAME_TAKEN", "This username is taken.")


class Signups(AccountFlow):
    # -- counter keys: keyed digests, never the username or address itself

    def _digest(self, purpose: str, value: str) -> str:
        return self._keys.hash(purpose, value)[:16].hex()

    def _hold_key(self, username: str) -> str:
        return hold_key(self._keys, username)

    def _resend_key(self, email: str) -> str:
        return f"signup-mail:{self._digest('signup-mail', email)}"

    # -- Signup

    def start(
        self, tenant: str, username: str, email: str, password: str, name: str, phone: str, source: str = ""
    ) -> SignupStarted:
        """Validate, hold the username and mail a code (or, for an address with an account, a notice)."""
        username = validation.normalise_username(username)
        email = validation.normalise_email(email)
        name = name.strip()
        phone, phone_violations = validation.check_phone(phone, self._settings.default_phone_region)
        violations = (
            validation.check_username(username)
            + validation.check_email(email)
            + validation.check_password(password, "password", username=username, email=email)
            + validation.check_name(name)
            + phone_violations
        )
        if violations:
            raise validation_failed(violations)
        if not self._hasher.has_room(source):  # this source's share of the hashing queue is full
            raise server_busy()
        holder = self._digest("signup-owner", email)
        now = utcnow()
        # Usernames are public: an account's, or another address's live hold, is told at once.
        if self._username_owned(tenant, username, holder, now):
            raise _username_taken()
        # Refusals come before any bcrypt work and do not depend on whether the address has an account.
        self._throttle.admit_source(tenant, source, now, "signup")
        self._codes.claim_send(tenant, self._resend_key(email), now)
        try:
            expires_at = now + timedelta(seconds=self._settings.signup_ttl)
            if not self._take_hold(tenant, username, holder, expires_at, now):
                raise _username_taken()
            password_hash = self._hasher.hash(password, source)
        except AuthError:
            self._codes.release_send(tenant, self._resend_key(email), now)
            raise
        existing = self._store.find_user(tenant, email)
        if existing is not None and existing.email != email:
            existing = None  # find_user also matches usernames and phones; only the address counts here
        signup_id = new_id()
        code = otp.new_code()
        # For a known address the stored hash is of a secret that is not six digits: nothing redeems it.
        secret = code if existing is None else secrets.token_hex(16)
        payload = {
            "username": username,
            "email": email,
            "name": name,
            "phone": phone,
            "password_hash": base64.b64encode(password_hash).decode(),
        }
        challenge = LoginChallenge(
            id=signup_id,
            user_id="",
            otp_hash=otp.hash_code(self._keys, signup_id, secret),
            created_at=now,
            expires_at=expires_at,
            kind=KIND,
            payload=json.dumps(payload),
        )
        self._store.create_challenge(tenant, challenge)
        try:
            if existing is None:
                self._mail_code(email, code)
            else:
                self._mail_notice(email)
        except MailError:
            log.warning("sign-up mail failed", exc_info=True)
            self._store.update_challenge(tenant, signup_id, set={"consumed_at": now})
            self._codes.release_send(tenant, self._resend_key(email), now)
            raise mail_unavailable() from None
        # The audit trail is for admins (and the owner's own history), so it may say which case this was.
        self._audit.record(
            tenant,
            "signup.started",
            user_id=existing.id if existing is not None else "",
            signup_id=signup_id,
            existing_email="true" if existing is not None else "false",
        )
        return SignupStarted(signup_id, expires_at, mask_email(email))

    def _mail_code(self, email: str, code: str) -> None:
        minutes = max(1, self._settings.signup_ttl // 60)
        self._mailer.send(
            email,
            "Your sign-up code",
            f"Your sign-up code is {code}\n\nEnter it to create your account. It expires in {minutes} minutes "
            "and works once.\nIf you did not sign up, ignore this mail: no account is created without the code.\n",
        )

    def _mail_notice(self, email: str) -> None:
        forgot = f"{self._settings.public_url}{FORGOT_PATH}"
        self._mailer.send(
            email,
            "Someone tried to sign up with your address",
            "Someone just tried to create an account with this e-mail address, which already has an account.\n"
            "No new account was created.\n\n"
            "If it was you: sign in with your username or e-mail. If you forgot your password, reset it "
            f"(POST {forgot}).\n"
            "If it was not you, nothing else is needed.\n",
        )

    def _username_owned(self, tenant: str, username: str, holder: str, now: datetime) -> bool:
        user = self._store.find_user(tenant, username)
        if user is not None and user.username == username:
            return True
        hold = live(self._store.get_counter(tenant, self._hold_key(username)), now)
        return hold is not None and hold.owner != holder

    def _take_hold(self, tenant: str, username: str, holder: str, expires_at: datetime, now: datetime) -> bool:
        """Hold the username for this address until `expires_at`; False when another address holds it."""

        def step(counter: Counter | None) -> tuple[bool, dict[str, object] | None]:
            held = live(counter, now)
            if held is not None and held.owner != holder:
                return False, None
            return True, {"owner": holder, "expires_at": expires_at, "count": 1}

        return swap(self._store, tenant, self._hold_key(username), step)

    def _release_hold(self, tenant: str, username: str, holder: str, now: datetime) -> None:
        def step(counter: Counter | None) -> tuple[None, dict[str, object] | None]:
            held = live(counter, now)
            if held is None or held.owner != holder:
                return None, None
            return None, {"owner": "", "expires_at": now}

        swap(self._store, tenant, self._hold_key(username), step)

    # -- VerifySignup

    def verify(self, tenant: str, signup_id: str, code: str) -> User:
        """Redeem a sign-up's code and create the user (role user, e-mail verified)."""
        challenge = self._codes.check(tenant, signup_id, code, kind=KIND, again="sign up again for a new one")
        now = utcnow()
        self._codes.consume(tenant, challenge, now)
        pending = json.loads(challenge.payload)
        user = self.create_user(
            tenant,
            User(
                id=new_id(),
                username=pending["username"],
                email=pending["email"],
                name=pending["name"],
                phone=pending["phone"],
                role="user",
                password_hash=base64.b64decode(pending["password_hash"]),
                created_at=now,
                email_verified=True,
            ),
            via="signup",
        )
        self._release_hold(tenant, user.username, self._digest("signup-owner", user.email), now)
        return user

    def create_user(self, tenant: str, user: User, via: str) -> User:
        """Insert a user whose fields are already checked; a unique field another account has is told."""
        try:
            self._store.create_user(tenant, user)
        except DuplicateKey as dup:
            if dup.field == "email":
                raise AuthError(Code.ALREADY_EXISTS, "EMAIL_TAKEN", "This e-mail is already registered.") from None
            if dup.field == "phone":
                raise AuthError(
                    Code.ALREADY_EXISTS, "PHONE_TAKEN", "This phone number belongs to another account."
                ) from None
            raise _username_taken() from None
        self._audit.record(tenant, "user.created", user_id=user.id, via=via)
        return user
