"""One-time login codes: six digits from `secrets`, stored only as a keyed hash bound to the challenge.

Binding the hash to the challenge id means a code issued for one login (or one user) can never
redeem another, even if both happen to get the same six digits.
"""

from __future__ import annotations

import secrets

from auth_server.infra.keys import KeyRing

OTP_DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


def hash_code(keys: KeyRing, challenge_id: str, code: str) -> bytes:
    return keys.hash("otp", challenge_id, code)


def well_formed(code: str) -> bool:
    return len(code) == OTP_DIGITS and code.isascii() and code.isdigit()
