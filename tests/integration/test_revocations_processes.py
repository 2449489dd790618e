"""Revocations cross processes: two `auth-server` processes on one store (one SQLite file, or one
MongoDB); a revocation made through one is streamed by the other (the log is in the store, not in
either process's memory)."""

from __future__ import annotations

from typing import Any

import pytest

from auth_client.gen.auth.v1 import auth_pb2
from tests.integration.conftest import md
from tests.integration.test_revocations import take, watch


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
