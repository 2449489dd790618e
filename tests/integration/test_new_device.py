"""The new-device sign-in notice and its "This wasn't me" link, through the server on both stores, with
mail read from the SMTP sink, over gRPC and over the HTTP bridge (the confirmation page and its forms).

Client addresses are set with x-forwarded-for (the test servers trust 127.0.0.1) and browsers with
x-user-agent, as the bridge sends them.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest

from auth_client.gen.auth.v1 import auth_pb2
from auth_server.domain import new_device
from auth_server.infra.clock import utcnow
from auth_server.store.base import Session
from tests.integration.conftest import PASSWORD, Client, md
from tests.integration.test_password_reset import NEW_PASSWORD, make_user
from tests.support.mail import OTP_IN_MAIL, Mail
from tests.support.rpc import fails, failure

CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
HOME, HOME_TOO, ELSEWHERE = "203.0.113.7", "203.0.113.200", "198.51.100.9"
TOKEN = re.compile(r"/api/v1/auth/signin/report\?token=([A-Za-z.]+)")


@pytest.fixture
def client(make_client: Any) -> Client:
    return make_client(AUTH_TRUSTED_PROXIES="127.0.0.1")


def sign_in(
    client: Client, name: str, ip: str, agent: str, device_token: str = "", password: str = PASSWORD
) -> auth_pb2.VerifyOtpResponse:
    """Login and VerifyOtp from `ip` with the browser `agent`; the code read from the mail."""
    headers = md(x_forwarded_for=ip, x_user_agent=agent)
    before = len(client.smtp.to(f"{name}@example.com"))
    login = auth_pb2.LoginRequest(username_or_email=name, password=password, device_token=device_token)
    login_id = client.auth.Login(login, metadata=headers).login_id
    code = client.smtp.last_code(f"{name}@example.com", before + 1)
    return client.auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code), metadata=headers)


def notices(client: Client, name: str) -> list[Mail]:
    return [m for m in client.smtp.to(f"{name}@example.com") if m.subject.startswith("New sign-in")]


def report_token(mail: Mail) -> str:
    match = TOKEN.search(mail.body)
    assert match, mail.body
    return match.group(1)


def session(client: Client, session_id: str) -> Session:
    stored = client.store.get_session("default", session_id)
    assert stored is not None
    return stored


def test_a_new_network_or_browser_is_noticed_and_known_devices_are_not(client: Client) -> None:
    make_user(client, "noticed")
    first = sign_in(client, "noticed", HOME, CHROME_LINUX)
    assert notices(client, "noticed") == []  # an account's very first sign-in
    sign_in(client, "noticed", HOME_TOO, CHROME_LINUX)  # the same browser on the same /24
    assert notices(client, "noticed") == []

    elsewhere = sign_in(client, "noticed", ELSEWHERE, CHROME_LINUX)
    [mail] = notices(client, "noticed")
    assert mail.subject == f"New sign-in: Chrome on Linux from {ELSEWHERE}"
    assert re.search(
        rf"New sign-in: Chrome on Linux from {re.escape(ELSEWHERE)} at \d{{4}}-\d\d-\d\d \d\d:\d\d UTC", (mail.body)
    )
    assert not OTP_IN_MAIL.search(mail.body)  # a notice holds nothing that reads as a code
    token = report_token(mail)
    challenge = client.store.get_challenge("default", new_device.decode_token(token)[0])
    assert challenge.kind == "signin_report" and new_device.session_of(challenge) == elsewhere.session_id
    assert timedelta(days=6, hours=23) < challenge.expires_at - utcnow() <= timedelta(days=7)
    assert token.encode() not in challenge.otp_hash  # only a keyed hash is kept

    sign_in(client, "noticed", HOME, FIREFOX_LINUX)  # another browser on a known network
    assert len(notices(client, "noticed")) == 2
    # A device token of this user makes any network and browser known.
    sign_in(client, "noticed", "192.0.2.44", "curl/8.5", device_token=first.device_token)
    assert len(notices(client, "noticed")) == 2
    # IPv6: the same /48 is the same network.
    sign_in(client, "noticed", "2001:db8:1:2::1", CHROME_LINUX)
    assert len(notices(client, "noticed")) == 3
    sign_in(client, "noticed", "2001:db8:1:ffff::9", CHROME_LINUX)
    assert len(notices(client, "noticed")) == 3


def test_no_notice_when_turned_off(make_client: Any) -> None:
    client = make_client(AUTH_TRUSTED_PROXIES="127.0.0.1", AUTH_NEW_DEVICE_MAIL="off")
    make_user(client, "quiet")
    sign_in(client, "quiet", HOME, CHROME_LINUX)
    sign_in(client, "quiet", ELSEWHERE, FIREFOX_LINUX)
    assert notices(client, "quiet") == []


def test_a_failed_notice_never_fails_the_sign_in(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    make_user(client, "unmailed")
    sign_in(client, "unmailed", HOME, CHROME_LINUX)
    deliver = client.smtp.handle_DATA

    async def refuse_notices(server: Any, smtp_session: Any, envelope: Any) -> str:
        if b"Subject: New sign-in" in envelope.content:
            return "554 5.7.1 refused"  # the mail server turns the notice away: MailError in the service
        return await deliver(server, smtp_session, envelope)

    monkeypatch.setattr(client.smtp, "handle_DATA", refuse_notices)
    tokens = sign_in(client, "unmailed", ELSEWHERE, FIREFOX_LINUX)
    assert session(client, tokens.session_id).revoked_at is None
    assert notices(client, "unmailed") == []


def test_this_was_not_me_ends_the_session_and_starts_a_reset(client: Client) -> None:
    make_user(client, "victim")
    owner = sign_in(client, "victim", HOME, CHROME_LINUX)
    thief = sign_in(client, "victim", ELSEWHERE, FIREFOX_LINUX)
    token = report_token(notices(client, "victim")[0])
    before = len(client.smtp.to("victim@example.com"))

    started = client.auth.ReportSignIn(auth_pb2.ReportSignInRequest(token=token))
    assert len(started.reset_id) == 32 and started.HasField("expires_at")
    revoked = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(thief.access_token))
    assert revoked.reason == "SESSION_REVOKED"
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(owner.access_token)).session_id  # the owner's stays
    again = fails(client.auth.ReportSignIn, auth_pb2.ReportSignInRequest(token=token))
    assert again.code == grpc.StatusCode.UNAUTHENTICATED and again.reason == "TOKEN_INVALID"

    code = client.smtp.last_code("victim@example.com", before + 1)  # a reset code, as RequestPasswordReset mails
    done = client.auth.ResetPassword(
        auth_pb2.ResetPasswordRequest(reset_id=started.reset_id, code=code, new_password=NEW_PASSWORD)
    )
    assert done.revoked_count == 1  # the owner's session too: the thief may know the password
    events = [e.type for e in client.store.list_events("default", None, 50)]
    assert "signin.reported" in events and "password.reset" in events


def test_report_tokens_that_are_wrong_expired_or_raced(client: Client) -> None:
    make_user(client, "reporter")
    sign_in(client, "reporter", HOME, CHROME_LINUX)
    sign_in(client, "reporter", ELSEWHERE, CHROME_LINUX)
    sign_in(client, "reporter", "192.0.2.1", CHROME_LINUX)
    first, second = (report_token(m) for m in notices(client, "reporter"))
    prefix, _, secret = first.partition(".")
    for bad in (
        "",
        "x",
        first + "a",
        f"{prefix}.{secret[:-1]}{'B' if secret.endswith('A') else 'A'}",
        f"{prefix[:-1]}.{secret}",
        "a" * 300,
        "é.x",
    ):
        assert fails(client.auth.ReportSignIn, auth_pb2.ReportSignInRequest(token=bad)).reason == "TOKEN_INVALID"

    challenge_id = new_device.decode_token(first)[0]
    client.store.update_challenge("default", challenge_id, set={"expires_at": utcnow() - timedelta(seconds=1)})
    assert fails(client.auth.ReportSignIn, auth_pb2.ReportSignInRequest(token=first)).reason == "TOKEN_INVALID"

    def report(_: int) -> str:
        try:
            client.auth.ReportSignIn(auth_pb2.ReportSignInRequest(token=second))
        except grpc.RpcError as error:
            return failure(error).reason
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(report, range(8)))
    assert outcomes.count("ok") == 1 and set(outcomes) == {"ok", "TOKEN_INVALID"}, outcomes


# --- over the HTTP bridge


def test_the_report_link_page_and_its_forms(client: Client, bridge: httpx.Client) -> None:
    make_user(client, "browser")
    sign_in(client, "browser", HOME, CHROME_LINUX)
    thief = sign_in(client, "browser", ELSEWHERE, FIREFOX_LINUX)
    token = report_token(notices(client, "browser")[0])

    page = bridge.get("/api/v1/auth/signin/report", params={"token": token})  # a mail scanner, or the owner
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<form method="post" action="report">' in page.text and f'value="{token}"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert session(client, thief.session_id).revoked_at is None  # the GET changed nothing
    assert bridge.get("/api/v1/auth/signin/report").status_code == 400

    mails = len(client.smtp.to("browser@example.com"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    done = bridge.post("/api/v1/auth/signin/report", content=f"token={token}".encode(), headers=form)
    assert done.status_code == 200 and "That sign-in was ended" in done.text
    assert session(client, thief.session_id).revoked_at is not None
    reset_id = re.search(r'name="reset_id" value="([0-9a-f]{32})"', done.text).group(1)
    assert 'action="../password/reset"' in done.text
    code = client.smtp.last_code("browser@example.com", mails + 1)

    again = bridge.post("/api/v1/auth/signin/report", data={"token": token})
    assert again.status_code == 401 and "did not work" in again.text

    fields = {"reset_id": reset_id, "code": f"{(int(code) + 1) % 1_000_000:06d}", "new_password": NEW_PASSWORD}
    wrong = bridge.post("/api/v1/auth/password/reset", data=fields)
    assert wrong.status_code == 401 and f'value="{reset_id}"' in wrong.text  # the form again, to retry
    reset = bridge.post("/api/v1/auth/password/reset", data={**fields, "code": code})
    assert reset.status_code == 200 and "Your password was reset" in reset.text
    assert client.smtp.wait_for("browser@example.com", mails + 2).subject == "Your password was reset"
    assert sign_in(client, "browser", HOME, CHROME_LINUX, password=NEW_PASSWORD).access_token


def test_forgot_and_reset_routes_over_json(client: Client, bridge: httpx.Client) -> None:
    make_user(client, "jsonreset")
    started = bridge.post("/api/v1/auth/password/forgot", json={"usernameOrEmail": "jsonreset"})
    assert started.status_code == 200 and set(started.json()) == {"resetId", "expiresAt"}
    unknown = bridge.post("/api/v1/auth/password/forgot", json={"usernameOrEmail": "nobody-at-all"})
    assert unknown.status_code == 200 and set(unknown.json()) == {"resetId", "expiresAt"}
    client.smtp.wait_for("jsonreset@example.com")
    code = client.smtp.last_code("jsonreset@example.com")
    body = {"resetId": started.json()["resetId"], "code": code, "newPassword": NEW_PASSWORD}
    done = bridge.post("/api/v1/auth/password/reset", json=body)
    assert done.status_code == 200, done.text
    again = bridge.post("/api/v1/auth/password/reset", json=body)
    assert again.status_code == 401 and again.json()["error"]["reason"] == "otp_invalid"
