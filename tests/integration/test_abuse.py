"""Abuse resistance: each brute-force defence attacked the way an attacker would turn it against users.

Every test here is an attack from the security review (issue 11), on both stores, asserting what the
victim and the attacker each see and what was stored. Several sources are played as a real deployment
behind a proxy would: the test's address is a trusted proxy and `x-forwarded-for` names the client.

Requirements: OWASP ASVS 5.0 V6.3.1 (brute force without a lock-out weapon), NIST SP 800-63B 5.2.2
(throttling that does not lock the subscriber out), OWASP "Slow down online guessing" (device cookies).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import access_pb2, admin_pb2, auth_pb2
from auth_server.infra.config import ConfigError, load_settings
from tests.integration.conftest import PASSWORD, Client, md
from tests.integration.test_attacks import in_parallel
from tests.support.mail import UNLOCK_IN_MAIL
from tests.support.rpc import fails, failure

TRUST = {"AUTH_TRUSTED_PROXIES": "127.0.0.1/32"}
ATTACKER, OWNER, ELSEWHERE = "198.51.100.66", "203.0.113.7", "192.0.2.44"
NEW_PASSWORD = "a brand new passphrase 42"


def login_from(client: Client, identifier: str, password: str, ip: str, device_token: str = "") -> str:
    """One Login from `ip`: "OK" or the failure's reason."""
    request = auth_pb2.LoginRequest(username_or_email=identifier, password=password, device_token=device_token)
    try:
        client.auth.Login(request, metadata=md(x_forwarded_for=ip))
    except grpc.RpcError as error:
        return failure(error).reason
    return "OK"


def code_after_login(client: Client, username: str, ip: str, device_token: str = "") -> tuple[str, str]:
    """Login with the right password from `ip`; the login_id and the code that was mailed."""
    address = f"{username}@example.com"
    before = len(client.smtp.to(address))
    request = auth_pb2.LoginRequest(username_or_email=username, password=PASSWORD, device_token=device_token)
    login_id = client.auth.Login(request, metadata=md(x_forwarded_for=ip)).login_id
    return login_id, client.smtp.last_code(address, count=before + 1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def events(client: Client, kind: str) -> list[Any]:
    return [e for e in client.store.list_events("default", None, 500) if e.type == kind]


# --- row 1: failures never end sessions, and the owner elsewhere is not affected ----------------------


def test_failed_logins_never_end_the_victims_sessions_or_lock_the_owner_out(make_client: Any) -> None:
    client = make_client(**TRUST)
    client.signup("victim")
    session = client.sign_in("victim")
    reasons = [login_from(client, "victim@example.com", "attacker guess", ATTACKER) for _ in range(7)]
    assert reasons == ["INVALID_CREDENTIALS"] * 5 + ["RATE_LIMITED"] * 2
    refused = fails(
        client.auth.Login,
        auth_pb2.LoginRequest(username_or_email="victim@example.com", password="x"),
        metadata=md(x_forwarded_for=ATTACKER),
    )
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.retry_after is not None and 0 < refused.retry_after <= 900

    # The victim's signed-in device keeps working, and its refresh token still rotates.
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(session.access_token)).user.username == "victim"
    client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=session.refresh_token))
    stored = client.store.get_session("default", session.session_id)
    assert stored.revoked_at is None
    # The owner from their own network signs in as usual, with the same identifier.
    assert login_from(client, "victim@example.com", PASSWORD, OWNER) == "OK"
    user = client.store.find_user("default", "victim")
    assert not user.admin_locked and user.locked_until is None
    assert not [m for m in client.smtp.to("victim@example.com") if "lock" in m.subject.lower()]  # no mail bomb


# --- row 3: the answers never tell who exists ----------------------------------------------------------


def test_every_throttle_answers_the_same_for_an_identifier_no_account_has(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_ACCOUNT_FAILURE_LIMIT="8")
    client.signup("known")

    def attack(identifier: str) -> list[tuple[grpc.StatusCode, str, bool]]:
        seen = []
        for ip in [ATTACKER] * 6 + [OWNER] * 3 + [ELSEWHERE]:  # a per-source lock, then the account budget
            request = auth_pb2.LoginRequest(username_or_email=identifier, password="wrong password")
            f = fails(client.auth.Login, request, metadata=md(x_forwarded_for=ip))
            seen.append((f.code, f.reason, f.retry_after is not None))
        return seen

    existing, unknown = attack("known"), attack("nobody-has-this-name")
    assert existing == unknown
    assert [r for _, r, _ in existing] == ["INVALID_CREDENTIALS"] * 5 + ["RATE_LIMITED"] + [
        "INVALID_CREDENTIALS"
    ] * 3 + ["RATE_LIMITED"]


# --- row 4: a parallel burst is checked at most `threshold` times and locks once ---------------------


def test_a_parallel_burst_verifies_at_most_the_threshold_and_starts_one_lock(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_LOCKOUT_THRESHOLD="5", AUTH_SOURCE_LOGIN_RATE="0")
    client.signup("burst")
    outcomes = in_parallel(18, lambda i: login_from(client, "burst", f"guess {i}", ATTACKER))
    assert outcomes.count("INVALID_CREDENTIALS") == 5, outcomes  # only five passwords were checked
    assert outcomes.count("RATE_LIMITED") == 13, outcomes
    assert len(events(client, "login.source_locked")) == 1
    assert len(events(client, "login.failed")) == 5
    assert client.smtp.to("burst@example.com") == []  # a per-source lock mails nobody


# --- row 2 and point 3: per-source rate, and a fair hashing pool --------------------------------------


def test_one_source_gets_a_limited_number_of_password_checks_a_minute(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_SOURCE_LOGIN_RATE="3")
    outcomes = [login_from(client, f"nobody{i}", "some password", ATTACKER) for i in range(5)]
    assert outcomes == ["INVALID_CREDENTIALS"] * 3 + ["RATE_LIMITED"] * 2
    refused = fails(
        client.auth.Login,
        auth_pb2.LoginRequest(username_or_email="x", password="y"),
        metadata=md(x_forwarded_for=ATTACKER),
    )
    assert refused.retry_after is not None and 0 < refused.retry_after <= 60
    assert login_from(client, "nobody9", "some password", OWNER) == "INVALID_CREDENTIALS"  # others unaffected


def test_a_flood_from_one_source_does_not_starve_logins_from_others(make_client: Any) -> None:
    # The pool itself is under test: no per-source rate, a real bcrypt cost, many more floods than cores.
    client = make_client(**TRUST, AUTH_SOURCE_LOGIN_RATE="0", AUTH_BCRYPT_ROUNDS="10")
    names = [f"legit{i}" for i in range(3)]
    for name in names:
        client.signup(name)
    stop = threading.Event()
    flood_outcomes: list[str] = []

    def flood(i: int) -> None:
        n = 0
        while not stop.is_set():
            flood_outcomes.append(login_from(client, f"ghost{i}-{n}", "not it", ATTACKER))
            n += 1

    flooders = [threading.Thread(target=flood, args=(i,)) for i in range(24)]
    for t in flooders:
        t.start()
    try:
        outcomes = [
            login_from(client, name, PASSWORD, f"203.0.113.{10 + k}") for k, name in enumerate(names) for _ in range(4)
        ]
    finally:
        stop.set()
        for t in flooders:
            t.join()
    assert outcomes == ["OK"] * len(outcomes), outcomes
    assert "RATE_LIMITED" in flood_outcomes  # the flood itself was held back, not the others


# --- row 5: wrong codes spend the account budget; a known device still gets in -------------------------


def test_wrong_codes_spend_the_account_budget_and_a_known_device_still_signs_in(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_ACCOUNT_FAILURE_LIMIT="7")
    client.signup("phished")
    owner = client.sign_in("phished")
    assert owner.device_token.startswith("dv1.")

    # The attacker knows the password and guesses codes: five per login, then logs in again.
    login_id, code = code_after_login(client, "phished", ATTACKER)
    for _ in range(5):
        assert fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=wrong(code))).reason == (
            "OTP_INVALID"
        )
    login_id, code = code_after_login(client, "phished", ATTACKER)
    for _ in range(2):
        fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=wrong(code)))
    # Seven failures: the budget is spent, for the username and the e-mail alike, from any source.
    for identifier, ip in (("phished", ATTACKER), ("phished@example.com", ELSEWHERE)):
        refused = fails(
            client.auth.Login,
            auth_pb2.LoginRequest(username_or_email=identifier, password=PASSWORD),
            metadata=md(x_forwarded_for=ip),
        )
        assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert refused.retry_after is not None and 0 < refused.retry_after <= 3600
    mails = [m for m in client.smtp.to("phished@example.com") if "Failed sign-in" in m.subject]
    assert len(mails) == 1  # one mail per episode

    # The owner's known device still signs in (it still needs the code) ...
    login_id, code = code_after_login(client, "phished", OWNER, device_token=owner.device_token)
    again = client.auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code))
    assert again.access_token and again.device_token
    # ... and the unlock link in the mail ends the episode for everyone.
    token = UNLOCK_IN_MAIL.search(mails[0].body).group(1)
    client.auth.UnlockAccount(auth_pb2.UnlockAccountRequest(token=token))
    assert login_from(client, "phished", PASSWORD, ELSEWHERE) == "OK"


def test_a_device_token_is_bound_to_its_user_and_void_after_a_password_change(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_ACCOUNT_FAILURE_LIMIT="1")
    client.signup("devowner")
    client.signup("other")
    owner = client.sign_in("devowner")
    other = client.sign_in("other")
    for name in ("devowner", "other"):
        assert login_from(client, name, "wrong password", ATTACKER) == "INVALID_CREDENTIALS"  # budgets spent
    assert login_from(client, "devowner", PASSWORD, OWNER, owner.device_token) == "OK"
    assert login_from(client, "devowner", PASSWORD, OWNER, other.device_token) == "RATE_LIMITED"
    assert login_from(client, "devowner", PASSWORD, OWNER, owner.device_token + "x") == "RATE_LIMITED"
    client.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=md(owner.access_token),
    )
    assert login_from(client, "devowner", NEW_PASSWORD, OWNER, owner.device_token) == "RATE_LIMITED"


# --- row 9: a password change ends logins started with the old password -------------------------------


def test_a_login_started_with_the_old_password_cannot_finish_after_a_change(client: Client) -> None:
    client.signup("changer")
    owner = client.sign_in("changer")
    login_id = client.login("changer")  # the attacker, who had the old password, got this far
    code = client.code_for("changer")
    client.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=md(owner.access_token),
    )
    refused = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code))
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "OTP_INVALID")
    assert client.store.get_challenge("default", login_id).consumed_at is not None


def test_wrong_current_passwords_in_change_password_are_throttled(make_client: Any) -> None:
    client = make_client(AUTH_LOCKOUT_THRESHOLD="3")
    client.signup("thief")
    stolen = client.sign_in("thief")
    request = auth_pb2.ChangePasswordRequest(current_password="guess", new_password=NEW_PASSWORD)
    reasons = [fails(client.auth.ChangePassword, request, metadata=md(stolen.access_token)).reason for _ in range(4)]
    assert reasons == ["INVALID_CREDENTIALS"] * 3 + ["RATE_LIMITED"]
    assert client.store.get_session("default", stolen.session_id).revoked_at is None


# --- row 6: never a tenant without a usable admin -------------------------------------------------------


def test_the_last_active_admin_can_be_neither_locked_nor_demoted(client: Client) -> None:
    a = client.sign_in_admin("admina")
    client.sign_in_admin("adminb")
    ids = {u.username: u.id for u in client.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=md(a)).users}
    client.admin.LockUser(admin_pb2.LockUserRequest(user_id=ids["adminb"], reason="test"), metadata=md(a))
    refused = fails(
        client.admin.SetUserRole,
        admin_pb2.SetUserRoleRequest(user_id=ids["admina"], role=access_pb2.ROLE_USER),
        metadata=md(a),
    )
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LAST_ADMIN")
    assert client.store.find_user("default", "admina").role == "admin"
    # With the other admin usable again, the demotion is allowed.
    client.admin.UnlockUser(admin_pb2.UnlockUserRequest(user_id=ids["adminb"]), metadata=md(a))
    client.admin.SetUserRole(
        admin_pb2.SetUserRoleRequest(user_id=ids["admina"], role=access_pb2.ROLE_USER), metadata=md(a)
    )


def test_two_admins_demoting_each_other_at_once_leave_one_admin(client: Client) -> None:
    for round_ in range(4):
        tokens = [client.sign_in_admin(f"duel{round_}x"), client.sign_in_admin(f"duel{round_}y")]
        users = [client.store.find_user("default", f"duel{round_}{s}") for s in "xy"]
        for older in client.store.list_users("default", None, 100):  # earlier rounds' survivors step aside
            if older.role == "admin" and older.id not in {u.id for u in users}:
                client.store.update_user("default", older.id, set={"role": "user"})

        def demote(i: int, users: list[Any] = users, tokens: list[str] = tokens) -> Any:
            target = users[1 - i].id
            return client.admin.SetUserRole(
                admin_pb2.SetUserRoleRequest(user_id=target, role=access_pb2.ROLE_USER), metadata=md(tokens[i])
            )

        outcomes = in_parallel(2, demote)
        assert client.store.count_users("default", "admin", unlocked_only=True) == 1, outcomes
        assert sum(isinstance(o, admin_pb2.SetUserRoleResponse) for o in outcomes) == 1, outcomes


# --- row 7 (in process): forwarded addresses are believed only from trusted proxies, hop by hop --------


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("<img src=x onerror=alert(1)>", "127.0.0.1"),  # not an address: the peer is used
        ("203.0.113.5, <img src=x>", "127.0.0.1"),  # the hop next to us is not an address
        ("<img src=x>, 203.0.113.5", "203.0.113.5"),  # the first untrusted hop from the right
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_every_forwarded_hop_must_be_an_ip_address(make_client: Any, forwarded: str, expected: str) -> None:
    client = make_client(**TRUST)
    client.signup("hops")
    login_id = client.auth.Login(
        auth_pb2.LoginRequest(username_or_email="hops", password=PASSWORD), metadata=md(x_forwarded_for=forwarded)
    ).login_id
    request = auth_pb2.VerifyOtpRequest(login_id=login_id, otp=client.code_for("hops"))
    tokens = client.auth.VerifyOtp(request, metadata=md(x_forwarded_for=forwarded))
    assert client.store.get_session("default", tokens.session_id).ip_address == expected
    assert all("<" not in e.ip_address for e in client.store.list_events("default", None, 100))


def test_the_access_log_names_the_source_of_rejected_calls(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(**TRUST)
    with caplog.at_level("INFO", logger="auth.access"):
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md("not-a-token", x_forwarded_for=ATTACKER))
        fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(tenant="Bad Tenant!"))
    calls = [r for r in caplog.records if r.name == "auth.access"]
    assert [(r.reason, r.ip) for r in calls] == [("TOKEN_INVALID", ATTACKER), ("TENANT_INVALID", "127.0.0.1")]


# --- point 7: ranges of the new settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTH_FAILURE_WINDOW", "9"),
        ("AUTH_ACCOUNT_FAILURE_LIMIT", "0"),
        ("AUTH_SOURCE_LOGIN_RATE", "-1"),
        ("AUTH_BRIDGE_SECRET", "too-short"),
    ],
)
def test_abuse_settings_out_of_range_stop_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(name)):
        load_settings({"AUTH_JWT_SECRET": "x" * 40, name: value})


def test_a_bridge_is_believed_by_its_secret_not_by_its_address(make_client: Any) -> None:
    secret = "s" * 40
    client = make_client(AUTH_BRIDGE_SECRET=secret)  # no AUTH_TRUSTED_PROXIES: loopback is not trusted
    client.signup("bridged")

    def session_ip(**headers: str) -> str:
        login_id = client.auth.Login(
            auth_pb2.LoginRequest(username_or_email="bridged", password=PASSWORD), metadata=md(**headers)
        ).login_id
        request = auth_pb2.VerifyOtpRequest(login_id=login_id, otp=client.code_for("bridged"))
        tokens = client.auth.VerifyOtp(request, metadata=md(**headers))
        return client.store.get_session("default", tokens.session_id).ip_address

    assert session_ip(x_forwarded_for=OWNER) == "127.0.0.1"  # any local process could send this
    assert session_ip(x_forwarded_for=OWNER, x_auth_bridge="s" * 39 + "t") == "127.0.0.1"
    assert session_ip(x_forwarded_for=OWNER, x_auth_bridge=secret) == OWNER
