"""The caller's own profile: UpdateMe (name, phone), ChangeEmail and ConfirmEmailChange.

UpdateMe follows AIP-134: only the fields its mask names change, and an empty mask means every field
the request sets. Phones are stored in E.164 and are unique per tenant, so they can name the account
at login (accounts.py); a phone another account has answers PHONE_TAKEN to the signed-in caller.

An e-mail change takes the current password (the same throttled check as ChangePassword, so a stolen
access token is no password oracle and cannot move the account to the thief's mailbox) and then a code
mailed to the new address, redeemed by the same user. Whether the new address already has an account
is never told at ChangeEmail: that address gets a notice instead of a code, and the answer and the work
done are the same; only the mailbox's owner learns it. At the confirmation the address changes in one
conditional update, and the old address is told.

Decisions (issue 14, part 5):
- Sessions stay after an e-mail change: the caller proved both the password and the new mailbox, and
  the change hands the account no new secret. (ChangePassword is what ends sessions.)
- Throttle counters keyed by the old address are neither moved nor cleared: they count guesses made
  against that string, not against the account, and expire by themselves (the failure window, a
  pair lock's 24 h at most). Moving them would charge the new address for guesses never made at it;
  clearing them would let a change wipe an attacker's record. Password resets mailed to the old
  address die at the change: that mailbox no longer speaks for the account.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from auth_server.domain import errors, otp, validation
from auth_server.domain.accounts import Accounts
from auth_server.domain.codes import code_invalid, mail_unavailable, mask_email
from auth_server.domain.errors import AuthError, Code, FieldViolation, unauthenticated, validation_failed
from auth_server.domain.parts import AccountFlow, Parts
from auth_server.domain.sessions import Caller
from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.infra.mail import MailError
from auth_server.store.base import DuplicateKey, LoginChallenge, User

log = logging.getLogger(__name__)

KIND = "email_change"  # LoginChallenge.kind of a pending e-mail change
PROFILE_FIELDS = ("name", "phone")  # the paths UpdateMe's update_mask may name
FULL_REPLACEMENT = "*"  # AIP-134: every field, set or not (an empty value clears it)


@dataclass(frozen=True)
class EmailChangeStarted:
    change_id: str
    expires_at: datetime
    delivery_hint: str


def _phone_taken() -> AuthError:
    return AuthError(Code.ALREADY_EXISTS, "PHONE_TAKEN", "This phone number belongs to another account.")


def _email_taken() -> AuthError:
    return AuthError(Code.ALREADY_EXISTS, "EMAIL_TAKEN", "This e-mail is already registered.")


class Profiles(AccountFlow):
    def __init__(self, parts: Parts, accounts: Accounts) -> None:
        super().__init__(parts)
        # For its throttled password check only (check_own_password), so ChangeEmail and ChangePassword
        # meet one limit written once. Accounts keeps no state of its own beyond these parts.
        self._accounts = accounts

    # --- UpdateMe

    def update_me(self, caller: Caller, paths: Sequence[str], name: str, phone: str) -> User:
        """Change the masked fields of the caller's profile; the user as it is afterwards."""
        given = {"name": name, "phone": phone}
        unknown = [p for p in paths if p not in PROFILE_FIELDS and p != FULL_REPLACEMENT]
        if unknown:
            allowed = ", ".join(f'"{f}"' for f in PROFILE_FIELDS)
            raise validation_failed(
                [FieldViolation("update_mask", f"Unknown path {unknown[0]!r}: the mask may name {allowed} or '*'.")]
            )
        if FULL_REPLACEMENT in paths:
            chosen = list(PROFILE_FIELDS)
        elif paths:
            chosen = list(dict.fromkeys(paths))
        else:  # AIP-134: an empty mask means every field the request sets
            chosen = [f for f in PROFILE_FIELDS if given[f]]
        values: dict[str, str] = {}
        violations: list[FieldViolation] = []
        if "name" in chosen:
            values["name"] = name.strip()
            violations += validation.check_name(values["name"])
        if "phone" in chosen:
            values["phone"], problems = validation.check_phone(phone, self._settings.default_phone_region)
            violations += problems
        if violations:
            raise validation_failed(violations)
        # The stored user, not the caller's copy: that may come from another replica's session cache.
        user = self._store.get_user(caller.tenant, caller.user.id)
        if user is None:  # deleted meanwhile
            raise unauthenticated(*errors.SESSION_NOT_FOUND)
        changes = {f: v for f, v in values.items() if getattr(user, f) != v}
        if not changes:
            return user  # nothing to write, nothing to record (a retried call lands here)
        try:
            updated = self._store.update_user(caller.tenant, user.id, set=changes)
        except DuplicateKey as dup:
            if dup.field == "phone":
                raise _phone_taken() from None
            raise
        if updated is None:  # deleted meanwhile
            raise unauthenticated(*errors.SESSION_NOT_FOUND)
        self._sessions.forget_user(caller.tenant, user.id)  # GetMe shows the change from the next call on
        self._audit.record(caller.tenant, "profile.updated", user_id=user.id, fields=",".join(sorted(changes)))
        return updated

    # --- ChangeEmail

    def change_email(self, caller: Caller, new_email: str, current_password: str, source: str) -> EmailChangeStarted:
        """Check the password and mail a code to the new address (a notice, if another account has it)."""
        user, tenant = caller.user, caller.tenant
        email = validation.normalise_email(new_email)
        violations = [FieldViolation("new_email", v.description) for v in validation.check_email(email)]
        if not violations and email == user.email:
            violations.append(FieldViolation("new_email", "This is already your e-mail address."))
        if not current_password:
            violations.append(FieldViolation("current_password", "Required."))
        if violations:
            raise validation_failed(violations)
        if not self._accounts.check_own_password(tenant, user, current_password, source):
            self._audit.record(tenant, "email.change_failed", user_id=user.id, reason="wrong_password")
            raise unauthenticated(*errors.INVALID_CREDENTIALS)
        now = utcnow()
        self._codes.claim_send(tenant, self._resend_key(user.id), now)
        holder = self._store.find_user(tenant, email)
        # find_user also matches usernames and phones; only another account's address counts here.
        taken = holder is not None and holder.email == email and holder.id != user.id
        change_id = new_id()
        code = otp.new_code()
        # For a taken address the stored hash is of a secret that is not six digits: nothing redeems it,
        # and the change dies as a wrong code would. The same work is done either way.
        secret = secrets.token_hex(16) if taken else code
        challenge = LoginChallenge(
            id=change_id,
            user_id=user.id,
            otp_hash=otp.hash_code(self._keys, change_id, secret),
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.email_change_ttl),
            kind=KIND,
            payload=json.dumps({"email": email}),
        )
        self._store.consume_challenges(tenant, user.id, now, kind=KIND)  # only the newest change is valid
        self._store.create_challenge(tenant, challenge)
        try:
            if taken:
                self._mail_notice(email)
            else:
                self._mail_code(email, code)
        except MailError:
            log.warning("e-mail change mail failed", exc_info=True)
            self._store.update_challenge(tenant, change_id, set={"consumed_at": now})
            self._codes.release_send(tenant, self._resend_key(user.id), now)
            raise mail_unavailable() from None
        # The audit trail is for admins, so it may say which case this was.
        self._audit.record(
            tenant, "email.change_requested", user_id=user.id, change_id=change_id, address_taken=str(taken).lower()
        )
        return EmailChangeStarted(change_id, challenge.expires_at, mask_email(email))

    def _mail_code(self, email: str, code: str) -> None:
        minutes = max(1, self._settings.email_change_ttl // 60)
        self._mailer.send(
            email,
            "Confirm your new e-mail address",
            f"Your confirmation code is {code}\n\nEnter it to make this your account's e-mail address. It expires "
            f"in {minutes} minutes and works once.\nIf you did not ask for this, ignore this mail: nothing changes "
            "without the code.\n",
        )

    def _mail_notice(self, email: str) -> None:
        self._mailer.send(
            email,
            "Someone tried to move an account to your address",
            "Someone signed in to an account tried to make this e-mail address its own, but this address "
            "already has an account.\nNothing was changed.\n\n"
            "If it was you: sign in with this address instead, or pick another address for the other account.\n"
            "If it was not you, nothing else is needed.\n",
        )

    def _resend_key(self, user_id: str) -> str:
        return f"echg:{user_id}"

    # --- ConfirmEmailChange

    def confirm_email_change(self, caller: Caller, change_id: str, code: str) -> User:
        """Redeem the code mailed to the new address; the user with the new address."""
        tenant = caller.tenant
        # Another user's change reads exactly like one that does not exist. No account budget is spent on
        # a wrong code: every new code needs the password again, which is throttled, and spending it would
        # let a stolen token pause the owner's logins.
        challenge = self._codes.check(
            tenant, change_id, code, kind=KIND, again="ask for a new one", owner=caller.user.id
        )
        now = utcnow()
        self._codes.consume(tenant, challenge, now)
        new_email = json.loads(challenge.payload)["email"]
        user = self._store.get_user(tenant, caller.user.id)
        if user is None:
            raise unauthenticated(*errors.SESSION_NOT_FOUND)
        old_email = user.email
        try:
            # Conditional on the address read just now: a concurrent change of it makes this one fail.
            updated = self._store.update_user(
                tenant, user.id, set={"email": new_email, "email_verified": True}, expect={"email": old_email}
            )
        except DuplicateKey as dup:
            if dup.field == "email":  # taken since the code was mailed: only this mailbox's owner learns it
                raise _email_taken() from None
            raise
        if updated is None:
            raise code_invalid()
        self._sessions.forget_user(tenant, user.id)
        # A reset mailed to the old address must not take the account back from the new one.
        self._store.consume_challenges(tenant, user.id, now, kind="reset")
        self._audit.record(tenant, "email.changed", user_id=user.id, change_id=change_id)
        self._mail_changed_notice(old_email, new_email)
        return updated

    def _mail_changed_notice(self, old_email: str, new_email: str) -> None:
        try:
            self._mailer.send(
                old_email,
                "Your e-mail address was changed",
                f"The e-mail address of your account was changed to {mask_email(new_email)}.\n"
                "Sign-in codes and password resets now go to the new address.\n\n"
                "If this wasn't you, someone has your password and a signed-in device: contact your "
                "administrator at once to lock the account.\n",
            )
        except MailError:  # the change is made and proved by the new mailbox: a lost notice must not undo it
            log.warning("e-mail change notice to the old address failed", exc_info=True)
