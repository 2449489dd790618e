"""Access and refresh tokens in isolation: claims, pinning of the algorithm, tamper and type checks."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth_server.domain.errors import AuthError
from auth_server.domain.tokens import AccessTokens, RefreshTokens
from auth_server.infra.clock import utcnow
from auth_server.infra.keys import KeyRing

KEYS = KeyRing.from_secret(b"unit-test-secret-unit-test-secret-!")


def tokens(ttl: int = 900) -> AccessTokens:
    return AccessTokens(KEYS.jwt, KEYS.jwt, ttl)


def reason(token: str) -> str:
    with pytest.raises(AuthError) as caught:
        tokens().verify(token)
    return caught.value.reason


def test_issue_and_verify_round_trip() -> None:
    now = utcnow()
    token, expires_at = tokens().issue("s1", now)
    claims = tokens().verify(token)
    assert claims.session_id == "s1" and expires_at - now <= timedelta(seconds=900)
    assert set(jwt.decode(token, options={"verify_signature": False})) == {"session_id", "type", "iat", "exp", "jti"}


def test_same_inputs_give_the_same_token() -> None:
    now = utcnow()
    assert tokens().issue("s1", now) == tokens().issue("s1", now)
    assert tokens().issue("s1", now)[0] != tokens().issue("s1", now + timedelta(milliseconds=1))[0]


def test_expired_beyond_leeway_and_within_it() -> None:
    token, _ = tokens(ttl=10).issue("s1", utcnow() - timedelta(seconds=25))
    assert reason(token) == "TOKEN_EXPIRED"
    token, _ = tokens(ttl=10).issue("s1", utcnow() - timedelta(seconds=15))
    assert tokens().verify(token).session_id == "s1"  # 5 s past exp, inside the 10 s leeway


def test_none_algorithm_can_never_be_configured() -> None:
    with pytest.raises(ValueError, match="none"):
        AccessTokens(KEYS.jwt, KEYS.jwt, 900, algorithm="none")


@given(st.text(max_size=300))
def test_garbage_is_token_invalid_never_a_crash(garbage: str) -> None:
    assert reason(garbage) in ("TOKEN_INVALID",)


def test_refresh_tokens_bind_tenant_session_generation() -> None:
    refresh = RefreshTokens(KEYS.refresh)
    nonce = refresh.new_nonce()
    token = refresh.mint("acme", "abc123", 3, nonce)
    parsed = refresh.parse(token)
    assert parsed and parsed.generation == 3 and refresh.genuine("acme", parsed, nonce)
    assert not refresh.genuine("default", parsed, nonce)
    assert not refresh.genuine("acme", parsed, refresh.new_nonce())
    bumped = refresh.parse(token.replace(".3.", ".4."))
    assert bumped and not refresh.genuine("acme", bumped, nonce)


@given(st.text(max_size=600))
def test_refresh_parse_never_crashes(garbage: str) -> None:
    parsed = RefreshTokens.parse(garbage)
    assert parsed is None or garbage.startswith("rt1.")


def test_an_access_token_never_parses_as_a_refresh_token() -> None:
    token, _ = tokens().issue("s1", utcnow())
    assert RefreshTokens.parse(token) is None
