"""Access and refresh tokens in isolation: claims, pinning of the algorithm, tamper and type checks."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from hypothesis import example, given
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


# Pieces a refresh token is made of, and look-alikes: str.isdigit()/isalnum() accept every character of
# categories Nd/No/Nl/L*, and int() reads some of them ("٣" is 3) and raises on others ("²").
_LOOKALIKES = st.characters(categories=("Nd", "No", "Nl", "Lu", "Ll", "Lo"))
_PIECES = st.one_of(
    st.sampled_from(["rt1", "0", "1", "42", "007", "abc", "AbC123", "x", "-_", ""]),
    st.text(alphabet=_LOOKALIKES, min_size=1, max_size=4),
    st.text(max_size=8),
)


@given(st.lists(_PIECES, min_size=1, max_size=6).map(".".join))
@example("rt1.abc.².x")
@example("rt1.abc.٣.x")
@example("rt1.ａｂｃ.0.x")
@example("rt1.abc.00.x")
@example("rt1.abc.1.x\n")
def test_refresh_parse_takes_only_the_ascii_form_mint_writes(token: str) -> None:
    """Never raises; whatever parses is ASCII and spelled exactly as `mint` would spell its parts."""
    parsed = RefreshTokens.parse(token)
    if parsed is not None:
        assert token.isascii()
        assert token == f"rt1.{parsed.session_id}.{parsed.generation}.{parsed.mac}"
        assert 0 <= parsed.generation < 10**9


def test_refresh_parse_refuses_unicode_digits_and_letters() -> None:
    mac = RefreshTokens(KEYS.refresh).mint("default", "abc123", 7, b"n").rsplit(".", 1)[1]
    assert RefreshTokens.parse(f"rt1.abc123.7.{mac}") is not None
    for generation in ("²", "٣", "①", "٠", "07", "-1", "+1", " 7", "1_0", "1234567890"):
        assert RefreshTokens.parse(f"rt1.abc123.{generation}.{mac}") is None, generation
    for session_id in ("ａｂｃ", "abç", "ab-c", "a" * 65, ""):
        assert RefreshTokens.parse(f"rt1.{session_id}.7.{mac}") is None, session_id
    for bad_mac in ("", "é", "a.b", "a=", "a" * 65):
        assert RefreshTokens.parse(f"rt1.abc123.7.{bad_mac}") is None, bad_mac
