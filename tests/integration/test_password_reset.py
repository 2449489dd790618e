"""Forgotten password through the server, on both stores, with the code read from the SMTP sink:
RequestPasswordReset answers the same (fields and timing) for unknown identifiers, throttles mail
bombing, and ResetPassword takes a code once, five tries at most, within its lifetime, one winner of
parallel calls; a reset ends every session, device and pending login and the new password works.

Users are created in the store, as `auth-server` would hash them, rather than through Signup, which
another change turns into a verified flow.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from typing import Any

import bcrypt
import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2
from auth_server.domain import known_devices
from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.store.base import User
from tests.integration.conftest import PASSWORD, SECRET, Client, md
from tests.support.mail import OTP_IN_MAIL
from tests.support.rpc import fails, failure

NEW_PASSWORD = "purple elephant marmalade"
TTL_MINUTES = 15


def make_user(client: Client, name: str, password: str = PASSWORD, tenant: str = "default") -> User:
    user = User(
        id=new_id(),
        username=name,
        email=f"{name}@example.com",
        name="",
        phone="",
        role="user",
        password_hash=bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)),
        created_at=utcnow(),
    )
    client.store.create_user(tenant, user)
    return user


def request_reset(client: Client, identifier: str, **metadata: str) -> auth_pb2.RequestPasswordResetResponse:
    return client.auth.RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(username_or_email=identifier), metadata=md(**metadata)
    )


def reset(client: Client, reset_id: str, code: str, password: str = NEW_PASSWORD) -> auth_pb2.ResetPasswordResponse:
    return client.auth.ResetPassword(auth_pb2.ResetPasswordRequest(reset_id=reset_id, code=code, new_password=password))


def reset_code(client: Client, name: str, count: int) -> str:
    """The code of the count-th mail to `name` (reset mails leave off the request path: wait for it)."""
    mail = client.smtp.wait_for(f"{name}@example.com", count)
    assert mail.subject == "Your password reset code"
    return client.smtp.last_code(f"{name}@example.com", count)


def mails(client: Client, name: str) -> int:
    return len(client.smtp.to(f"{name}@example.com"))


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_forgotten_password_flow_ends_everything_and_the_new_password_works(client: Client) -> None:
    user = make_user(client, "forgetful")
    first = client.sign_in("forgetful")
    second = client.sign_in("forgetful")
    pending = client.login("forgetful")  # a login whose code is never redeemed
    pending_code = client.code_for("forgetful")
    before = mails(client, "forgetful")

    started = request_reset(client, "Forgetful@Example.com ")  # read as Login reads it
    assert len(started.reset_id) == 32
    lifetime = started.expires_at.ToDatetime(tzinfo=UTC) - utcnow()
    assert timedelta(minutes=TTL_MINUTES - 1) < lifetime <= timedelta(minutes=TTL_MINUTES)
    code = reset_code(client, "forgetful", before + 1)

    answer = reset(client, started.reset_id, code)
    assert answer.revoked_count == 2
    notice = client.smtp.wait_for("forgetful@example.com", before + 2)
    assert notice.subject == "Your password was reset" and not OTP_IN_MAIL.search(notice.body)

    for tokens in (first, second):  # every session ended
        assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(tokens.access_token)).reason == (
            "SESSION_REVOKED"
        )
    late = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=pending, otp=pending_code))
    assert late.reason == "OTP_INVALID"  # the pending login died with the old password
    stored = client.store.get_user("default", user.id)
    keys = KeyRing.from_secret(SECRET.encode())
    assert not known_devices.is_known(keys, first.device_token, stored, utcnow(), 31536000)  # devices forgotten
    assert stored.unlock_token_hash is None and stored.password_changed_at is not None

    again = fails(reset, client, started.reset_id, code)  # a code works once
    assert again.code == grpc.StatusCode.UNAUTHENTICATED and again.reason == "OTP_INVALID"
    old = fails(client.login, "forgetful")
    assert old.reason == "INVALID_CREDENTIALS"
    assert client.sign_in("forgetful", password=NEW_PASSWORD).access_token
    events = [e.type for e in client.store.list_events("default", None, 50, user_id=user.id)]
    assert "password.reset" in events and "password.reset_requested" in events


@pytest.mark.parametrize("server_mode", ["process"])
def test_the_real_process_resets_a_password_by_phone_or_email(make_client: Any) -> None:
    client = make_client()
    make_user(client, "procreset")
    started = request_reset(client, "procreset@example.com")
    code = reset_code(client, "procreset", 1)
    assert reset(client, started.reset_id, code).revoked_count == 0
    client.smtp.wait_for("procreset@example.com", 2)  # the notice
    assert client.sign_in("procreset", password=NEW_PASSWORD).access_token


def test_an_unknown_identifier_gets_the_same_answer_and_no_mail(client: Client) -> None:
    make_user(client, "known")
    known = request_reset(client, "known")
    unknown = request_reset(client, "nobody-here")
    for answer in (known, unknown):
        assert answer.HasField("expires_at") and len(answer.reset_id) == 32 and answer.reset_id.isalnum()
    delta = known.expires_at.ToDatetime() - unknown.expires_at.ToDatetime()
    assert abs(delta.total_seconds()) < 5
    reset_code(client, "known", 1)
    assert client.smtp.to("nobody-here@example.com") == []
    # A wrong code reads the same for both reset ids, down to the attempts left.
    wrong = [fails(reset, client, answer.reset_id, "000000") for answer in (known, unknown)]
    assert {(w.code, w.reason, w.metadata.get("attempts_left")) for w in wrong} == {
        (grpc.StatusCode.UNAUTHENTICATED, "OTP_INVALID", "4")
    }
    # As does an e-mail address no account has.
    assert len(request_reset(client, "nobody@example.com").reset_id) == 32


def test_reset_requests_take_the_same_time_for_unknown_identifiers(make_client: Any) -> None:
    client = make_client(AUTH_SOURCE_LOGIN_RATE="0")
    make_user(client, "timed")
    rounds = 15
    known_times: list[float] = []
    unknown_times: list[float] = []
    # Interleaved, the first two rounds warm up; each request supersedes the one before for its identifier.
    for i in range(rounds + 2):
        for identifier, times in (("timed", known_times), ("ghost", unknown_times)):
            started = time.perf_counter()
            request_reset(client, identifier)
            if i >= 2:
                times.append(time.perf_counter() - started)
    ratio = statistics.median(unknown_times) / statistics.median(known_times)
    assert 0.5 <= ratio <= 2.0, (ratio, known_times, unknown_times)
    client.smtp.wait_for("timed@example.com", rounds + 2)


def test_wrong_expired_superseded_and_malformed_codes(client: Client) -> None:
    make_user(client, "guessed")
    started = request_reset(client, "guessed")
    code = reset_code(client, "guessed", 1)
    for left in range(4, -1, -1):
        wrong = fails(reset, client, started.reset_id, other_code(code))
        assert wrong.reason == "OTP_INVALID" and wrong.metadata["attempts_left"] == str(left)
    dead = fails(reset, client, started.reset_id, code)  # five wrong codes: even the right one is refused
    assert dead.code == grpc.StatusCode.RESOURCE_EXHAUSTED and dead.reason == "OTP_ATTEMPTS_EXCEEDED"

    older = request_reset(client, "guessed")
    older_code = reset_code(client, "guessed", 2)
    newer = request_reset(client, "guessed")
    newer_code = reset_code(client, "guessed", 3)
    assert fails(reset, client, older.reset_id, older_code).reason == "OTP_INVALID"  # superseded

    client.store.update_challenge("default", newer.reset_id, set={"expires_at": utcnow() - timedelta(seconds=1)})
    expired = fails(reset, client, newer.reset_id, newer_code)
    assert expired.code == grpc.StatusCode.UNAUTHENTICATED and expired.reason == "OTP_EXPIRED"

    for reset_id, code_ in (("", "123456"), ("x" * 65, "123456"), ("../etc", "123456"), (new_id(), "123456")):
        assert fails(reset, client, reset_id, code_).reason == "OTP_INVALID"
    # A login id is no reset id, and a reset code is no login code.
    login_id = client.login("guessed")
    login_code = client.code_for("guessed")
    assert fails(reset, client, login_id, login_code).reason == "OTP_INVALID"
    fresh = request_reset(client, "guessed")
    fresh_code = reset_code(client, "guessed", 5)
    verify = auth_pb2.VerifyOtpRequest(login_id=fresh.reset_id, otp=fresh_code)
    assert fails(client.auth.VerifyOtp, verify).reason == "OTP_INVALID"
    assert reset(client, fresh.reset_id, fresh_code).revoked_count == 0  # still good for its own purpose


def test_the_new_password_meets_the_policy_and_a_refusal_keeps_the_reset(client: Client) -> None:
    make_user(client, "policyholder")
    started = request_reset(client, "policyholder")
    code = reset_code(client, "policyholder", 1)
    weak = fails(reset, client, started.reset_id, code, "short")
    assert weak.reason == "VALIDATION_FAILED" and weak.fields == ("new_password",)
    named = fails(reset, client, started.reset_id, code, "policyholder")  # the username: refused once known
    assert named.reason == "VALIDATION_FAILED" and named.fields == ("new_password",)
    assert reset(client, started.reset_id, code).revoked_count == 0


def test_parallel_resets_with_the_right_code_have_one_winner(client: Client) -> None:
    make_user(client, "racer")
    client.sign_in("racer")
    started = request_reset(client, "racer")
    code = reset_code(client, "racer", 2)

    def attempt(i: int) -> str:
        try:
            reset(client, started.reset_id, code, f"{NEW_PASSWORD} {i}")
        except grpc.RpcError as error:
            return failure(error).reason
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count("ok") == 1, outcomes
    assert set(outcomes) - {"ok"} <= {"OTP_INVALID", "OTP_ATTEMPTS_EXCEEDED"}
    winner = outcomes.index("ok")
    client.smtp.wait_for("racer@example.com", 3)  # the notice, before the next code
    assert client.sign_in("racer", password=f"{NEW_PASSWORD} {winner}").access_token


def test_mail_bombing_is_refused_alike_for_every_identifier(make_client: Any) -> None:
    client = make_client(AUTH_OTP_RESEND_INTERVAL="30", AUTH_SOURCE_LOGIN_RATE="5")
    make_user(client, "bombed")
    request_reset(client, "bombed")
    request_reset(client, "someone-else")
    refusals = [fails(request_reset, client, name) for name in ("bombed", "someone-else")]
    for refused in refusals:
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and refused.reason == "RATE_LIMITED"
        assert refused.retry_after is not None and 0 < refused.retry_after <= 30
    assert refusals[0].message == refusals[1].message
    client.smtp.wait_for("bombed@example.com", 1)
    # The per-source rate: 5 a minute from one address, whatever the identifier.
    request_reset(client, "third")
    refused = fails(request_reset, client, "fourth")
    assert refused.reason == "RATE_LIMITED" and "network" in refused.message
    assert len(client.smtp.to("bombed@example.com")) == 1


def test_wrong_reset_codes_spend_the_account_budget(make_client: Any) -> None:
    client = make_client(AUTH_ACCOUNT_FAILURE_LIMIT="3")
    make_user(client, "budget")
    for name in ("budget", "phantom"):
        first = request_reset(client, name)
        for _ in range(2):
            assert fails(reset, client, first.reset_id, "999999").reason in ("OTP_INVALID",)
        second = request_reset(client, name)  # a new reset id is no new budget
        assert fails(reset, client, second.reset_id, "999999").reason == "OTP_INVALID"
        spent = fails(reset, client, second.reset_id, "999999")
        assert spent.code == grpc.StatusCode.RESOURCE_EXHAUSTED and spent.reason == "RATE_LIMITED"
        # ... and Login by that identifier reads the same for both.
        refused = fails(client.login, name)
        assert refused.reason == "RATE_LIMITED"
    assert any(m.subject == "Failed sign-in attempts on your account" for m in client.smtp.to("budget@example.com"))


def test_an_empty_identifier_is_a_validation_error(client: Client) -> None:
    refused = fails(request_reset, client, "  ")
    assert refused.reason == "VALIDATION_FAILED" and refused.fields == ("username_or_email",)
