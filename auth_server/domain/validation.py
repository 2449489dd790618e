"""Input rules for user-supplied fields, as pure functions returning field violations.

Normalisation lives here too (lower-cased username and e-mail), so uniqueness is case-insensitive
wherever a value enters the system.

Passwords are also judged by zxcvbn (Dropbox's estimator: common-password, name and word lists, keyboard
patterns, dates, repeats and l33t, plus the user's own username and e-mail), the "check against a list
of commonly used or compromised values" of NIST SP 800-63B 3.1.1.2 and OWASP ASVS V6.2.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from zxcvbn import zxcvbn

from auth_server.domain.errors import FieldViolation
from auth_server.domain.passwords import MAX_PASSWORD_BYTES

USERNAME = re.compile(r"^[a-z0-9._-]{3,32}$")
# Deliberately simple (RFC 5322 is not what users type): one @, no spaces/controls, a dotted domain.
EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
# What may be typed as a phone number before libphonenumber judges it: digits, an optional leading '+',
# spaces, dots, '-', '(' and ')'. Keeps letters ("1-800-FLOWERS"), extensions and oversize input out.
PHONE = re.compile(r"^\+?\(?[0-9][0-9 ().-]{2,31}$")
MIN_PASSWORD_CHARS = 10
# zxcvbn score (0-4) a password needs: 2 means at least 10^6 guesses by its estimate, beyond any
# common-password list and out of reach of an online attack that meets the login throttles.
MIN_PASSWORD_SCORE = 2
# zxcvbn judges at most this many leading characters. Its cost grows with the length times the l33t
# substitutions it tries (up to ~0.3 s of pure Python, holding the GIL, for 72 crafted bytes; at most
# ~70 ms at 32, 2-6 ms for ordinary passwords), and sign-up runs it before any throttle. Guessing a
# password means guessing its start too, so a strong start is enough; a long password whose first 32
# characters are guessable is refused even if its tail is strong (erring toward refusing).
MAX_ESTIMATED_CHARS = 32
MAX_EMAIL_CHARS = 254
MAX_NAME_CHARS = 100
MAX_IDENTIFIER_CHARS = 254


def normalise_username(value: str) -> str:
    return value.strip().lower()


def normalise_email(value: str) -> str:
    return value.strip().lower()


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Cf") for ch in value)


def check_username(username: str) -> list[FieldViolation]:
    if not USERNAME.match(username):
        return [FieldViolation("username", "3-32 characters of a-z, 0-9, '.', '_' or '-'.")]
    return []


def check_email(email: str) -> list[FieldViolation]:
    if len(email) > MAX_EMAIL_CHARS or not EMAIL.match(email):
        return [FieldViolation("email", "A valid e-mail address, like name@example.com.")]
    return []


def check_password(password: str, field: str, *, username: str = "", email: str = "") -> list[FieldViolation]:
    """Length >= 10 characters, <= 72 UTF-8 bytes (bcrypt's limit: never truncated silently), no control
    characters (a NUL would end the password inside bcrypt), not one repeated character, not equal
    to the username, the e-mail or the e-mail's local part (case-insensitively), and, once all of that
    holds, hard enough to guess by zxcvbn's estimate (MIN_PASSWORD_SCORE), the username and e-mail
    counting as known words."""
    problems: list[str] = []
    if len(password) < MIN_PASSWORD_CHARS:
        problems.append(f"at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        problems.append(f"at most {MAX_PASSWORD_BYTES} bytes in UTF-8")
    if _has_control(password):
        problems.append("no control characters")
    if password and len(set(password)) == 1:
        problems.append("not one repeated character")
    lowered = password.lower()
    if lowered and lowered in {username, email, email.split("@")[0]} - {""}:
        problems.append("different from the username and e-mail")
    if not problems and not _hard_to_guess(password, username, email):
        problems.append("to be harder to guess: not a common password, name, word, date or keyboard pattern")
    return [FieldViolation(field, "Password needs " + ", ".join(problems) + ".")] if problems else []


def _hard_to_guess(password: str, username: str, email: str) -> bool:
    known = [value for value in (username, email, email.split("@")[0]) if value]
    estimate = zxcvbn(password[:MAX_ESTIMATED_CHARS], user_inputs=known)
    return int(estimate["score"]) >= MIN_PASSWORD_SCORE


def check_name(name: str) -> list[FieldViolation]:
    if len(name) > MAX_NAME_CHARS or _has_control(name):
        return [FieldViolation("name", f"At most {MAX_NAME_CHARS} characters, no control characters.")]
    return []


def normalise_phone(value: str, region: str) -> str | None:
    """The E.164 form of a phone number ("+14155550123"); "" for an empty value; None when it is not a
    valid number. A number without a country code takes `region`'s (AUTH_DEFAULT_PHONE_REGION).

    libphonenumber (Google's metadata of every numbering plan) decides validity: a hand-written rule
    would accept numbers no plan assigns, and two spellings of one number must become one value, since
    phones are unique per tenant and name accounts at login.
    """
    text = value.strip()
    if not text:
        return ""
    if not PHONE.match(text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_phone(value: str, region: str, field: str = "phone") -> tuple[str, list[FieldViolation]]:
    """(the E.164 form or "", violations) of an optional phone number."""
    phone = normalise_phone(value, region)
    if phone is None:
        example = "+14155550123" if region == "US" else "+44 20 7946 0018"
        message = f"A valid phone number, with its country code (like {example}) unless it is a {region} number."
        return "", [FieldViolation(field, message)]
    return phone, []


@dataclass(frozen=True, slots=True)
class Identifier:
    """What a caller typed to name an account (Login, RequestPasswordReset): a username, an e-mail
    address or a phone number."""

    text: str  # trimmed and lower-cased: matches a username or an e-mail
    phone: str  # the E.164 form when the text is also a valid phone number, else ""

    @property
    def key(self) -> str:
        """The one spelling throttles count under: every way of writing one phone number is one key."""
        return self.phone or self.text

    @property
    def lookups(self) -> tuple[str, ...]:
        """What to look the account up by, in order (a username or e-mail match wins over a phone's)."""
        return (self.text, self.phone) if self.phone and self.phone != self.text else (self.text,)


def parse_identifier(value: str, region: str) -> Identifier:
    text = value.strip().lower()
    phone = normalise_phone(text, region) if len(text) <= 32 and "@" not in text else None
    return Identifier(text, phone or "")
