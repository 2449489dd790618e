"""The caller's profile (issue 14, part 5): UpdateMe, ChangeEmail, ConfirmEmailChange.

Through the real server on both stores, mail read from the SMTP sink: AIP-134 masks, phones in E.164
and unique (PHONE_TAKEN, also under a race), an e-mail change that needs the password (throttled as
ChangePassword is) and a code from the new mailbox, never tells whether the new address has an
account, and tells the old address when it happens; every code unknown, wrong, expired, reused,
another user's and raced. Last, the HTTP bridge: PATCH /api/v1/auth/me with a JSON FieldMask.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from auth_client.client import AsyncAuthClient, AuthClient
from auth_client.errors import InvalidArgument
from auth_client.gen.auth.v1 import auth_pb2
from auth_server.infra.clock import utcnow
from tests.integration.conftest import PASSWORD, Client, md
from tests.integration.test_attacks import in_parallel
from tests.support.mail import OTP_IN_MAIL
from tests.support.rpc import fails

E164 = "+14155550123"
NEW = "jane.new@example.com"


def signed_in(client: Client, username: str, **fields: str) -> str:
    """A new user, signed in: the access token."""
    client.signup(username, **fields)
    return client.sign_in(username).access_token


def update(client: Client, token: str, paths: list[str] | None = None, **fields: str) -> auth_pb2.User:
    request = auth_pb2.UpdateMeRequest(**fields)
    if paths is not None:
        request.update_mask.CopyFrom(FieldMask(paths=paths))
    return client.auth.UpdateMe(request, metadata=md(token)).user


def update_fails(client: Client, token: str, paths: list[str] | None = None, **fields: str) -> Any:
    request = auth_pb2.UpdateMeRequest(**fields)
    if paths is not None:
        request.update_mask.CopyFrom(FieldMask(paths=paths))
    return fails(client.auth.UpdateMe, request, metadata=md(token))


def change(client: Client, token: str, new_email: str = NEW, password: str = PASSWORD) -> auth_pb2.ChangeEmailResponse:
    request = auth_pb2.ChangeEmailRequest(new_email=new_email, current_password=password)
    return client.auth.ChangeEmail(request, metadata=md(token))


def change_with_code(client: Client, token: str, new_email: str = NEW) -> tuple[str, str]:
    """ChangeEmail; the change_id and the code mailed to the new address."""
    before = len(client.smtp.to(new_email))
    change_id = change(client, token, new_email).change_id
    return change_id, client.smtp.last_code(new_email, count=before + 1)


def confirm(client: Client, token: str, change_id: str, code: str) -> auth_pb2.User:
    request = auth_pb2.ConfirmEmailChangeRequest(change_id=change_id, code=code)
    return client.auth.ConfirmEmailChange(request, metadata=md(token)).user


def confirm_fails(client: Client, token: str, change_id: str, code: str) -> Any:
    request = auth_pb2.ConfirmEmailChangeRequest(change_id=change_id, code=code)
    return fails(client.auth.ConfirmEmailChange, request, metadata=md(token))


def events(client: Client, kind: str) -> list[Any]:
    return [e for e in client.store.list_events("default", None, 500) if e.type == kind]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- UpdateMe -------------------------------------------------------------------------------------------


def test_only_the_masked_fields_change(client: Client) -> None:
    token = signed_in(client, "jane")
    user = update(client, token, ["name"], name="Jane Doe", phone="(415) 555-0123")
    assert (user.name, user.phone) == ("Jane Doe", "")
    user = update(client, token, ["phone"], name="ignored", phone="(415) 555-0123")
    assert (user.name, user.phone) == ("Jane Doe", E164)
    stored = client.store.find_user("default", "jane")
    assert (stored.name, stored.phone) == ("Jane Doe", E164)
    assert [json.loads(e.details)["fields"] for e in reversed(events(client, "profile.updated"))] == ["name", "phone"]
    me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token)).user
    assert (me.name, me.phone) == ("Jane Doe", E164)


def test_an_empty_mask_changes_every_field_the_request_sets(client: Client) -> None:
    token = signed_in(client, "jane", name="Jane", phone="(415) 555-0123")
    user = update(client, token, name="Jane Doe")
    assert (user.name, user.phone) == ("Jane Doe", E164)  # an unset phone is not "remove the phone"
    user = update(client, token, phone="+44 20 7946 0018")
    assert (user.name, user.phone) == ("Jane Doe", "+442079460018")
    before = len(events(client, "profile.updated"))
    user = update(client, token)  # nothing set: nothing changes, nothing is recorded
    assert (user.name, user.phone) == ("Jane Doe", "+442079460018")
    update(client, token, name="Jane Doe")  # the same value again (a retried call): no event either
    assert len(events(client, "profile.updated")) == before


def test_an_empty_phone_in_the_mask_removes_it_and_it_no_longer_signs_in(client: Client) -> None:
    token = signed_in(client, "jane", phone="(415) 555-0123")
    user = update(client, token, ["phone"], phone="")
    assert user.phone == "" and client.store.find_user("default", "jane").phone == ""
    assert client.store.find_user("default", E164) is None
    f = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email=E164, password=PASSWORD))
    assert f.reason == "INVALID_CREDENTIALS"
    # '*' replaces every field: both empty now.
    update(client, token, ["name"], name="Jane")
    user = update(client, token, ["*"])
    assert (user.name, user.phone) == ("", "")


def test_a_phone_set_by_update_me_signs_in(client: Client) -> None:
    token = signed_in(client, "jane")
    update(client, token, ["phone"], phone="415 555 0123")
    before = len(client.smtp.to("jane@example.com"))
    client.auth.Login(auth_pb2.LoginRequest(username_or_email="(415) 555-0123", password=PASSWORD))
    assert len(client.smtp.last_code("jane@example.com", count=before + 1)) == 6


@pytest.mark.parametrize("path", ["email", "username", "role", "name.first", ""])
def test_an_unknown_mask_path_is_a_violation_on_update_mask_and_changes_nothing(client: Client, path: str) -> None:
    token = signed_in(client, "jane")
    f = update_fails(client, token, ["name", path], name="Jane Doe")
    assert (f.code, f.reason, f.fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ("update_mask",))
    assert client.store.find_user("default", "jane").name == ""
    assert events(client, "profile.updated") == []


def test_invalid_values_change_nothing(client: Client) -> None:
    token = signed_in(client, "jane", name="Jane")
    f = update_fails(client, token, ["name", "phone"], name="Jane Doe", phone="12")
    assert (f.reason, f.fields) == ("VALIDATION_FAILED", ("phone",))
    f = update_fails(client, token, ["name", "phone"], name="x" * 101, phone="1-800-FLOWERS")
    assert (f.reason, set(f.fields)) == ("VALIDATION_FAILED", {"name", "phone"})
    f = update_fails(client, token, name="bad\x00name")
    assert f.fields == ("name",)
    stored = client.store.find_user("default", "jane")
    assert (stored.name, stored.phone) == ("Jane", "")


def test_a_phone_another_account_has_is_phone_taken_in_any_spelling(client: Client) -> None:
    signed_in(client, "jane", phone="(415) 555-0123")
    token = signed_in(client, "joe", phone="+1 415 555 0100")
    for spelling in ("+14155550123", "415.555.0123"):
        f = update_fails(client, token, ["phone"], phone=spelling)
        assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "PHONE_TAKEN")
    assert client.store.find_user("default", "joe").phone == "+14155550100"
    assert client.store.find_user("default", E164).username == "jane"


def test_two_users_racing_for_one_phone_leave_one_owner(client: Client) -> None:
    tokens = [signed_in(client, f"racer{i}") for i in range(8)]

    def take(i: int) -> str:
        update(client, tokens[i], ["phone"], phone="(415) 555-0123")
        return "OK"

    results = in_parallel(8, take)
    assert (results.count("OK"), results.count("PHONE_TAKEN")) == (1, 7)
    owners = [client.store.find_user("default", f"racer{i}").phone for i in range(8)]
    assert owners.count(E164) == 1 and owners.count("") == 7


def test_update_me_needs_a_signed_in_caller(client: Client) -> None:
    f = fails(client.auth.UpdateMe, auth_pb2.UpdateMeRequest(name="x"))
    assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


# --- ChangeEmail and ConfirmEmailChange ---------------------------------------------------------------


def test_an_e_mail_change_confirmed_from_the_new_mailbox(client: Client) -> None:
    token = signed_in(client, "jane")
    session_id = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token)).session_id
    started = change(client, token, "  Jane.New@Example.com ")  # normalised: trimmed, lower case
    assert started.delivery_hint == "j***@example.com"
    lifetime = started.expires_at.ToDatetime().timestamp() - utcnow().timestamp()
    assert 890 < lifetime <= 900  # AUTH_EMAIL_CHANGE_TTL's default
    mail = client.smtp.wait_for(NEW)
    code = client.smtp.last_code(NEW)
    assert client.store.find_user("default", "jane").email == "jane@example.com"  # nothing changes yet

    user = confirm(client, token, started.change_id, code)
    assert (user.email, user.email_verified) == (NEW, True)
    stored = client.store.find_user("default", "jane")
    assert (stored.email, stored.email_verified) == (NEW, True)
    assert "confirm" in mail.subject.lower()
    # The old address is told, masked, and the notice carries no code.
    (notice,) = [m for m in client.smtp.to("jane@example.com") if "changed" in m.subject.lower()]
    assert "j***@example.com" in notice.body
    assert "wasn't you" in notice.body and OTP_IN_MAIL.findall(notice.body) == []
    # Sessions stay: the caller proved the password and the new mailbox.
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token)).user.email == NEW
    assert client.store.get_session("default", session_id).revoked_at is None
    assert len(events(client, "email.changed")) == 1
    # The new address signs in; the old one names no account.
    assert client.store.find_user("default", NEW).username == "jane"
    before = len(client.smtp.to(NEW))
    client.auth.Login(auth_pb2.LoginRequest(username_or_email=NEW, password=PASSWORD))
    assert len(client.smtp.last_code(NEW, count=before + 1)) == 6
    f = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="jane@example.com", password=PASSWORD))
    assert f.reason == "INVALID_CREDENTIALS"


def test_a_stolen_token_cannot_change_the_e_mail_without_the_password(client: Client) -> None:
    token = signed_in(client, "jane")
    f = fails(
        client.auth.ChangeEmail,
        auth_pb2.ChangeEmailRequest(new_email="thief@example.com", current_password="a guess at it"),
        metadata=md(token),
    )
    assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert client.smtp.to("thief@example.com") == []
    assert client.store.find_user("default", "jane").email == "jane@example.com"
    assert len(events(client, "email.change_failed")) == 1
    f = fails(
        client.auth.ChangeEmail, auth_pb2.ChangeEmailRequest(new_email="thief@example.com", current_password=PASSWORD)
    )
    assert f.reason == "TOKEN_MISSING"


def test_password_guesses_through_change_email_meet_the_change_password_throttle(make_client: Any) -> None:
    client = make_client(AUTH_LOCKOUT_THRESHOLD="3")
    token = signed_in(client, "jane")
    guess = auth_pb2.ChangeEmailRequest(new_email="thief@example.com", current_password="guess")
    by_password = auth_pb2.ChangePasswordRequest(current_password="guess", new_password="a brand new passphrase 42")
    reasons = [fails(client.auth.ChangeEmail, guess, metadata=md(token)).reason for _ in range(2)]
    reasons.append(fails(client.auth.ChangePassword, by_password, metadata=md(token)).reason)
    assert reasons == ["INVALID_CREDENTIALS"] * 3
    # One counter for both: the next check is refused, even with the right password, in either RPC.
    right = auth_pb2.ChangeEmailRequest(new_email="thief@example.com", current_password=PASSWORD)
    f = fails(client.auth.ChangeEmail, right, metadata=md(token))
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") and f.retry_after
    assert fails(client.auth.ChangePassword, by_password, metadata=md(token)).reason == "RATE_LIMITED"
    assert client.smtp.to("thief@example.com") == []


@pytest.mark.parametrize(
    ("new_email", "password", "fields"),
    [
        ("not-an-address", PASSWORD, ("new_email",)),
        ("", PASSWORD, ("new_email",)),
        ("JANE@example.com", PASSWORD, ("new_email",)),  # already hers
        (NEW, "", ("current_password",)),
        ("x", "", ("new_email", "current_password")),
    ],
)
def test_change_email_input_is_validated(
    client: Client, new_email: str, password: str, fields: tuple[str, ...]
) -> None:
    token = signed_in(client, "jane")
    request = auth_pb2.ChangeEmailRequest(new_email=new_email, current_password=password)
    f = fails(client.auth.ChangeEmail, request, metadata=md(token))
    assert (f.code, f.reason, f.fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", fields)
    assert events(client, "email.change_requested") == []


def test_an_address_another_account_has_answers_as_a_free_one(client: Client) -> None:
    signed_in(client, "joe")
    token = signed_in(client, "jane")
    taken = change(client, token, "joe@example.com")
    free = change(client, token, "jones@example.com")
    # The same fields, set the same way: nothing tells the caller joe exists.
    assert {f.name for f, _ in taken.ListFields()} == {f.name for f, _ in free.ListFields()}
    assert len(taken.change_id) == len(free.change_id)
    assert taken.delivery_hint == "j***@example.com" == free.delivery_hint
    assert (taken.expires_at.ToDatetime() - free.expires_at.ToDatetime()) <= timedelta(seconds=5)
    # Joe's mailbox gets a notice, with no code in it; nothing redeems that change.
    (notice,) = [m for m in client.smtp.to("joe@example.com") if "already has an account" in m.body]
    assert OTP_IN_MAIL.findall(notice.body) == []
    assert len(OTP_IN_MAIL.findall(client.smtp.wait_for("jones@example.com").body)) == 1
    # (The taken change was superseded by the free one; a fresh one to joe's address still cannot be redeemed.)
    taken = change(client, token, "joe@example.com")
    for guess in ("000000", "123456", "999999"):
        assert confirm_fails(client, token, taken.change_id, guess).reason == "OTP_INVALID"
    assert client.store.find_user("default", "jane").email == "jane@example.com"
    recorded = [json.loads(e.details)["address_taken"] for e in reversed(events(client, "email.change_requested"))]
    assert recorded == ["true", "false", "true"]  # the audit trail (admins only) says which


def test_a_new_request_supersedes_the_older_one(client: Client) -> None:
    token = signed_in(client, "jane")
    first, first_code = change_with_code(client, token, "first@example.com")
    second, second_code = change_with_code(client, token, "second@example.com")
    assert confirm_fails(client, token, first, first_code).reason == "OTP_INVALID"
    assert confirm(client, token, second, second_code).email == "second@example.com"


def test_requests_are_spaced_by_the_resend_interval(make_client: Any) -> None:
    client = make_client(AUTH_OTP_RESEND_INTERVAL="30")
    token = signed_in(client, "jane")
    change(client, token, "first@example.com")
    f = fails(
        client.auth.ChangeEmail,
        auth_pb2.ChangeEmailRequest(new_email="second@example.com", current_password=PASSWORD),
        metadata=md(token),
    )
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert f.retry_after is not None and 0 < f.retry_after <= 30
    assert client.smtp.to("second@example.com") == []


def test_unknown_and_another_users_change_ids_are_otp_invalid(client: Client) -> None:
    jane = signed_in(client, "jane")
    joe = signed_in(client, "joe")
    change_id, code = change_with_code(client, jane)
    for bad in ("", "nope", "x" * 65, "not-alnum!", "0" * 26):
        assert confirm_fails(client, jane, bad, code).reason == "OTP_INVALID"
    # Joe holds jane's change_id and even her code: it reads as unknown, and spends none of her tries.
    f = confirm_fails(client, joe, change_id, code)
    assert (f.code, f.reason, f.metadata) == (grpc.StatusCode.UNAUTHENTICATED, "OTP_INVALID", {})
    assert client.store.get_challenge("default", change_id).attempts == 0
    assert client.store.find_user("default", "joe").email == "joe@example.com"
    assert confirm(client, jane, change_id, code).email == NEW


def test_wrong_codes_then_attempts_exceeded_even_for_the_right_code(client: Client) -> None:
    token = signed_in(client, "jane")
    change_id, code = change_with_code(client, token)
    for left in range(4, -1, -1):
        f = confirm_fails(client, token, change_id, wrong(code))
        assert (f.code, f.reason, f.metadata["attempts_left"]) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "OTP_INVALID",
            str(left),
        )
    assert confirm_fails(client, token, change_id, "12345x").reason == "OTP_ATTEMPTS_EXCEEDED"
    f = confirm_fails(client, token, change_id, code)
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_ATTEMPTS_EXCEEDED")
    assert client.store.find_user("default", "jane").email == "jane@example.com"


def test_an_expired_code_is_otp_expired(client: Client) -> None:
    token = signed_in(client, "jane")
    change_id, code = change_with_code(client, token)
    client.store.update_challenge("default", change_id, set={"expires_at": utcnow() - timedelta(seconds=1)})
    f = confirm_fails(client, token, change_id, code)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, "OTP_EXPIRED")
    assert client.store.find_user("default", "jane").email == "jane@example.com"


def test_a_code_works_once(client: Client) -> None:
    token = signed_in(client, "jane")
    change_id, code = change_with_code(client, token)
    confirm(client, token, change_id, code)
    assert confirm_fails(client, token, change_id, code).reason == "OTP_INVALID"


def test_eight_parallel_confirmations_with_the_right_code_make_one_change(client: Client) -> None:
    token = signed_in(client, "jane")
    change_id, code = change_with_code(client, token)
    results = in_parallel(8, lambda _i: confirm(client, token, change_id, code).email)
    # One winner; the others lost the race (OTP_INVALID) or came after the try limit was counted
    # (OTP_ATTEMPTS_EXCEEDED: every try counts before it is compared, as for VerifyOtp).
    assert results.count(NEW) == 1, results
    assert set(results) - {NEW} <= {"OTP_INVALID", "OTP_ATTEMPTS_EXCEEDED"}, results
    assert len(events(client, "email.changed")) == 1
    notices = [m for m in client.smtp.to("jane@example.com") if "changed" in m.subject.lower()]
    assert len(notices) == 1


def test_an_address_taken_after_the_code_was_mailed_is_email_taken(client: Client) -> None:
    token = signed_in(client, "jane")
    change_id, code = change_with_code(client, token, "contested@example.com")
    client.signup("contested")  # verifies contested@example.com first
    f = confirm_fails(client, token, change_id, code)
    assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    assert client.store.find_user("default", "jane").email == "jane@example.com"
    assert client.store.find_user("default", "contested@example.com").username == "contested"


def test_a_reset_mailed_to_the_old_address_dies_at_the_change(client: Client) -> None:
    token = signed_in(client, "jane")
    before = len(client.smtp.to("jane@example.com"))
    reset = client.auth.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(username_or_email="jane"))
    reset_code = client.smtp.last_code("jane@example.com", count=before + 1)
    change_id, code = change_with_code(client, token)
    confirm(client, token, change_id, code)
    request = auth_pb2.ResetPasswordRequest(
        reset_id=reset.reset_id, code=reset_code, new_password="a brand new passphrase 42"
    )
    assert fails(client.auth.ResetPassword, request).reason == "OTP_INVALID"


# --- the HTTP bridge ------------------------------------------------------------------------------------


def test_the_bridge_transcodes_a_json_field_mask_and_the_e_mail_change(client: Client, bridge: httpx.Client) -> None:
    token = signed_in(client, "jane")
    auth = {"Authorization": f"Bearer {token}"}
    # proto3 JSON: a FieldMask is one comma-separated string of lowerCamelCase paths.
    answer = bridge.patch(
        "/api/v1/auth/me", headers=auth, json={"name": "Jane Doe", "phone": "415 555 0123", "updateMask": "name"}
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["user"]["name"], answer.json()["user"]["phone"]) == ("Jane Doe", "")
    answer = bridge.patch(
        "/api/v1/auth/me", headers=auth, json={"name": "x", "phone": "415 555 0123", "updateMask": "phone"}
    )
    assert (answer.json()["user"]["name"], answer.json()["user"]["phone"]) == ("Jane Doe", E164)
    answer = bridge.patch(
        "/api/v1/auth/me", headers=auth, json={"name": "Jane", "phone": "", "updateMask": "name,phone"}
    )
    assert (answer.json()["user"]["name"], answer.json()["user"]["phone"]) == ("Jane", "")
    answer = bridge.patch("/api/v1/auth/me", headers=auth, json={"name": "Jane Roe"})  # no mask: the set fields
    assert answer.json()["user"]["name"] == "Jane Roe"
    answer = bridge.patch("/api/v1/auth/me", headers=auth, json={"email": "x@example.com", "updateMask": "email"})
    assert answer.status_code == 400  # no such field in the request: the bridge refuses unknown JSON
    answer = bridge.patch("/api/v1/auth/me", headers=auth, json={"name": "x", "updateMask": "name,email"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["reason"] == "validation_failed" and [f["field"] for f in error["fields"]] == ["update_mask"]

    answer = bridge.post("/api/v1/auth/email", headers=auth, json={"newEmail": NEW, "currentPassword": PASSWORD})
    assert answer.status_code == 200, answer.text
    started = answer.json()
    assert started["deliveryHint"] == "j***@example.com" and started["changeId"]
    code = client.smtp.last_code(NEW)
    answer = bridge.post(
        "/api/v1/auth/email/confirm", headers=auth, json={"changeId": started["changeId"], "code": code}
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["user"]["email"], answer.json()["user"]["emailVerified"]) == (NEW, True)
    answer = bridge.post(
        "/api/v1/auth/email/confirm", headers=auth, json={"changeId": started["changeId"], "code": code}
    )
    assert (answer.status_code, answer.json()["error"]["reason"]) == (401, "otp_invalid")
    assert re.fullmatch(r"[0-9]{6}", code)


# --- the Python client ----------------------------------------------------------------------------------


def test_the_python_clients_change_only_the_fields_given(client: Client) -> None:
    token = signed_in(client, "jane", name="Jane", phone="(415) 555-0123")
    with AuthClient(client.addr, token=token) as sync:
        assert sync.update_me(name="Jane Doe").user.phone == E164  # the phone is left alone
        assert sync.update_me(phone="").user.phone == ""  # given empty: removed
        assert sync.update_me(name="x", phone="415 555 0123", update_mask=["phone"]).user.name == "Jane Doe"
        with pytest.raises(InvalidArgument) as raised:
            sync.update_me(name="x", update_mask=["email"])
        assert raised.value.reason == "VALIDATION_FAILED"
        started = sync.change_email("jane.sync@example.com", PASSWORD)
        code = client.smtp.last_code("jane.sync@example.com")
        assert sync.confirm_email_change(started.change_id, code).user.email == "jane.sync@example.com"

    async def run_async() -> tuple[str, str]:
        async with AsyncAuthClient(client.addr, token=token) as aio:
            await aio.update_me(name="Jane Async")
            started = await aio.change_email(NEW, PASSWORD)
            code = client.smtp.last_code(NEW)
            user = (await aio.confirm_email_change(started.change_id, code)).user
            return user.name, user.email

    assert asyncio.run(run_async()) == ("Jane Async", NEW)
