"""Revocations cross processes: two `auth-server` processes on one store (one SQLite file, or one
MongoDB); a revocation made through one is streamed by the other (the log is in the store, not in
either process's memory)."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2
from tests.integration.conftest import md
from tests.integration.test_revocations import take, watch
from tests.support.rpc import failure


@pytest.fixture
def server_mode() -> str:
    return "process"


def test_a_revocation_through_one_process_is_streamed_by_another(make_client: Any) -> None:
    one, other = make_client(), make_client()
    assert one.addr != other.addr
    watcher = other.service_token("watcher")
    stream = watch(other, watcher)
    one.signup("grace")
    tokens = one.sign_in("grace")
    one.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    (event,) = take(stream, 1)
    assert event.kind == auth_pb2.REVOCATION_KIND_USER_SESSIONS_REVOKED
    assert event.user_id == one.store.find_user("default", "grace").id
    stream.cancel()


def test_a_token_one_process_has_cached_ends_there_when_another_revokes_it(make_client: Any) -> None:
    """The session cache across real processes: `one` keeps entries 300 s, so only its tail of the
    revocation log (every 25 ms) can end the token within the deadline below."""
    one, other = make_client(AUTH_SESSION_CACHE_TTL="300"), make_client()
    one.signup("hopper")
    tokens = other.sign_in("hopper")
    one.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))  # now cached by `one`
    other.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    deadline = time.monotonic() + 20
    while True:
        try:
            one.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))
        except grpc.RpcError as error:
            assert failure(error).reason == "SESSION_REVOKED"
            break
        assert time.monotonic() < deadline, "the other process's revocation never reached this one"
        time.sleep(0.01)
