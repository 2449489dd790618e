"""WatchRevocations against the real server, on both stores: one event per kind of revocation, resume
after a cursor, who may watch, the stream cap, shutdown. Waiting is a blocking read of the stream under
a generous deadline, never a sleep.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import admin_pb2, auth_pb2
from auth_server.domain.audit import Audit
from auth_server.domain.services import ServiceAccounts
from auth_server.infra.keys import KeyRing
from tests.integration.conftest import PASSWORD, SECRET, TENANTS, Client, md
from tests.support.rpc import fails, failure

DEADLINE = 20.0  # seconds a stream may take to deliver: generous, only a failure waits for it
K = auth_pb2.RevocationKind


def watch(client: Client, token: str, after: str = "", tenant: str | None = None) -> Any:
    """An open stream: its headers have arrived, so the server has taken its position."""
    stream = client.auth.WatchRevocations(
        auth_pb2.WatchRevocationsRequest(after=after), metadata=md(token, tenant), timeout=DEADLINE
    )
    stream.initial_metadata()
    return stream


def kinds(events: list[auth_pb2.RevocationEvent]) -> list[str]:
    return [K.Name(e.kind) for e in events]


def take(stream: Any, count: int) -> list[auth_pb2.RevocationEvent]:
    return [next(stream).event for _ in range(count)]


def test_every_kind_of_revocation_is_streamed(client: Client) -> None:
    watcher = client.service_token("watcher")
    stream = watch(client, watcher)
    alice = client.signup("alice")
    laptop, phone = client.sign_in("alice"), client.sign_in("alice")

    client.auth.LogoutSession(
        auth_pb2.LogoutSessionRequest(session_id=phone.session_id), metadata=md(laptop.access_token)
    )
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(laptop.access_token))
    tablet = client.sign_in("alice")
    client.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="another long passphrase"),
        metadata=md(tablet.access_token),
    )
    # Refresh-token reuse: the old refresh token sent again revokes the session.
    phone2 = client.sign_in("alice", password="another long passphrase")
    client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=phone2.refresh_token))
    fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=phone2.refresh_token))
    admin = client.sign_in_admin("root")
    client.admin.SetUserRole(admin_pb2.SetUserRoleRequest(user_id=alice.id, role=3), metadata=md(admin))
    client.admin.LockUser(admin_pb2.LockUserRequest(user_id=alice.id), metadata=md(admin))
    accounts = ServiceAccounts(client.store, KeyRing.from_secret(SECRET.encode()), Audit(client.store), TENANTS)
    orders = client.store.find_service_account("watcher")
    accounts.rotate("watcher", overlap_seconds=60)
    client.create_service("doomed")
    doomed = client.store.find_service_account("doomed")
    accounts.delete("doomed")

    events = take(stream, 8)
    assert kinds(events) == [
        "REVOCATION_KIND_SESSION_REVOKED",
        "REVOCATION_KIND_USER_SESSIONS_REVOKED",
        "REVOCATION_KIND_PASSWORD_CHANGED",
        "REVOCATION_KIND_SESSION_REVOKED",
        "REVOCATION_KIND_ROLE_CHANGED",
        "REVOCATION_KIND_USER_LOCKED",
        "REVOCATION_KIND_SERVICE_ACCOUNT_ROTATED",
        "REVOCATION_KIND_SERVICE_ACCOUNT_DELETED",
    ]
    assert (events[0].session_id, events[0].user_id) == (phone.session_id, alice.id)
    assert (events[3].session_id, events[3].user_id) == (phone2.session_id, alice.id)
    assert all(e.user_id == alice.id and not e.session_id for e in (events[1], events[2], events[4], events[5]))
    assert events[6].service_account_id == orders.id and events[7].service_account_id == doomed.id
    cursors = [int(e.cursor) for e in events]
    assert cursors == sorted(cursors) and len(set(cursors)) == 8
    assert all(e.at.seconds > 0 for e in events)
    stream.cancel()


def test_resume_after_a_cursor_replays_nothing_before_it(client: Client) -> None:
    watcher = client.service_token("watcher")
    client.signup("bob")
    sessions = [client.sign_in("bob") for _ in range(4)]
    keeper = sessions[0].access_token

    def logout(index: int) -> None:
        request = auth_pb2.LogoutSessionRequest(session_id=sessions[index].session_id)
        client.auth.LogoutSession(request, metadata=md(keeper))

    first = watch(client, watcher)
    logout(1)
    logout(2)
    one, two = take(first, 2)
    first.cancel()
    logout(3)  # while nobody watches

    resumed = watch(client, watcher, after=one.cursor)
    assert [e.session_id for e in take(resumed, 2)] == [sessions[2].session_id, sessions[3].session_id]
    # "From now" replays nothing: the next event it sees is the next revocation.
    fresh = watch(client, watcher)
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(keeper))
    (event,) = take(fresh, 1)
    assert event.kind == K.REVOCATION_KIND_USER_SESSIONS_REVOKED and int(event.cursor) > int(two.cursor)
    resumed.cancel()
    fresh.cancel()


def test_tenants_are_apart(client: Client) -> None:
    watcher = client.service_token("watcher")
    default_stream, acme_stream = watch(client, watcher), watch(client, watcher, tenant="acme")
    client.signup("carol", tenant="acme")
    carol = client.sign_in("carol", tenant="acme")
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(carol.access_token, "acme"))
    client.signup("dave")
    dave = client.sign_in("dave")
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(dave.access_token))
    (in_acme,) = take(acme_stream, 1)
    (in_default,) = take(default_stream, 1)
    assert in_acme.user_id != in_default.user_id
    assert client.store.get_user("acme", in_acme.user_id) is not None
    default_stream.cancel()
    acme_stream.cancel()


def test_only_services_may_watch(client: Client) -> None:
    client.signup("erin")
    person = client.sign_in("erin").access_token
    request = auth_pb2.WatchRevocationsRequest()

    def refused(token: str | None, after: str = "") -> Any:
        stream = client.auth.WatchRevocations(
            auth_pb2.WatchRevocationsRequest(after=after), metadata=md(token), timeout=DEADLINE
        )
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)
        return failure(raised.value)

    assert request.after == ""
    by_person = refused(person)
    assert (by_person.code, by_person.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    anonymous = refused(None)
    assert (anonymous.code, anonymous.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    bad_cursor = refused(client.service_token("watcher"), after="not-a-cursor")
    assert (bad_cursor.code, bad_cursor.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ("after",))


def test_open_streams_are_capped(make_client: Any) -> None:
    client = make_client(AUTH_WATCH_STREAMS="1")
    watcher = client.service_token("watcher")
    first = watch(client, watcher)
    second = client.auth.WatchRevocations(auth_pb2.WatchRevocationsRequest(), metadata=md(watcher), timeout=DEADLINE)
    with pytest.raises(grpc.RpcError) as raised:
        next(second)
    assert (failure(raised.value).code, failure(raised.value).reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "WATCH_STREAMS_EXHAUSTED",
    )
    # Unary calls still run meanwhile.
    client.auth.Introspect(auth_pb2.IntrospectRequest(access_token="x"), metadata=md(watcher))
    first.cancel()
    # The slot comes back once the server notices the cancellation (within its 0.5 s check): until then
    # a new stream is refused; once accepted, it delivers the revocation made after it opened.
    client.signup("frank")
    deadline = time.monotonic() + DEADLINE
    while True:
        again = client.auth.WatchRevocations(auth_pb2.WatchRevocationsRequest(), metadata=md(watcher), timeout=DEADLINE)
        again.initial_metadata()
        client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(client.sign_in("frank").access_token))
        try:
            assert next(again).event.kind == K.REVOCATION_KIND_USER_SESSIONS_REVOKED
            break
        except grpc.RpcError as error:
            assert failure(error).reason == "WATCH_STREAMS_EXHAUSTED" and time.monotonic() < deadline
    again.cancel()


def test_shutdown_ends_open_streams(client: Client) -> None:
    watcher = client.service_token("watcher")
    stream = watch(client, watcher)
    assert client.app is not None
    client.app.stop(5)
    with pytest.raises(grpc.RpcError) as raised:
        next(stream)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
