"""Input rules for user-supplied fields, as pure functions returning field violations.

Normalisation lives here too (lower-cased username and e-mail), so uniqueness is case-insensitive
wherever a value enters the system.
"""

from __future__ import annotations

import re
import unicodedata

from auth_server.domain.errors import FieldViolation
from auth_server.domain.passwords import MAX_PASSWORD_BYTES

USERNAME = re.compile(r"^[a-z0-9._-]{3,32}$")
# Deliberately simple (RFC 5322 is not what users type): one @, no spaces/controls, a dotted domain.
EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{2,31}$")
MIN_PASSWORD_CHARS = 10
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
    characters (a NUL would end the password inside bcrypt), not one repeated character, and not equal
    to the username, the e-mail or the e-mail's local part (case-insensitively)."""
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
    return [FieldViolation(field, "Password needs " + ", ".join(problems) + ".")] if problems else []


def check_name(name: str) -> list[FieldViolation]:
    if len(name) > MAX_NAME_CHARS or _has_control(name):
        return [FieldViolation("name", f"At most {MAX_NAME_CHARS} characters, no control characters.")]
    return []


def check_phone(phone: str) -> list[FieldViolation]:
    if phone and not PHONE.match(phone):
        return [FieldViolation("phone", "Digits with an optional leading '+', spaces, '-', '(' or ')'; 3-32 long.")]
    return []
