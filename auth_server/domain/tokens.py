"""Access and refresh tokens.

Access token: a JWT (header `typ: at+jwt`) whose payload holds only `session_id`, `type: "access"`,
`iat`, `exp` and `jti`: no user id, e-mail, role or tenant, so every call must load the session and its
user, and revocation, locks and role changes act on the next call. Verification pins the configured
algorithm (never the one in the token header, never `none`), requires every claim and checks `type`.

Service token: the same kind of JWT with `type: "service"` and `service_account_id` instead of
`session_id` (issued by IssueServiceToken to a service account, services.py). Each kind is accepted only
where it is expected: `verify` takes session tokens alone, `verify_any` tells the two kinds apart (the
guard then admits each kind only where a rule names it), and a token with both ids, neither, or another
type is TOKEN_INVALID.

Refresh token: opaque, `rt1.<session_id>.<generation>.<mac>`, where the MAC binds tenant, session,
generation and a per-session nonce under a server key. The store keeps the session's current
generation and a keyed hash of the current token, never the token. Because any genuine token can be
re-derived, the server tells a replayed old token (theft: revoke) from a forged one (just invalid),
and can hand an idempotent retry within the grace window the very same rotated pair without storing it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from jwt.utils import base64url_decode

from auth_server.domain.errors import TOKEN_EXPIRED, TOKEN_INVALID, unauthenticated

ACCESS_TYPE = "access"
SERVICE_TYPE = "service"
REFRESH_PREFIX = "rt1"
# rt1.<session id: ASCII letters/digits>.<generation: ASCII digits, no leading zero>.<MAC: unpadded base64url>
REFRESH_FORMAT = re.compile(
    re.escape(REFRESH_PREFIX) + r"\.([0-9A-Za-z]{1,64})\.(0|[1-9][0-9]{0,8})\.([0-9A-Za-z_-]{1,64})"
)
LEEWAY_SECONDS = 10
MAX_TOKEN_CHARS = 4096
VERIFIED_CACHE_SIZE = 4096  # access tokens whose signature and claims were checked (see AccessTokens.verify)


@dataclass(frozen=True)
class AccessClaims:
    session_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ServiceClaims:
    service_account_id: str
    issued_at: datetime
    expires_at: datetime


class AccessTokens:
    """Issues and verifies access JWTs with one configured algorithm and key."""

    def __init__(
        self,
        signing_key: Any,
        verification_key: Any,
        ttl: int,
        algorithm: str = "HS256",
        kid: str | None = None,
    ) -> None:
        if algorithm.lower() == "none":
            raise ValueError("the 'none' algorithm is never allowed")
        self._signing_key = signing_key
        self._verification_key = verification_key
        self._algorithm = algorithm
        self._headers: dict[str, str] = {"typ": "at+jwt"} | ({"kid": kid} if kid else {})
        self._ttl = timedelta(seconds=ttl)
        self._jwt = jwt.PyJWT(options={"require": ["exp", "iat", "type"]})  # and the kind's id (_claims)
        # token -> (claims, exp): tokens that passed full verification. Only the expiry can change a
        # verdict later (iat/nbf in the future only ever become valid), so a hit re-checks exp alone.
        self._verified: OrderedDict[str, tuple[AccessClaims | ServiceClaims, int]] = OrderedDict()
        self._hmac_key: bytes | None = verification_key if algorithm == "HS256" else None

    def issue(self, session_id: str, now: datetime) -> tuple[str, datetime]:
        """A token for the session, valid from `now`; the same inputs give the same token (no jti
        randomness), which is what lets a refresh retry within the grace window return the same pair."""
        expires_at = now + self._ttl
        iat = int(now.timestamp())
        payload = {
            "session_id": session_id,
            "type": ACCESS_TYPE,
            "iat": iat,
            "exp": int(expires_at.timestamp()),
            "jti": hashlib.sha256(f"{session_id}:{now.timestamp()}".encode()).hexdigest()[:22],
        }
        token = self._jwt.encode(payload, self._signing_key, algorithm=self._algorithm, headers=self._headers)
        return token, datetime.fromtimestamp(payload["exp"], UTC)

    def issue_service(
        self, service_account_id: str, now: datetime, not_after: datetime | None = None
    ) -> tuple[str, datetime]:
        """A service token for the account, valid from `now` (a random jti: each one is new) for the
        configured lifetime, or until `not_after` if that comes first."""
        expires_at = now + self._ttl if not_after is None else min(now + self._ttl, not_after)
        payload = {
            "service_account_id": service_account_id,
            "type": SERVICE_TYPE,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": secrets.token_urlsafe(16),
        }
        token = self._jwt.encode(payload, self._signing_key, algorithm=self._algorithm, headers=self._headers)
        return token, datetime.fromtimestamp(payload["exp"], UTC)

    def verify(self, token: str) -> AccessClaims:
        """Claims of a valid session access token; TOKEN_INVALID for a service token (see module docstring)."""
        claims = self.verify_any(token)
        if not isinstance(claims, AccessClaims):
            raise unauthenticated(*TOKEN_INVALID)
        return claims

    def verify_any(self, token: str) -> AccessClaims | ServiceClaims:
        """Claims of a valid access token of either kind; AuthError TOKEN_EXPIRED or TOKEN_INVALID otherwise.

        A client sends the same access token with every call for its whole lifetime, so the result of a
        full verification (signature, algorithm, required claims, type) is kept for the token in a bounded
        cache and a repeat call re-checks only the expiry, exactly as pyjwt does (`exp <= now - leeway`).
        Tokens that fail are never cached: a bad token is fully checked every time. The session behind a
        token is still checked on every call (sessions.py, from a session cache that revocations empty).
        """
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated(*TOKEN_INVALID)
        hit = self._verified.get(token)
        if hit is not None:
            if hit[1] <= time.time() - LEEWAY_SECONDS:
                self._verified.pop(token, None)
                raise unauthenticated(*TOKEN_EXPIRED)
            return hit[0]
        if self._hmac_key is not None and not self._signature_matches(token, self._hmac_key):
            raise unauthenticated(*TOKEN_INVALID)
        claims = self._verify_fully(token)
        self._verified[token] = (claims, int(claims.expires_at.timestamp()))
        while len(self._verified) > VERIFIED_CACHE_SIZE:
            try:
                self._verified.popitem(last=False)
            except KeyError:  # emptied meanwhile by another thread
                break
        return claims

    @staticmethod
    def _signature_matches(token: str, key: bytes) -> bool:
        """HS256 only: does the token's signature segment match the HMAC of the rest, as pyjwt computes it?

        A cheap first gate (one HMAC, no JSON): every token that fails it would fail pyjwt's own check
        too (bad signature, or a malformed token pyjwt refuses before reaching the signature), and each
        of those is TOKEN_INVALID, so the answer is the same, only sooner.
        """
        try:
            signing_input, _, signature = token.encode().rpartition(b".")
            expected = hmac.new(key, signing_input, hashlib.sha256).digest()
            return hmac.compare_digest(base64url_decode(signature.rstrip(b"=")), expected)
        except (ValueError, TypeError):  # binascii.Error is a ValueError
            return False

    def _verify_fully(self, token: str) -> AccessClaims | ServiceClaims:
        try:
            payload = self._jwt.decode(
                token, self._verification_key, algorithms=[self._algorithm], leeway=LEEWAY_SECONDS
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated(*TOKEN_EXPIRED) from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise unauthenticated(*TOKEN_INVALID) from None
        if not isinstance(payload.get("iat"), int) or not isinstance(payload.get("exp"), int):
            raise unauthenticated(*TOKEN_INVALID)
        issued_at = datetime.fromtimestamp(payload["iat"], UTC)
        expires_at = datetime.fromtimestamp(payload["exp"], UTC)
        session_id, account_id = payload.get("session_id"), payload.get("service_account_id")
        # Exactly one id, matching the type: a token can never pass for the other kind.
        if payload.get("type") == ACCESS_TYPE and account_id is None and isinstance(session_id, str) and session_id:
            return AccessClaims(session_id=session_id, issued_at=issued_at, expires_at=expires_at)
        if payload.get("type") == SERVICE_TYPE and session_id is None and isinstance(account_id, str) and account_id:
            return ServiceClaims(service_account_id=account_id, issued_at=issued_at, expires_at=expires_at)
        raise unauthenticated(*TOKEN_INVALID)


def access_tokens_for(
    algorithm: str, hmac_key: bytes, private_key_pem: bytes | None, kid: str | None, ttl: int
) -> AccessTokens:
    """HS256 with the derived key, or ES256/EdDSA with a PEM private key (verified with its public half)."""
    if algorithm == "HS256":
        return AccessTokens(hmac_key, hmac_key, ttl)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if private_key_pem is None:
        raise ValueError(f"{algorithm} needs a private key")
    private_key = load_pem_private_key(private_key_pem, password=None)
    return AccessTokens(private_key, private_key.public_key(), ttl, algorithm=algorithm, kid=kid)


@dataclass(frozen=True)
class RefreshToken:
    session_id: str
    generation: int
    mac: str


class RefreshTokens:
    """Mints and checks opaque refresh tokens bound to tenant, session, generation and nonce."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def new_nonce() -> bytes:
        return secrets.token_bytes(32)

    def _mac(self, tenant: str, session_id: str, generation: int, nonce: bytes) -> str:
        message = f"{tenant}\x00{session_id}\x00{generation}\x00".encode() + nonce
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self, tenant: str, session_id: str, generation: int, nonce: bytes) -> str:
        return f"{REFRESH_PREFIX}.{session_id}.{generation}.{self._mac(tenant, session_id, generation, nonce)}"

    @staticmethod
    def parse(token: str) -> RefreshToken | None:
        """The parts of a well-formed token, or None (an access JWT or garbage never parses).

        Only the exact form `mint` writes parses, in ASCII: str.isdigit()/isalnum() accept any Unicode
        digit or letter ("²", "٣", a fullwidth "a"), on which int() raises or silently reads another
        number. The generation has no leading zeros, so each genuine token has one spelling.
        """
        if not token or len(token) > 512:
            return None
        match = REFRESH_FORMAT.fullmatch(token)
        if match is None:
            return None
        session_id, generation, mac = match.groups()
        return RefreshToken(session_id=session_id, generation=int(generation), mac=mac)

    def genuine(self, tenant: str, token: RefreshToken, nonce: bytes) -> bool:
        expected = self._mac(tenant, token.session_id, token.generation, nonce)
        return hmac.compare_digest(expected.encode(), token.mac.encode())
