"""The whole account lifecycle through the real `auth-server serve` process, on both stores, with every
mail read from the SMTP sink: verified sign-up with a phone, sign-in by that phone, the new-device
notice and its "This wasn't me" link, the profile and e-mail change, the password reset, and the
session cap. Each flow's edge cases (wrong, expired, reused, parallel) are in its own module, in
process; this one shows the shipped process does them end to end.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from auth_client.gen.auth.v1 import auth_pb2
from tests.integration.conftest import PASSWORD, Client, md
from tests.support.rpc import fails

NEW_PASSWORD = "another horse battery staple"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
REPORT_TOKEN = re.compile(r"/api/v1/auth/signin/report\?token=([A-Za-z.]+)")


@pytest.fixture
def server_mode() -> str:
    return "process"


def _mail_count(client: Client, address: str) -> int:
    return len(client.smtp.to(address))


def _sign_in(client: Client, identifier: str, address: str, **metadata: str) -> auth_pb2.VerifyOtpResponse:
    """Login by any of the account's names and VerifyOtp with the mailed code."""
    before = _mail_count(client, address)
    login = auth_pb2.LoginRequest(username_or_email=identifier, password=PASSWORD)
    login_id = client.auth.Login(login, metadata=md(**metadata)).login_id
    code = client.smtp.last_code(address, before + 1)
    return client.auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code), metadata=md(**metadata))


def test_the_lifecycle_through_the_real_process(make_client: Any) -> None:
    client = make_client(AUTH_TRUSTED_PROXIES="127.0.0.1")
    address = "ada@example.com"
    user = client.signup("ada", phone="(415) 555-0123", name="Ada")
    assert user.email_verified and user.phone == "+14155550123"

    # Sign-in by the phone, in another spelling; the account's first sign-in sends no notice.
    first = _sign_in(client, "415.555.0123", address, x_forwarded_for="203.0.113.7")
    assert not [m for m in client.smtp.to(address) if m.subject.startswith("New sign-in")]
    # Another browser on another network: a notice with a "This wasn't me" link.
    other = _sign_in(client, "ada", address, x_forwarded_for="198.51.100.9", x_user_agent=FIREFOX)
    notice = client.smtp.wait_for(address, _mail_count(client, address))
    assert notice.subject == "New sign-in: Firefox on Linux from 198.51.100.9"
    token = REPORT_TOKEN.search(notice.body)
    assert token is not None
    before = _mail_count(client, address)
    reported = client.auth.ReportSignIn(auth_pb2.ReportSignInRequest(token=token.group(1)))
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(other.access_token)).reason == (
        "SESSION_REVOKED"
    )
    assert fails(client.auth.ReportSignIn, auth_pb2.ReportSignInRequest(token=token.group(1))).reason == (
        "TOKEN_INVALID"
    )

    # The profile: only the masked field changes; the e-mail moves after a code to the new address.
    mask = field_mask_pb2.FieldMask(paths=["name"])
    updated = client.auth.UpdateMe(
        auth_pb2.UpdateMeRequest(name="Ada L.", phone="+1 212 555 0199", update_mask=mask),
        metadata=md(first.access_token),
    ).user
    assert (updated.name, updated.phone) == ("Ada L.", "+14155550123")
    change = client.auth.ChangeEmail(
        auth_pb2.ChangeEmailRequest(new_email="ada@example.org", current_password=PASSWORD),
        metadata=md(first.access_token),
    )
    code = client.smtp.last_code("ada@example.org", 1)
    moved = client.auth.ConfirmEmailChange(
        auth_pb2.ConfirmEmailChangeRequest(change_id=change.change_id, code=code), metadata=md(first.access_token)
    ).user
    assert moved.email == "ada@example.org" and moved.email_verified
    assert any("changed" in m.subject.lower() for m in client.smtp.to(address)[before:])  # the old address told

    # The reset the report started was for the old address and died with the change; a new one by phone.
    assert reported.reset_id
    started = client.auth.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(username_or_email="4155550123"))
    reset_mail = client.smtp.wait_for("ada@example.org", 2)
    assert reset_mail.subject == "Your password reset code"
    code = client.smtp.last_code("ada@example.org", 2)
    client.auth.ResetPassword(
        auth_pb2.ResetPasswordRequest(reset_id=started.reset_id, code=code, new_password=NEW_PASSWORD)
    )
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(first.access_token)).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    stored = client.store.find_user("default", "ada")
    assert stored is not None and stored.email == "ada@example.org" and stored.phone == "+14155550123"


def test_the_session_cap_through_the_real_process(make_client: Any) -> None:
    client = make_client(AUTH_MAX_SESSIONS_PER_USER="2")
    client.signup("capped")
    oldest, middle, newest = (client.sign_in("capped") for _ in range(3))
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(oldest.access_token)).reason == (
        "SESSION_REVOKED"
    )
    listed = client.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=md(newest.access_token)).sessions
    assert {s.id for s in listed} == {middle.session_id, newest.session_id}
