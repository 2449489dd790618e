"""Sign in by phone (issue 14, part 4): Login's `username_or_email` also takes a phone number.

Through the real server on both stores, with the codes read from the SMTP sink: a phone given at
sign-up in national format is stored in E.164 and names the account at login in any spelling; every
spelling of one number is one identifier for the throttles (the per-source lock, the account budget,
the unlock link that forgives it); an unknown phone reads exactly like an unknown username.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2
from auth_server.domain import passwords
from tests.integration.conftest import PASSWORD, Client, md
from tests.support.mail import OTP_IN_MAIL, UNLOCK_IN_MAIL
from tests.support.rpc import fails, failure

NATIONAL = "(415) 555-0123"  # as typed at sign-up, in the default region (US)
E164 = "+14155550123"
SPELLINGS = ["+1 415 555 0123", "(415) 555-0123", "415.555.0123", "415-555-0123", "+14155550123", "4155550123"]
UNKNOWN_PHONE = "+1 415 555 0199"  # a valid number no account has
TRUST = {"AUTH_TRUSTED_PROXIES": "127.0.0.1/32"}
ATTACKER, ELSEWHERE = "198.51.100.66", "192.0.2.44"


def login_by(client: Client, identifier: str, address: str, password: str = PASSWORD, ip: str = "") -> str:
    """Login with `identifier` and return the code mailed to `address` (the account's e-mail)."""
    before = len(client.smtp.to(address))
    request = auth_pb2.LoginRequest(username_or_email=identifier, password=password)
    extra = {"x_forwarded_for": ip} if ip else {}
    client.auth.Login(request, metadata=md(**extra))
    return client.smtp.last_code(address, count=before + 1)


def attempt(client: Client, identifier: str, password: str, ip: str = "") -> str:
    """One Login: "OK" or the failure's reason."""
    request = auth_pb2.LoginRequest(username_or_email=identifier, password=password)
    extra = {"x_forwarded_for": ip} if ip else {}
    try:
        client.auth.Login(request, metadata=md(**extra))
    except grpc.RpcError as error:
        return failure(error).reason
    return "OK"


def test_a_phone_given_in_national_format_signs_in_in_every_spelling(client: Client) -> None:
    user = client.signup("jane", phone=NATIONAL)
    assert user.phone == E164
    assert client.store.find_user("default", "jane").phone == E164
    for spelling in SPELLINGS:
        code = login_by(client, spelling, "jane@example.com")
        assert len(code) == 6
    # The last code opens a session for jane.
    login_id = client.auth.Login(auth_pb2.LoginRequest(username_or_email=SPELLINGS[0], password=PASSWORD)).login_id
    code = client.smtp.last_code("jane@example.com", count=len(client.smtp.to("jane@example.com")))
    tokens = client.auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code))
    me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))
    assert (me.user.username, me.user.phone) == ("jane", E164)


def test_a_username_or_email_match_wins_over_a_phone_match(client: Client) -> None:
    client.signup("jane", phone=NATIONAL)
    client.signup("4155550123")  # a username that is also a spelling of jane's phone
    code = login_by(client, "4155550123", "4155550123@example.com")
    assert len(code) == 6
    # Another spelling is no username: it finds jane by her phone.
    assert len(login_by(client, "415-555-0123", "jane@example.com")) == 6


def test_an_unknown_phone_reads_exactly_like_an_unknown_username(client: Client) -> None:
    client.signup("jane", phone=NATIONAL)
    answers = {}
    for identifier in ("nobody-has-this-name", UNKNOWN_PHONE, "(415) 555-0199", NATIONAL):
        password = "wrong password" if identifier == NATIONAL else PASSWORD
        f = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email=identifier, password=password))
        answers[identifier] = (f.code, f.reason, f.message, f.metadata, f.fields)
    assert len(set(map(repr, answers.values()))) == 1
    assert answers[UNKNOWN_PHONE][:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert client.smtp.to("jane@example.com") == []  # no code for any of them (the sign-up mail is dropped)


def test_an_unknown_phone_costs_the_same_store_reads_and_hash_as_a_known_one(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing, made exact: for one spelling, the work a login does does not depend on whether an account
    has the number: the same lookups in the same order, then one bcrypt check of the same cost (the
    account's hash, or the dummy hash made at that cost)."""
    assert client.app is not None
    client.signup("jane", phone=NATIONAL)
    reads: list[str] = []
    checks: list[int] = []
    real_find, real_checkpw = client.app.store.find_user, passwords.bcrypt.checkpw

    def find_user(tenant: str, value: str) -> Any:
        reads.append(value)
        return real_find(tenant, value)

    def checkpw(password: bytes, hashed: bytes) -> bool:
        checks.append(int(hashed.split(b"$")[2]))  # the bcrypt cost of the hash checked
        return real_checkpw(password, hashed)

    monkeypatch.setattr(client.app.store, "find_user", find_user)  # the server's own store object
    monkeypatch.setattr(passwords.bcrypt, "checkpw", checkpw)
    work = {}
    for identifier in ("(415) 555-0123", "(415) 555-0199", "+14155550123", "+14155550199"):
        reads.clear()
        checks.clear()
        f = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email=identifier, password="wrong password"))
        assert f.reason == "INVALID_CREDENTIALS"
        work[identifier] = (list(reads), list(checks))
    assert work["(415) 555-0123"] == (["(415) 555-0123", "+14155550123"], [4])
    assert work["(415) 555-0199"] == (["(415) 555-0199", "+14155550199"], [4])
    assert work["+14155550123"] == (["+14155550123"], [4])
    assert work["+14155550199"] == (["+14155550199"], [4])


def test_the_per_source_lock_counts_one_phone_across_spellings(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_LOCKOUT_THRESHOLD="3")
    client.signup("jane", phone=NATIONAL)
    reasons = [attempt(client, s, "wrong password", ATTACKER) for s in ("+1 415 555 0123", "415.555.0123", NATIONAL)]
    assert reasons == ["INVALID_CREDENTIALS"] * 3
    # The fourth spelling from that source is locked, even with the right password ...
    assert attempt(client, "4155550123", PASSWORD, ATTACKER) == "RATE_LIMITED"
    # ... while the owner elsewhere, and the username from the same source, are not affected.
    assert attempt(client, "+14155550123", PASSWORD, ELSEWHERE) == "OK"
    assert attempt(client, "jane", PASSWORD, ATTACKER) == "OK"

    # The same for a number no account has: the throttle never tells who exists.
    unknown = [attempt(client, s, "wrong password", ATTACKER) for s in ("+1 415 555 0199", "(415) 555-0199")]
    unknown += [
        attempt(client, "415.555.0199", "wrong password", ATTACKER),
        attempt(client, "4155550199", "x", ATTACKER),
    ]
    assert unknown == ["INVALID_CREDENTIALS"] * 3 + ["RATE_LIMITED"]


def test_the_account_budget_counts_one_phone_and_the_unlock_link_forgives_it(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_ACCOUNT_FAILURE_LIMIT="3")
    client.signup("jane", phone=NATIONAL)
    sources = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    spellings = ["+1 415 555 0123", "415.555.0123", NATIONAL]
    assert [attempt(client, s, "wrong password", ip) for s, ip in zip(spellings, sources, strict=True)] == [
        "INVALID_CREDENTIALS"
    ] * 3
    # Spent for the number in any spelling, from any source; the username is another name with its own budget.
    assert attempt(client, "4155550123", PASSWORD, ELSEWHERE) == "RATE_LIMITED"
    assert attempt(client, "jane", PASSWORD, ELSEWHERE) == "OK"
    mails = [m for m in client.smtp.to("jane@example.com") if "Failed sign-in" in m.subject]
    assert len(mails) == 1
    # The owner's unlock link forgives every name of the account, the phone included.
    token = UNLOCK_IN_MAIL.search(mails[0].body).group(1)
    client.auth.UnlockAccount(auth_pb2.UnlockAccountRequest(token=token))
    assert attempt(client, "(415) 555-0123", PASSWORD, ELSEWHERE) == "OK"


def test_wrong_codes_spend_the_phones_budget_too(make_client: Any) -> None:
    client = make_client(**TRUST, AUTH_ACCOUNT_FAILURE_LIMIT="2")
    client.signup("jane", phone=NATIONAL)
    login_id = client.login("jane")
    code = client.smtp.last_code("jane@example.com", count=len(client.smtp.to("jane@example.com")))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(2):
        f = fails(client.auth.VerifyOtp, auth_pb2.VerifyOtpRequest(login_id=login_id, otp=wrong))
        assert f.reason == "OTP_INVALID"
    for spelling in ("jane", "jane@example.com", "+1 415 555 0123", NATIONAL):
        assert attempt(client, spelling, PASSWORD, ELSEWHERE) == "RATE_LIMITED", spelling


@pytest.mark.parametrize("identifier", ["", "   "])
def test_an_empty_identifier_finds_no_account_without_a_phone(client: Client, identifier: str) -> None:
    client.signup("nophone")
    assert client.store.find_user("default", "nophone").phone == ""
    assert client.store.find_user("default", "") is None
    f = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email=identifier, password=PASSWORD))
    assert (f.code, f.reason, f.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ("username_or_email",),
    )
    # Punctuation that normalises to no number is an identifier no account has.
    f = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="()", password=PASSWORD))
    assert f.reason == "INVALID_CREDENTIALS"
    assert client.smtp.to("nophone@example.com") == []


def test_two_accounts_cannot_hold_one_phone_in_two_spellings(client: Client) -> None:
    client.signup("jane", phone=NATIONAL)
    started, mail = client.start_signup("joe", phone="+1 415-555-0123")
    (code,) = OTP_IN_MAIL.findall(mail.body)
    f = fails(client.auth.VerifySignup, auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=code))
    assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "PHONE_TAKEN")
    assert client.store.find_user("default", "joe") is None
    assert client.store.find_user("default", E164).username == "jane"
