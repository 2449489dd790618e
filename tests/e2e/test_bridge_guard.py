"""`serve`'s bridge calls the guarded handlers in process (issue 15), and the guard still decides every call.

Against one real `auth-server serve` (default rules: Introspect is for service accounts), the same refusal
is asked for over HTTP and over gRPC, and must come back with the same reason: a route whose rule is
`authenticated` without a token, a `roles` route with a plain user's token, a `services` route with a
person's token, and an unknown tenant. Each bridge call also leaves the guard's access log line, with the
method, the outcome and the browser's address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auth_client.gen.auth.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from tests.e2e.test_bridge import SECRET, User, bearer, error_of
from tests.support.mail import SmtpSink
from tests.support.process import ServerProcess, running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpSink) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("bridge-guard")
    env = {
        "AUTH_STORE": f"sqlite:///{directory}/auth.db",
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_SMTP_URL": smtp.url,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_TENANTS": "default,acme",
        "AUTH_OTP_RESEND_INTERVAL": "0",
        "AUTH_LOG_LEVEL": "INFO",  # the access log goes to the console the test reads
    }
    with running(env) as process:
        yield process


def _grpc_reason(error: grpc.RpcError) -> tuple[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return error.code().name, info.reason.lower()  # type: ignore[attr-defined]
    raise AssertionError(f"no ErrorInfo in {status}")


def _access_lines(server: ServerProcess, method: str) -> list[dict]:
    lines = []
    for line in "".join(server.output).splitlines():
        if line.startswith("{") and f'"{method}"' in line:
            record = json.loads(line)
            if record.get("method") == method:
                lines.append(record)
    return lines


def test_bridge_refusals_are_the_guards_decisions(server: ServerProcess, smtp: SmtpSink) -> None:
    with httpx.Client(base_url=server.http_url, timeout=30) as http, grpc.insecure_channel(server.addr) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        tokens = User(http, smtp).login()
        person = [("authorization", f"Bearer {tokens['accessToken']}")]

        def over_grpc(call: grpc.UnaryUnaryMultiCallable, request: object, metadata: list) -> tuple[str, str]:
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=metadata, timeout=30)
            return _grpc_reason(refused.value)

        def over_http(response: httpx.Response) -> tuple[str, str]:
            error = error_of(response)
            return error["status"], error["reason"]

        cases = [
            # `authenticated`, no token
            (http.get("/api/v1/auth/me"), over_grpc(auth.GetMe, auth_pb2.GetMeRequest(), []), 401),
            # `roles: ADMIN`, a user's token
            (
                http.get("/api/v1/admin/users", headers=bearer(tokens)),
                over_grpc(admin.ListUsers, admin_pb2.ListUsersRequest(), person),
                403,
            ),
            # `services`, a person's token
            (
                http.post(
                    "/api/v1/auth/introspect", json={"accessToken": tokens["accessToken"]}, headers=bearer(tokens)
                ),
                over_grpc(auth.Introspect, auth_pb2.IntrospectRequest(access_token=tokens["accessToken"]), person),
                403,
            ),
            # the tenant, decided before authentication
            (
                http.get("/api/v1/auth/me", headers={**bearer(tokens), "x-tenant-id": "nowhere"}),
                over_grpc(auth.GetMe, auth_pb2.GetMeRequest(), [*person, ("x-tenant-id", "nowhere")]),
                404,
            ),
        ]
        for response, grpc_refusal, status in cases:
            assert response.status_code == status, response.text
            assert over_http(response) == grpc_refusal
        assert [over_http(r) for r, _, _ in cases] == [
            ("UNAUTHENTICATED", "token_missing"),
            ("PERMISSION_DENIED", "insufficient_role"),
            ("PERMISSION_DENIED", "caller_not_allowed"),
            ("NOT_FOUND", "tenant_not_found"),
        ]

        # Allowed through the bridge with the same token: the guard admitted the person it authenticated.
        me = http.get("/api/v1/auth/me", headers={**bearer(tokens), "X-Forwarded-For": "203.0.113.9"})
        assert me.status_code == 200 and me.json()["sessionId"] == tokens["sessionId"]
        assert auth.GetMe(auth_pb2.GetMeRequest(), metadata=person, timeout=30).session_id == tokens["sessionId"]

    def logged() -> list[dict] | None:
        lines = _access_lines(server, "/auth.v1.AuthService/Introspect")
        return lines if len(lines) >= 2 else None

    introspect = server.wait_for_output(lambda _: logged(), "the access log lines of Introspect")
    assert {(r["code"], r["reason"]) for r in introspect} == {("PERMISSION_DENIED", "CALLER_NOT_ALLOWED")}
    getme = _access_lines(server, "/auth.v1.AuthService/GetMe")
    assert {r["code"] for r in getme} >= {"OK", "UNAUTHENTICATED", "NOT_FOUND"}
    # The bridge's call is logged with the browser's address (its peer: X-Forwarded-For from an untrusted
    # peer is not believed), as over the loopback hop before.
    assert all(r["ip"] == "127.0.0.1" for r in getme)


def test_request_heads_are_bounded(server: ServerProcess) -> None:
    """httptools buffers a request head without limit; the bridge refuses one past 16 KiB (as h11 did)."""
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        huge = http.get("/api/v1/auth/me", headers={"x-filler": "a" * (20 * 1024)})
        assert huge.status_code == 400
        fine = http.get("/api/v1/auth/me", headers={"x-filler": "a" * (8 * 1024)})
        assert fine.status_code == 401 and error_of(fine)["reason"] == "token_missing"
