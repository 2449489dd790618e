"""Abuse resistance through the real `auth-server` process: what `serve` trusts, and counters that hold
across two server processes sharing one store (as replicas do).

Requirements: issue 11 points 5 and 6 (atomic across replicas; a trustworthy source).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from auth_server.store import open_store
from tests.integration.conftest import PASSWORD, SECRET, Client, md, signup
from tests.integration.test_attacks import in_parallel
from tests.support.mail import SmtpSink
from tests.support.process import ServerProcess
from tests.support.rpc import failure


@pytest.fixture
def server_mode() -> str:
    return "process"


def test_serve_does_not_believe_forwarded_addresses_from_local_processes(make_client: Any) -> None:
    client: Client = make_client()  # `auth-server serve`, AUTH_TRUSTED_PROXIES unset
    client.signup("spoofed")
    for forwarded in ("<img src=x onerror=alert(1)>", "203.0.113.9"):
        login_id = client.auth.Login(
            auth_pb2.LoginRequest(username_or_email="spoofed", password=PASSWORD),
            metadata=md(x_forwarded_for=forwarded),
        ).login_id
        request = auth_pb2.VerifyOtpRequest(login_id=login_id, otp=client.code_for("spoofed"))
        tokens = client.auth.VerifyOtp(request, metadata=md(x_forwarded_for=forwarded))
        assert client.store.get_session("default", tokens.session_id).ip_address == "127.0.0.1"
    assert {e.ip_address for e in client.store.list_events("default", None, 100)} == {"127.0.0.1"}


def test_a_burst_spread_over_two_processes_on_one_sqlite_file_locks_once(tmp_path: Path, smtp: SmtpSink) -> None:
    # FerretDB cannot prove cross-process atomicity (DESIGN.md section 4), so this runs on SQLite only.
    store_uri = f"sqlite:///{tmp_path}/shared.db"
    env = {
        "AUTH_STORE": store_uri,
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_SMTP_URL": smtp.url,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_SOURCE_LOGIN_RATE": "0",
    }
    processes = [ServerProcess(env).start() for _ in range(2)]
    channels = [grpc.insecure_channel(p.addr) for p in processes]
    store = open_store(store_uri)
    store.open()
    try:
        stubs = [auth_pb2_grpc.AuthServiceStub(c) for c in channels]
        signup(stubs[0], smtp, "shared")
        turn = itertools.cycle(stubs)
        targets = [next(turn) for _ in range(24)]  # connections spread over both processes

        def guess(i: int) -> str:
            try:
                targets[i].Login(auth_pb2.LoginRequest(username_or_email="shared", password=f"guess {i}"))
            except grpc.RpcError as error:
                return failure(error).reason
            return "OK"

        outcomes = in_parallel(24, guess)
        assert outcomes.count("INVALID_CREDENTIALS") == 5, outcomes  # AUTH_LOCKOUT_THRESHOLD, across processes
        assert outcomes.count("RATE_LIMITED") == 19, outcomes
        locks = [e for e in store.list_events("default", None, 500) if e.type == "login.source_locked"]
        assert len(locks) == 1
        assert smtp.to("shared@example.com") == []
    finally:
        store.close()
        for channel in channels:
            channel.close()
        for process in processes:
            process.stop()
