"""The refresh token as an HttpOnly cookie, so browser JavaScript never holds the long-lived credential.

Policy (AUTH_REFRESH_COOKIE, default on):
- on: a response that carries a refresh token (VerifyOtp, Refresh: any response message with a
  `refresh_token` field) sets `refresh_token=<token>; HttpOnly; Secure; SameSite=Strict;
  Path=/api/v1/auth; Max-Age=<until refresh_token_expires_at>` and the JSON body leaves
  `refreshToken` out (a script that can read the body, an XSS included, never sees it). A request
  whose message has a `refresh_token` field (Refresh) takes it from the JSON body when given there,
  else from the cookie; taking it from the cookie requires `Content-Type: application/json`, which
  a cross-site form cannot send without a CORS preflight. The cookie is cleared when the refresh
  fails with 401 and after the calls that end the session the cookie belongs to (`LogoutAll`
  without `keepCurrent`, `ChangePassword`, and `LogoutSession` of the cookie's own session, told by
  the session id inside the refresh token: a format check only, no verification: that stays with
  the service). So a page reloaded after "Log out" is not mistaken for one revoked elsewhere.
- The known-device token (VerifyOtp's `device_token`) gets the same treatment under the same policy:
  a `device_token` cookie with the same attributes, living AUTH_DEVICE_TOKEN_TTL, left out of the
  JSON, and sent back as LoginRequest.device_token when a login's body has none. It is not cleared on
  logout: it says "this browser signed in before", which stays true (a password change voids it).
- off: no cookie at all; `refreshToken` and `deviceToken` stay in the JSON body (non-browser clients).
`Secure` is always set: browsers accept it over plain http only on localhost/127.0.0.1 (secure
contexts), so a deployment serves the bridge over TLS (or behind a TLS proxy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from auth_server.domain.tokens import RefreshTokens

COOKIE_NAME = "refresh_token"
COOKIE_PATH = "/api/v1/auth"
FIELD = "refresh_token"
JSON_FIELD = "refreshToken"
DEVICE_COOKIE = "device_token"
DEVICE_FIELD = "device_token"
DEVICE_JSON_FIELD = "deviceToken"

# RPC -> does this request end the session of the refresh cookie `token` (so the cookie must go)?
ENDS_OWN_SESSION: dict[str, Callable[[Any, str | None], bool]] = {
    "auth.v1.AuthService.LogoutAll": lambda request, token: not request.keep_current,
    "auth.v1.AuthService.ChangePassword": lambda request, token: True,
    "auth.v1.AuthService.LogoutSession": lambda request, token: _session_of(token) == request.session_id,
}


def _session_of(token: str | None) -> str | None:
    parsed = RefreshTokens.parse(token or "")
    return parsed.session_id if parsed else None


def carries_token(message_type: Descriptor, name: str = FIELD) -> bool:
    field = message_type.fields_by_name.get(name)
    return field is not None and field.type == field.TYPE_STRING


def _attributes(max_age: int | None) -> str:
    lifetime = "" if max_age is None else f"Max-Age={max_age}; "
    return f"Path={COOKIE_PATH}; {lifetime}HttpOnly; Secure; SameSite=Strict"


def set_cookie(token: str, response: Message) -> str:
    """The Set-Cookie value for a freshly issued refresh token, living as long as the token."""
    max_age = None  # no expiry known: a browser-session cookie
    if "refresh_token_expires_at" in response.DESCRIPTOR.fields_by_name and response.HasField(
        "refresh_token_expires_at"
    ):
        max_age = max(0, response.refresh_token_expires_at.seconds - int(time.time()))
    return f"{COOKIE_NAME}={token}; {_attributes(max_age)}"


def set_device_cookie(token: str, max_age: int) -> str:
    return f"{DEVICE_COOKIE}={token}; {_attributes(max_age)}"


def clear_cookie() -> str:
    return f"{COOKIE_NAME}=; {_attributes(0)}"


def ends_own_session(rpc: str, request: Message, token: str | None) -> bool:
    check = ENDS_OWN_SESSION.get(rpc)
    return bool(check and check(request, token))
