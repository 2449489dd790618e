"""AUTH_PUBLIC_URL, the base of the unlock link in lockout mails: by default where the bridge listens."""

from __future__ import annotations

import pytest

from auth_server.infra.config import load_settings

SQLITE = {"AUTH_STORE": "sqlite:///var/auth.db"}


@pytest.mark.parametrize(
    ("http_addr", "public_url"),
    [
        (None, "http://127.0.0.1:8080"),
        ("127.0.0.1:9090", "http://127.0.0.1:9090"),
        ("auth.internal:8443", "http://auth.internal:8443"),
        ("0.0.0.0:9090", "http://127.0.0.1:9090"),  # listening everywhere: reachable on loopback here
        ("[::]:9090", "http://[::1]:9090"),
        ("[::1]:9090", "http://[::1]:9090"),
    ],
)
def test_public_url_defaults_to_the_bridge_address(http_addr: str | None, public_url: str) -> None:
    env = {**SQLITE, **({"AUTH_HTTP_ADDR": http_addr} if http_addr else {})}
    assert load_settings(env).public_url == public_url


def test_the_http_addr_flag_moves_the_default_too() -> None:
    assert load_settings(SQLITE, http_addr="127.0.0.1:7070").public_url == "http://127.0.0.1:7070"


def test_an_explicit_public_url_wins() -> None:
    env = {**SQLITE, "AUTH_HTTP_ADDR": "0.0.0.0:9090", "AUTH_PUBLIC_URL": "https://auth.example.com/"}
    assert load_settings(env).public_url == "https://auth.example.com"
