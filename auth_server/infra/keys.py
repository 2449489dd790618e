"""Server keys: independent sub-keys derived from the one configured secret, and keyed hashing.

Each purpose gets its own key (HMAC of the master secret with a label), so a value hashed for one
purpose can never be replayed as another: an OTP hash is not a refresh-token MAC, and neither is a
JWT signature. Stored secrets (OTPs, refresh and unlock tokens) are only ever stored as keyed hashes;
a copy of the database without the server secret reveals none of them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass


def _derive(master: bytes, label: str) -> bytes:
    return hmac.new(master, b"auth-server/v1/" + label.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class KeyRing:
    jwt: bytes  # HS256 signing key of access tokens
    refresh: bytes  # MAC key of refresh tokens
    hashing: bytes  # key of stored hashes (OTPs, refresh and unlock tokens)

    @classmethod
    def from_secret(cls, master: bytes) -> KeyRing:
        return cls(jwt=_derive(master, "jwt"), refresh=_derive(master, "refresh"), hashing=_derive(master, "hash"))

    def hash(self, *parts: str) -> bytes:
        """Keyed hash of the parts; parts are length-prefixed so ("ab","c") != ("a","bc")."""
        mac = hmac.new(self.hashing, digestmod=hashlib.sha256)
        for part in parts:
            data = part.encode()
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()

    def matches(self, stored: bytes, *parts: str) -> bool:
        return hmac.compare_digest(stored, self.hash(*parts))
