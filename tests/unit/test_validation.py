"""Field rules: property tests over arbitrary input (never a crash, violations named by field)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auth_server.domain import validation
from auth_server.domain.accounts import mask_email
from auth_server.domain.devices import describe, device_name
from auth_server.domain.passwords import MAX_PASSWORD_BYTES


@given(st.text(max_size=100))
def test_username_rule(value: str) -> None:
    normalised = validation.normalise_username(value)
    ok = not validation.check_username(normalised)
    assert ok == (
        3 <= len(normalised) <= 32 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789._-" for c in normalised)
    )


@given(st.text(max_size=400))
def test_email_rule_never_crashes_and_bounds_length(value: str) -> None:
    normalised = validation.normalise_email(value)
    if not validation.check_email(normalised):
        assert normalised.count("@") == 1 and len(normalised) <= 254 and " " not in normalised


@given(st.text(max_size=120))
def test_password_rule(password: str) -> None:
    violations = validation.check_password(password, "password", username="jane", email="jane@example.com")
    if not violations:
        assert len(password) >= 10 and len(password.encode()) <= MAX_PASSWORD_BYTES
        assert "\x00" not in password and password.lower() not in ("jane", "jane@example.com")
    else:
        assert [v.field for v in violations] == ["password"]


def test_password_edges() -> None:
    assert not validation.check_password("a" * 9 + "b", "p")
    assert validation.check_password("a" * 9, "p")
    assert validation.check_password("x" * 72, "p")  # one repeated character
    assert not validation.check_password("ab" * 36, "p")  # exactly 72 bytes
    assert validation.check_password("ab" * 36 + "c", "p")  # 73 bytes: refused, never truncated
    assert validation.check_password("😀" * 18 + "ab", "p")  # 74 bytes
    assert not validation.check_password("😀" * 17 + "ab", "p")  # 70 bytes, 19 characters
    assert validation.check_password("nul\x00inside-pw", "p")
    assert validation.check_password("JANE@EXAMPLE.COM", "p", username="jane", email="jane@example.com")


def test_mask_and_devices() -> None:
    assert mask_email("jane@example.com") == "j***@example.com"
    ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15"
    assert describe(ua) == "Safari on macOS"
    assert describe("Mozilla/5.0 (Windows NT 10.0) Chrome/120.0 Safari/537.36 Edg/120.0") == "Edge on Windows"
    assert device_name("  ", "grpcurl/1.9.3 grpc-go/1.61.0") == "grpcurl"
    assert device_name("My\x00 phone", "") == "My phone"
