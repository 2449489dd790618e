"""Faults inside the server process: a store slower than the call's deadline.

The store here is the real SQLite adapter behind a gate that holds chosen operations until the test
opens it, so "slow" is exact and needs no sleeps.

Requirements covered: OWASP ASVS 5.0 V16.5 (errors handled safely, the service stays available).
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from auth_server.api.server import create_server
from auth_server.infra.config import load_settings
from auth_server.store.sqlite import SqliteStore
from tests.integration.conftest import PASSWORD, SECRET, signup
from tests.support.mail import SmtpSink
from tests.support.rpc import fails


class GatedStore:
    """The real store, except that the named operations wait until `gate` is set."""

    def __init__(self, store: SqliteStore, slow: set[str]) -> None:
        self._store, self._slow = store, slow
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._store, name)
        if name not in self._slow:
            return operation

        def held(*args: Any, **kwargs: Any) -> Any:
            self.waiting.release()
            self.gate.wait(30)
            return operation(*args, **kwargs)

        return held


def test_a_slow_store_costs_one_call_its_deadline_and_no_one_else(tmp_path: Any) -> None:
    sink = SmtpSink().start()
    store = GatedStore(SqliteStore(tmp_path / "auth.db"), {"get_session_and_user"})
    settings = load_settings(
        {
            "AUTH_STORE": f"sqlite:///{tmp_path}/auth.db",
            "AUTH_JWT_SECRET": SECRET,
            "AUTH_GRPC_ADDR": "127.0.0.1:0",
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_SMTP_URL": sink.url,
            "AUTH_OTP_RESEND_INTERVAL": "0",
        }
    )
    app = create_server(settings, store=store)  # type: ignore[arg-type]
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    try:
        signup(auth, sink, "slowpoke")
        login = auth.Login(auth_pb2.LoginRequest(username_or_email="slowpoke", password=PASSWORD))
        code = sink.last_code("slowpoke@example.com")
        tokens = auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login.login_id, otp=code))

        stuck = auth.GetMe.future(
            auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {tokens.access_token}")], timeout=0.5
        )
        assert store.waiting.acquire(timeout=10)  # the call is inside the store now
        # Other calls are served while it hangs: the thread pool is not blocked by one slow call.
        other = signup(auth, sink, "unaffected", email="u@example.com")
        assert other.username == "unaffected"
        try:
            stuck.result()
            raise AssertionError("the stuck call should have run out of time")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        seen = fails(auth.Refresh, auth_pb2.RefreshRequest(refresh_token="rt1.x.0.y"), timeout=5)
        assert seen.reason == "REFRESH_TOKEN_INVALID"  # and the server still answers promptly
    finally:
        store.gate.set()
        channel.close()
        app.stop(0)
        sink.stop()
