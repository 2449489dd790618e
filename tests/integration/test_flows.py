"""The account flows end to end over gRPC, on both stores, with codes read from real mail."""

from __future__ import annotations

import threading
from datetime import timedelta

import grpc
import pytest

from auth_client.gen.auth.v1 import access_pb2, admin_pb2, auth_pb2
from auth_server.infra.clock import utcnow
from tests.integration.conftest import PASSWORD, Client, md
from tests.support.mail import OTP_IN_MAIL
from tests.support.rpc import fails


@pytest.fixture
def server_mode() -> str:
    """The account flows run against the real `auth-server` process (mail through the SMTP sink)."""
    return "process"


def test_signup_mails_a_code_and_verify_creates_a_verified_plain_user(client: Client) -> None:
    started, mail = client.start_signup("Alice", email="Alice@Example.com", name="Alice A", phone="+44 20 7946 0018")
    assert started.signup_id and started.expires_at.seconds > 0 and started.delivery_hint == "a***@example.com"
    assert client.store.find_user("default", "alice") is None  # nothing exists before the code is redeemed
    (code,) = OTP_IN_MAIL.findall(mail.body)
    user = client.auth.VerifySignup(auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=code)).user
    assert (user.username, user.email, user.name, user.phone, user.role, user.locked, user.email_verified) == (
        "alice",
        "alice@example.com",
        "Alice A",
        "+442079460018",
        access_pb2.ROLE_USER,
        False,
        True,
    )
    assert user.id and user.created_at.seconds > 0 and user.tenant_id == "default"
    again = auth_pb2.SignupRequest(username="ALICE", email="other@example.com", password=PASSWORD)
    failure = fails(client.auth.Signup, again)
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")
    # A registered address is not told apart: the same answer, and its owner gets a notice instead of a code.
    known, notice = client.start_signup("alice2", email="ALICE@example.com")
    assert known.signup_id and known.delivery_hint == "a***@example.com"
    assert OTP_IN_MAIL.findall(notice.body) == [] and "/api/v1/auth/password/forgot" in notice.body
    assert client.store.find_user("default", "alice2") is None


def test_signup_reports_every_invalid_field(client: Client) -> None:
    request = auth_pb2.SignupRequest(username="a b", email="not-an-email", password="short", phone="call me")
    failure = fails(client.auth.Signup, request)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert set(failure.fields) == {"username", "email", "password", "phone"}
    same = auth_pb2.SignupRequest(username="samename1", email="s@example.com", password="SameName1")
    assert fails(client.auth.Signup, same).fields == ("password",)
    too_long = auth_pb2.SignupRequest(username="emoji", email="e@example.com", password="😀" * 19)  # 76 bytes
    assert fails(client.auth.Signup, too_long).fields == ("password",)


def test_walkthrough_login_code_session_revoke(client: Client) -> None:
    """The testing walkthrough of the session-based JWT reference, over gRPC."""
    client.signup("walker")
    login = client.auth.Login(auth_pb2.LoginRequest(username_or_email="walker@example.com", password=PASSWORD))
    assert login.delivery_hint == "w***@example.com" and login.expires_at.seconds > 0
    code = client.smtp.last_code("walker@example.com")
    tokens = client.auth.VerifyOtp(
        auth_pb2.VerifyOtpRequest(login_id=login.login_id, otp=code),
        metadata=md(x_user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"),
    )
    assert tokens.token_type == "Bearer" and tokens.access_token and tokens.refresh_token
    me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))
    assert me.user.username == "walker" and me.session_id == tokens.session_id
    sessions = client.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=md(tokens.access_token)).sessions
    assert [(s.id, s.is_current) for s in sessions] == [(tokens.session_id, True)]
    assert sessions[0].device_name == "Chrome on Windows" and sessions[0].ip_address == "127.0.0.1"
    client.auth.LogoutSession(
        auth_pb2.LogoutSessionRequest(session_id=tokens.session_id), metadata=md(tokens.access_token)
    )
    failure = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    stored = client.store.get_session("default", tokens.session_id)
    assert stored.revoked_at is not None  # kept for audit, not deleted


def test_unknown_user_and_wrong_password_look_the_same(client: Client) -> None:
    client.signup("known")
    unknown = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="nobody", password=PASSWORD))
    wrong = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="known", password=PASSWORD + "x"))
    assert (unknown.code, unknown.reason, unknown.message) == (wrong.code, wrong.reason, wrong.message)
    assert unknown.reason == "INVALID_CREDENTIALS"
    assert client.smtp.to("known@example.com") == []


def test_otp_rules(client: Client) -> None:
    client.signup("otto")
    login_id = client.login("otto")
    code = client.code_for("otto")
    wrong = "000000" if code != "000000" else "111111"
    failure = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=wrong))
    assert (failure.code, failure.reason, failure.metadata["attempts_left"]) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OTP_INVALID",
        "4",
    )
    assert client.store.get_challenge("default", login_id).attempts == 1
    # a newer login supersedes the older code
    newer_id = client.login("otto")
    assert fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code)).reason == "OTP_INVALID"
    newer_code = client.code_for("otto")
    tokens = client.auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=newer_id, otp=newer_code, device_name="Laptop"))
    assert tokens.session_id
    # a code works once
    again = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=newer_id, otp=newer_code))
    assert again.reason == "OTP_INVALID"
    devices = client.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=md(tokens.access_token)).sessions
    assert [d.device_name for d in devices] == ["Laptop"]


def test_otp_attempt_limit_even_for_the_right_code(client: Client) -> None:
    client.signup("guesser")
    login_id = client.login("guesser")
    code = client.code_for("guesser")
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert (
            fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=wrong)).reason
            == "OTP_INVALID"
        )
    failure = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code))
    assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_ATTEMPTS_EXCEEDED")


def test_expired_code(client: Client) -> None:
    client.signup("late")
    login_id = client.login("late")
    code = client.code_for("late")
    client.store.update_challenge("default", login_id, set={"expires_at": utcnow() - timedelta(seconds=1)})
    failure = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "OTP_EXPIRED")


def test_codes_are_rate_limited_per_user(make_client) -> None:
    client = make_client(AUTH_OTP_RESEND_INTERVAL="30")
    client.signup("hasty")
    client.login("hasty")
    failure = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="hasty", password=PASSWORD))
    assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert len(client.smtp.to("hasty@example.com")) == 1


def test_refresh_rotates_and_detects_reuse(client: Client) -> None:
    client.signup("rita")
    first = client.sign_in("rita")
    second = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert second.refresh_token != first.refresh_token and second.session_id == first.session_id
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(second.access_token)).user.username == "rita"
    stored = client.store.get_session("default", first.session_id)
    assert first.refresh_token.encode() not in stored.refresh_hash and stored.refresh_generation == 1
    failure = fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    # after theft even the newest tokens of the session are dead
    assert (
        fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=second.refresh_token)).reason
        == "SESSION_REVOKED"
    )
    assert (
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(second.access_token)).reason == "SESSION_REVOKED"
    )


def test_forged_refresh_token_does_not_revoke_the_victim(client: Client) -> None:
    client.signup("victim")
    tokens = client.sign_in("victim")
    prefix, sid, generation, mac = tokens.refresh_token.split(".")
    forged = f"{prefix}.{sid}.{generation}.{'A' * len(mac)}"
    assert fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=forged)).reason == "REFRESH_TOKEN_INVALID"
    assert client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token)).access_token


def test_concurrent_refresh_has_exactly_one_winner(client: Client) -> None:
    client.signup("racer")
    tokens = client.sign_in("racer")
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
            outcomes.append("ok")
        except grpc.RpcError as error:
            from tests.support.rpc import failure

            outcomes.append(failure(error).reason)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    assert set(outcomes) - {"ok"} <= {"REFRESH_TOKEN_REUSED", "SESSION_REVOKED"}


def test_refresh_grace_returns_the_same_pair(make_client) -> None:
    client = make_client(AUTH_REFRESH_GRACE="30")
    client.signup("mobile")
    first = client.sign_in("mobile")
    second = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    retry = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert (retry.access_token, retry.refresh_token) == (second.access_token, second.refresh_token)
    third = client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    # the grandparent is theft even inside the grace window
    failure = fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert failure.reason == "REFRESH_TOKEN_REUSED"
    assert (
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(third.access_token)).reason == "SESSION_REVOKED"
    )


def test_devices_logout_one_and_all(client: Client) -> None:
    client.signup("multi")
    phone = client.sign_in("multi", device="Phone")
    laptop = client.sign_in("multi", device="Laptop")
    tablet = client.sign_in("multi", device="Tablet")
    client.signup("other")
    other = client.sign_in("other")
    listed = client.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=md(laptop.access_token)).sessions
    assert {s.device_name for s in listed} == {"Phone", "Laptop", "Tablet"}
    assert [s.is_current for s in listed if s.device_name == "Laptop"] == [True]
    # another user's session: not found, and untouched
    failure = fails(
        client.auth.LogoutSession,
        auth_pb2.LogoutSessionRequest(session_id=other.session_id),
        metadata=md(laptop.access_token),
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(other.access_token)).user.username == "other"
    client.auth.LogoutSession(
        auth_pb2.LogoutSessionRequest(session_id=phone.session_id), metadata=md(laptop.access_token)
    )
    failure = fails(
        client.auth.LogoutSession,
        auth_pb2.LogoutSessionRequest(session_id=phone.session_id),
        metadata=md(laptop.access_token),
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_ALREADY_REVOKED")
    kept = client.auth.LogoutAll(auth_pb2.LogoutAllRequest(keep_current=True), metadata=md(laptop.access_token))
    assert kept.revoked_count == 1
    assert (
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(tablet.access_token)).reason == "SESSION_REVOKED"
    )
    assert client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(laptop.access_token)).revoked_count == 1
    assert (
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(laptop.access_token)).reason == "SESSION_REVOKED"
    )


def test_change_password_revokes_every_session(client: Client) -> None:
    client.signup("pat")
    one = client.sign_in("pat")
    client.sign_in("pat")
    failure = fails(
        client.auth.ChangePassword,
        auth_pb2.ChangePasswordRequest(current_password="wrong password", new_password="a brand new secret"),
        metadata=md(one.access_token),
    )
    assert failure.reason == "INVALID_CREDENTIALS"
    changed = client.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="a brand new secret"),
        metadata=md(one.access_token),
    )
    assert changed.revoked_count == 2
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(one.access_token)).reason == "SESSION_REVOKED"
    assert fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="pat", password=PASSWORD)).reason == (
        "INVALID_CREDENTIALS"
    )
    assert client.sign_in("pat", password="a brand new secret").access_token


def test_admin_lists_locks_unlocks_and_sets_roles(client: Client) -> None:
    admin = client.sign_in_admin("root")
    for name in ("usr1", "usr2", "usr3"):
        client.signup(name)
    victim = client.sign_in("usr2")
    page = client.admin.ListUsers(admin_pb2.ListUsersRequest(page_size=2), metadata=md(admin))
    assert [u.username for u in page.users] == ["root", "usr1"] and page.next_page_token
    rest = client.admin.ListUsers(
        admin_pb2.ListUsersRequest(page_size=2, page_token=page.next_page_token), metadata=md(admin)
    )
    assert [u.username for u in rest.users] == ["usr2", "usr3"] and rest.next_page_token == ""
    u2 = rest.users[0]
    assert (
        client.admin.LockUser(
            admin_pb2.LockUserRequest(user_id=u2.id, reason="abuse"), metadata=md(admin)
        ).revoked_count
        == 1
    )
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(victim.access_token)).reason in (
        "SESSION_REVOKED",
        "ACCOUNT_LOCKED",
    )
    assert (
        fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="usr2", password=PASSWORD)).reason
        == "ACCOUNT_LOCKED"
    )
    client.admin.UnlockUser(admin_pb2.UnlockUserRequest(user_id=u2.id), metadata=md(admin))
    assert client.sign_in("usr2").access_token
    promoted = client.admin.SetUserRole(
        admin_pb2.SetUserRoleRequest(user_id=u2.id, role=access_pb2.ROLE_MANAGER), metadata=md(admin)
    )
    assert promoted.user.role == access_pb2.ROLE_MANAGER
    missing = fails(client.admin.LockUser, admin_pb2.LockUserRequest(user_id="0" * 32), metadata=md(admin))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


def test_the_last_admin_cannot_lock_or_demote_themselves(client: Client) -> None:
    admin = client.sign_in_admin("solo")
    me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(admin)).user
    failure = fails(client.admin.LockUser, admin_pb2.LockUserRequest(user_id=me.id), metadata=md(admin))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LAST_ADMIN")
    failure = fails(
        client.admin.SetUserRole,
        admin_pb2.SetUserRoleRequest(user_id=me.id, role=access_pb2.ROLE_USER),
        metadata=md(admin),
    )
    assert failure.reason == "LAST_ADMIN"
    assert client.store.find_user("default", "solo").role == "admin"


def test_introspect_answers_for_live_and_dead_tokens(client: Client) -> None:
    client.signup("intro")
    tokens = client.sign_in("intro")
    service = md(client.service_token())  # Introspect is for service callers (AUTH_INTROSPECT_ACCESS)
    live = client.auth.Introspect(auth_pb2.IntrospectRequest(access_token=tokens.access_token), metadata=service)
    assert live.active and live.user.username == "intro" and live.session_id == tokens.session_id
    assert live.expires_at.seconds == tokens.access_token_expires_at.seconds
    assert live.tenant_id == "default"
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    dead = client.auth.Introspect(auth_pb2.IntrospectRequest(access_token=tokens.access_token), metadata=service)
    assert not dead.active and not dead.HasField("user") and dead.inactive_reason == "SESSION_REVOKED"
    garbage = client.auth.Introspect(auth_pb2.IntrospectRequest(access_token="garbage"), metadata=service)
    assert not garbage.active and garbage.inactive_reason == "TOKEN_INVALID"


def test_tenants_are_isolated(client: Client) -> None:
    client.signup("twin", tenant="acme")
    client.signup("twin")  # the same username is free in another tenant
    acme = client.sign_in("twin", tenant="acme")
    default = client.sign_in("twin")
    acme_me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(acme.access_token, "acme")).user
    default_me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(default.access_token)).user
    assert acme_me.id != default_me.id and acme_me.tenant_id == "acme"
    sessions = client.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=md(acme.access_token, "acme")).sessions
    assert [s.id for s in sessions] == [acme.session_id]
    failure = fails(
        client.auth.LogoutSession,
        auth_pb2.LogoutSessionRequest(session_id=default.session_id),
        metadata=md(acme.access_token, "acme"),
    )
    assert failure.reason == "SESSION_NOT_FOUND"


@pytest.mark.parametrize("service", ["", "auth.v1.AuthService", "auth.v1.AdminService"])
def test_health_is_serving(client: Client, service: str) -> None:
    from grpc_health.v1 import health_pb2

    response = client.health.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
