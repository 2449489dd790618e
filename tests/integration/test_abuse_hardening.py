"""Issue 11, rows 8, 10, 11 and 12, written as attacks on both stores (row 13, file modes: tests/store).

- Row 8: a refresh token whose generation is a non-ASCII digit (`²`, `٣`) answered INTERNAL (gRPC) and,
  as the bridge's cookie, a 500 after the session had been revoked. Now REFRESH_TOKEN_INVALID.
- Row 10: `password123` was a valid password. Now a google.rpc.BadRequest violation (zxcvbn).
- Row 11: refreshing extended a session for ever. Now AUTH_SESSION_MAX_LIFETIME ends it: SESSION_EXPIRED.
- Row 12: the unlock link was a GET that redeemed the token, so a mail scanner spent it. Now the GET is a
  confirmation page and only its form's POST (the UnlockAccount route) redeems.

Time never passes by sleeping: a session "ages" by moving its created_at back in the store.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest

from auth_client.gen.auth.v1 import auth_pb2
from auth_server.infra.clock import utcnow
from auth_server.infra.config import ConfigError, load_settings
from auth_server.infra.keys import KeyRing
from tests.integration.conftest import PASSWORD, SECRET, Client, md
from tests.support.rpc import fails

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
# str.isdigit() is true for each, int() fails on the first three and reads the last as 3.
UNICODE_DIGITS = ("²", "①", "\U0001f101", "٣")


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def when(timestamp: Any) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


# --- row 8: the refresh-token parser takes ASCII digits only


def test_refresh_tokens_with_unicode_digits_are_invalid_never_internal(client: Client) -> None:
    client.signup("unidigit")
    tokens = client.sign_in("unidigit")
    session_id, mac = tokens.session_id, tokens.refresh_token.rsplit(".", 1)[1]
    fullwidth_id = "".join(chr(ord(c) + 0xFEE0) for c in session_id)  # fullwidth forms: str.isalnum() says yes
    forged = [f"rt1.abc.{digit}.x" for digit in UNICODE_DIGITS]
    forged += [f"rt1.{session_id}.{digit}.{mac}" for digit in UNICODE_DIGITS]
    forged += [f"rt1.{session_id}.٠.{mac}", f"rt1.{fullwidth_id}.0.{mac}", f"rt1.{session_id}.00.{mac}"]
    for token in forged:
        seen = fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=token))
        assert (seen.code, seen.reason) == (UNAUTHENTICATED, "REFRESH_TOKEN_INVALID"), token
    stored = client.store.get_session("default", session_id)
    assert stored.revoked_at is None and stored.refresh_generation == 0  # nothing rotated, nothing revoked
    rotated = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    assert rotated.session_id == session_id  # the genuine token still works
    assert client.store.get_session("default", session_id).refresh_generation == 1


def test_bridge_with_a_unicode_digit_refresh_cookie_never_answers_500(client: Client, bridge: httpx.Client) -> None:
    client.signup("cookiedigit")
    tokens = client.sign_in("cookiedigit")
    # Header bytes are latin-1 to Starlette: 0xB2 is "²". A browser sends cookie bytes as they were set.
    cookie = {"Cookie": f"refresh_token=rt1.{tokens.session_id}.".encode() + b"\xb2.x"}
    headers = {**bearer(tokens.access_token), **cookie}
    logout = bridge.delete(f"/api/v1/auth/sessions/{tokens.session_id}", headers=headers)
    assert logout.status_code == 200 and logout.json() == {"message": "Session revoked successfully"}
    assert client.store.get_session("default", tokens.session_id).revoke_reason == "logout"

    refresh = bridge.post("/api/v1/auth/refresh", json={}, headers=cookie)
    assert refresh.status_code == 401 and refresh.json()["error"]["reason"] == "refresh_token_invalid"
    assert "Max-Age=0" in refresh.headers["set-cookie"]  # the unusable cookie is cleared
    in_body = bridge.post("/api/v1/auth/refresh", json={"refreshToken": "rt1.abc.².x"})
    assert in_body.status_code == 401 and in_body.json()["error"]["reason"] == "refresh_token_invalid"


# --- row 10: common passwords


def test_common_and_guessable_passwords_are_refused_at_signup(client: Client) -> None:
    for weak in ("password123", "qwertyuiop", "iloveyou12", "Password123!", "abcdefghij"):
        request = auth_pb2.SignupRequest(username="weakling", email="weakling@example.com", password=weak)
        seen = fails(client.auth.Signup, request)
        assert (seen.code, seen.reason, seen.fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
            ("password",),
        ), weak
    # Strong on its own, weak for this user: built from the username (zxcvbn's user_inputs).
    own = auth_pb2.SignupRequest(username="zorgblatt", email="zorgblatt@example.com", password="zorgblatt2024")
    assert fails(client.auth.Signup, own).fields == ("password",)
    assert client.store.find_user("default", "weakling") is None
    assert client.store.find_user("default", "zorgblatt") is None
    assert client.signup("strongling").username == "strongling"  # the tests' own password passes


def test_common_passwords_are_refused_at_password_change(client: Client) -> None:
    client.signup("changer")
    tokens = client.sign_in("changer")
    before = client.store.find_user("default", "changer").password_hash
    request = auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="password1234")
    seen = fails(client.auth.ChangePassword, request, metadata=md(tokens.access_token))
    assert (seen.code, seen.reason, seen.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ("new_password",),
    )
    assert client.store.find_user("default", "changer").password_hash == before
    assert client.store.get_session("default", tokens.session_id).revoked_at is None


# --- row 11: an absolute session lifetime


def test_session_max_lifetime_setting_accepts_60_seconds_and_more() -> None:
    base = {"AUTH_JWT_SECRET": SECRET, "AUTH_STORE": "sqlite:///unused.db"}
    assert load_settings(base).session_max_lifetime == 30 * 86400
    equal = load_settings({**base, "AUTH_SESSION_MAX_LIFETIME": "60", "AUTH_REFRESH_TTL": "60"})
    assert equal.session_max_lifetime == equal.refresh_ttl == 60
    shorter = load_settings({**base, "AUTH_SESSION_MAX_LIFETIME": "120", "AUTH_REFRESH_TTL": "3600"})
    assert shorter.session_max_lifetime == 120
    for bad in ("59", "0", "-1", "soon"):
        with pytest.raises(ConfigError, match=r"^AUTH_SESSION_MAX_LIFETIME: "):
            load_settings({**base, "AUTH_SESSION_MAX_LIFETIME": bad})


def test_numeric_settings_take_ascii_digits_only() -> None:
    """The row 8 mistake in the settings: "127.0.0.1:²" passed str.isdigit() and crashed int() with a
    traceback instead of the one-line ConfigError; "٣٠٠" was silently read as 300."""
    base = {"AUTH_JWT_SECRET": SECRET, "AUTH_STORE": "sqlite:///unused.db"}
    for name, value in (("AUTH_GRPC_ADDR", "127.0.0.1:²"), ("AUTH_GRPC_ADDR", "127.0.0.1:٨٠"), ("AUTH_OTP_TTL", "٣٠٠")):
        with pytest.raises(ConfigError, match=rf"^{name}: "):
            load_settings({**base, name: value})
    assert load_settings({**base, "AUTH_OTP_TTL": " 300 "}).otp_ttl == 300


def _age(client: Client, session_id: str, seconds: int) -> datetime:
    """Move the session's creation `seconds` into the past, as if it had been refreshed all that time."""
    created = client.store.get_session("default", session_id).created_at - timedelta(seconds=seconds)
    client.store.update_session("default", session_id, set={"created_at": created})
    return created


def test_refreshing_never_keeps_a_session_past_its_max_lifetime(make_client: Any) -> None:
    client = make_client(AUTH_SESSION_MAX_LIFETIME="120", AUTH_REFRESH_TTL="60")
    client.signup("forever")
    tokens = client.sign_in("forever")
    stored = client.store.get_session("default", tokens.session_id)
    assert stored.expires_at == stored.created_at + timedelta(seconds=60)  # refresh TTL first

    created = _age(client, tokens.session_id, 100)  # 100 s of refreshing later, 20 s of lifetime left
    refreshed = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    end = created + timedelta(seconds=120)
    assert when(refreshed.refresh_token_expires_at) == end  # capped, not now + 60 s
    assert client.store.get_session("default", tokens.session_id).expires_at == end

    _age(client, tokens.session_id, 21)  # now past created + 120 s, though expires_at was never reached
    for seen in (
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(refreshed.access_token)),
        fails(client.auth.ListSessions, auth_pb2.ListSessionsRequest(), metadata=md(refreshed.access_token)),
        fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=refreshed.refresh_token)),
    ):
        assert (seen.code, seen.reason) == (UNAUTHENTICATED, "SESSION_EXPIRED")
    introspected = client.auth.Introspect(
        auth_pb2.IntrospectRequest(access_token=refreshed.access_token), metadata=md(client.service_token())
    )
    assert not introspected.active and introspected.inactive_reason == "SESSION_EXPIRED"
    stored = client.store.get_session("default", tokens.session_id)
    assert stored.refresh_generation == 1 and stored.revoked_at is None  # the refused Refresh rotated nothing
    assert client.sign_in("forever").access_token  # the owner simply logs in again


def test_max_lifetime_equal_to_the_refresh_ttl(make_client: Any) -> None:
    client = make_client(AUTH_SESSION_MAX_LIFETIME="60", AUTH_REFRESH_TTL="60")
    client.signup("equal")
    tokens = client.sign_in("equal")
    stored = client.store.get_session("default", tokens.session_id)
    assert stored.expires_at == stored.created_at + timedelta(seconds=60)
    _age(client, tokens.session_id, 30)
    refreshed = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    assert when(refreshed.refresh_token_expires_at) == stored.created_at + timedelta(seconds=30)
    _age(client, tokens.session_id, 30)
    seen = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(refreshed.access_token))
    assert (seen.code, seen.reason) == (UNAUTHENTICATED, "SESSION_EXPIRED")


# --- row 12: the unlock link is a confirmation page; only its POST redeems the token


def _locked_with_unlock_link(client: Client, username: str) -> str:
    """A user locked with a pending unlock token, as the lockout mail leaves them; the token.

    Set in the store (the token as accounts.py mints it) so the test depends on the link alone, not on
    how many failures of which kind lead to a lock.
    """
    client.signup(username)
    user = client.store.find_user("default", username)
    token = f"{user.id}.{secrets.token_urlsafe(32)}"
    later = utcnow() + timedelta(hours=1)
    client.store.update_user(
        "default",
        user.id,
        set={
            "locked_until": later,
            "unlock_token_hash": KeyRing.from_secret(SECRET.encode()).hash("unlock", token),
            "unlock_token_expires_at": later,
        },
    )
    return token


def _pending(client: Client, username: str) -> bool:
    return client.store.find_user("default", username).unlock_token_hash is not None


def test_opening_the_unlock_link_redeems_nothing(client: Client, bridge: httpx.Client) -> None:
    token = _locked_with_unlock_link(client, "scanned")
    for _ in range(3):  # a mail scanner, a link preview, the owner: all just see the page
        page = bridge.get("/api/v1/auth/unlock", params={"token": token})
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert f'<input type="hidden" name="token" value="{token}">' in page.text
        assert '<form method="post" action="unlock">' in page.text
    assert bridge.head("/api/v1/auth/unlock", params={"token": token}).status_code == 200
    assert _pending(client, "scanned")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # no script at all may run on the page
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"

    missing = bridge.get("/api/v1/auth/unlock")
    assert missing.status_code == 400 and "<form" not in missing.text
    twice = bridge.get("/api/v1/auth/unlock", params=[("token", token), ("token", token)])
    assert twice.status_code == 400 and _pending(client, "scanned")


def test_the_unlock_page_escapes_the_token(client: Client, bridge: httpx.Client) -> None:
    attack = "\"><script>alert(1)</script><img src=x onerror=alert(2)>'&"
    page = bridge.get("/api/v1/auth/unlock", params={"token": attack})
    assert page.status_code == 200
    assert "<script" not in page.text and "<img" not in page.text
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&#x27;&amp;"' in (
        page.text
    )


def test_the_unlock_form_post_redeems_the_token_once(client: Client, bridge: httpx.Client) -> None:
    token = _locked_with_unlock_link(client, "unlocker")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    done = bridge.post("/api/v1/auth/unlock", content=f"token={token}".encode(), headers=form)
    assert done.status_code == 200 and done.headers["content-type"] == "text/html; charset=utf-8"
    assert "unlocked" in done.text and done.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in done.headers["content-security-policy"]
    assert not _pending(client, "unlocker")
    assert client.sign_in("unlocker").access_token  # unlocked

    again = bridge.post("/api/v1/auth/unlock", data={"token": token})
    assert again.status_code == 401 and again.headers["content-type"] == "text/html; charset=utf-8"
    assert "not valid" in again.text and token not in again.text

    for bad in (b"token=a&token=b", b"token=x&color=blue", b"\xff\xfe", b"token=%ff"):
        refused = bridge.post("/api/v1/auth/unlock", content=bad, headers=form)
        assert refused.status_code == 400 and refused.headers["content-type"] == "text/html; charset=utf-8"


def test_the_unlock_route_takes_json_too(client: Client, bridge: httpx.Client) -> None:
    token = _locked_with_unlock_link(client, "jsonunlock")
    done = bridge.post("/api/v1/auth/unlock", json={"token": token})
    assert done.status_code == 200 and done.json() == {"message": "Account unlocked"}
    assert not _pending(client, "jsonunlock")
    again = bridge.post("/api/v1/auth/unlock", json={"token": token})
    assert again.status_code == 401 and again.json()["error"]["reason"] == "token_invalid"
    # gRPC callers are unchanged: UnlockAccount with the token.
    token = _locked_with_unlock_link(client, "grpcunlock")
    client.auth.UnlockAccount(auth_pb2.UnlockAccountRequest(token=token))
    assert not _pending(client, "grpcunlock")


def test_form_bodies_are_accepted_by_the_unlock_route_only(client: Client, bridge: httpx.Client) -> None:
    """A cross-site HTML form can post form-encoded bodies without a CORS preflight: every other route
    keeps refusing them (415), so no form on another site can sign up, log in or refresh."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = f"username=csrf&email=csrf%40example.com&password={PASSWORD.replace(' ', '+')}".encode()
    refused = bridge.post("/api/v1/auth/signup", content=body, headers=form)
    assert refused.status_code == 415 and refused.json()["error"]["reason"] == "unsupported_media_type"
    assert client.store.find_user("default", "csrf") is None
    assert bridge.post("/api/v1/auth/refresh", content=b"refreshToken=x", headers=form).status_code == 415
