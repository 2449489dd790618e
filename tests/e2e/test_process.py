"""The `auth-server` process as operators run it: grpcurl through reflection, health, start-up errors,
graceful SIGTERM, and the README's grpcurl walkthrough with mail going through a real SMTP server."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mail import SmtpSink, free_port
from tests.support.process import AUTH_SERVER, REPO, ServerProcess, grpcurl, running

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret-e2e-secret-e2e-secret-e2e-secret"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def env(tmp_path: Path, smtp: SmtpSink) -> dict[str, str]:
    return {
        "AUTH_STORE": f"sqlite:///{tmp_path}/auth.db",
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_SMTP_URL": smtp.url,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_TENANTS": "default,acme",
    }


def test_grpcurl_lists_services_and_health_is_serving(env: dict[str, str]) -> None:
    with running(env) as server:
        listed = grpcurl(server.addr, verb="list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {"auth.v1.AuthService", "auth.v1.AdminService", "grpc.health.v1.Health"} <= services
        health = grpcurl(server.addr, "grpc.health.v1.Health/Check")
        assert health.returncode == 0 and json.loads(health.stdout) == {"status": "SERVING"}
        described = grpcurl(server.addr, "auth.v1.AuthService", verb="describe")
        assert "rpc Login ( .auth.v1.LoginRequest ) returns ( .auth.v1.LoginResponse )" in described.stdout
        assert "option (.auth.v1.access) = { public: true };" in described.stdout


def _error(result: subprocess.CompletedProcess[str]) -> dict:
    """grpcurl -format-error prints the status as JSON, ErrorInfo included."""
    assert result.returncode != 0, result.stdout
    status = json.loads(result.stdout or result.stderr)
    info = next(d for d in status.get("details", []) if d["@type"].endswith("google.rpc.ErrorInfo"))
    return {"code": status["code"], "reason": info["reason"]}


def test_readme_walkthrough_with_grpcurl(env: dict[str, str], smtp: SmtpSink) -> None:
    """signup -> login -> code from mail -> verify -> JWT holds only session claims -> GetMe ->
    ListSessions -> LogoutSession -> the same token now fails with SESSION_REVOKED."""
    with running(env) as server:
        auth = "auth.v1.AuthService/"
        signup = grpcurl(
            server.addr,
            auth + "Signup",
            {"username": "jane", "email": "jane@example.com", "password": "correct horse battery"},
        )
        assert signup.returncode == 0, signup.stdout + signup.stderr
        assert json.loads(signup.stdout)["user"]["role"] == "ROLE_USER"
        login = json.loads(
            grpcurl(
                server.addr, auth + "Login", {"usernameOrEmail": "jane", "password": "correct horse battery"}
            ).stdout
        )
        code = smtp.last_code("jane@example.com")
        verified = grpcurl(
            server.addr,
            auth + "VerifyOtp",
            {"loginId": login["login_id"], "otp": code},
            headers={"x-device-name": "Operator laptop"},
        )
        tokens = json.loads(verified.stdout)
        payload = tokens["access_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert set(claims) == {"session_id", "type", "iat", "exp", "jti"} and claims["type"] == "access"
        bearer = {"authorization": f"Bearer {tokens['access_token']}"}
        me = json.loads(grpcurl(server.addr, auth + "GetMe", headers=bearer).stdout)
        assert me["user"]["username"] == "jane" and me["session_id"] == tokens["session_id"]
        sessions = json.loads(grpcurl(server.addr, auth + "ListSessions", headers=bearer).stdout)["sessions"]
        assert [(s["device_name"], s["is_current"]) for s in sessions] == [("Operator laptop", True)]
        out = grpcurl(server.addr, auth + "LogoutSession", {"sessionId": tokens["session_id"]}, headers=bearer)
        assert out.returncode == 0, out.stdout + out.stderr
        after = _error(grpcurl(server.addr, auth + "GetMe", headers=bearer))
        assert after == {"code": 16, "reason": "SESSION_REVOKED"}


def test_sigterm_exits_zero_and_keeps_data(env: dict[str, str]) -> None:
    server = ServerProcess(env).start()
    assert (
        grpcurl(
            server.addr,
            "auth.v1.AuthService/Signup",
            {"username": "kept", "email": "kept@example.com", "password": "correct horse battery"},
        ).returncode
        == 0
    )
    assert server.stop() == 0
    assert "stopped" in "".join(server.output)
    with running(env) as again:  # a restart finds the committed user
        taken = _error(
            grpcurl(
                again.addr,
                "auth.v1.AuthService/Signup",
                {"username": "kept", "email": "k2@example.com", "password": "correct horse battery"},
            )
        )
        assert taken == {"code": 6, "reason": "USERNAME_TAKEN"}


@pytest.mark.parametrize(
    ("env_overrides", "exit_code", "needle"),
    [
        ({"AUTH_STORE": "redis://localhost"}, 2, "AUTH_STORE: unknown scheme 'redis'"),
        ({"AUTH_GRPC_ADDR": "nonsense"}, 2, "AUTH_GRPC_ADDR: expected HOST:PORT"),
        ({"AUTH_BCRYPT_ROUNDS": "many"}, 2, "AUTH_BCRYPT_ROUNDS: expected an integer"),
        ({"AUTH_JWT_SECRET": "short"}, 2, "AUTH_JWT_SECRET: must be at least 32 bytes"),
        ({"AUTH_TENANTS": "acme,../x"}, 2, "AUTH_TENANTS: tenant id '../x'"),
        ({"AUTH_SMTP_URL": "http://mail"}, 2, "AUTH_SMTP_URL: unknown scheme 'http'"),
        ({"AUTH_STORE": "mongodb://127.0.0.1:1/auth?serverSelectionTimeoutMS=500"}, 1, "store unavailable"),
    ],
)
def test_bad_configuration_is_one_clear_line(
    env: dict[str, str], env_overrides: dict[str, str], exit_code: int, needle: str
) -> None:
    run_env = {**env, "AUTH_GRPC_ADDR": f"127.0.0.1:{free_port()}", **env_overrides}
    import os

    result = subprocess.run(
        [str(AUTH_SERVER), "serve"],
        env={**os.environ, **run_env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_sigterm_under_load_finishes_in_flight_calls_and_refuses_new_ones(env: dict[str, str], smtp: SmtpSink) -> None:
    """A Login is provably inside the server (its mail is held at the SMTP sink) when SIGTERM arrives: it
    still completes, a new call is refused, the process exits 0, and a restart keeps committed sessions."""
    import signal
    import threading

    import grpc

    from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc

    server = ServerProcess({**env, "AUTH_SHUTDOWN_GRACE": "20", "AUTH_OTP_RESEND_INTERVAL": "0"}).start()
    channel = grpc.insecure_channel(server.addr)
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    auth.Signup(auth_pb2.SignupRequest(username="busy", email="busy@example.com", password="correct horse battery"))
    login = auth.Login(auth_pb2.LoginRequest(username_or_email="busy", password="correct horse battery"))
    code = smtp.last_code("busy@example.com")
    kept = auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login.login_id, otp=code))

    smtp.hold = threading.Event()
    in_flight = auth.Login.future(auth_pb2.LoginRequest(username_or_email="busy", password="correct horse battery"))
    assert smtp.arrived.acquire(timeout=10)  # the call is inside the server, waiting on the mail server
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    # Until the server has begun its shutdown, calls still get answers; then every new one is refused,
    # while the held Login is still running. A bounded number of quick calls, no sleeping.
    refused = False
    for _ in range(500):
        with grpc.insecure_channel(server.addr) as late_channel:
            try:
                auth_pb2_grpc.AuthServiceStub(late_channel).GetMe(auth_pb2.GetMeRequest(), timeout=5)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    refused = True
                    break
    assert refused and not in_flight.done()
    smtp.hold.set()
    assert in_flight.result(timeout=20).login_id  # the in-flight call completed
    assert server.proc.wait(timeout=30) == 0
    channel.close()

    with running(env) as again:
        with grpc.insecure_channel(again.addr) as fresh:
            me = auth_pb2_grpc.AuthServiceStub(fresh).GetMe(
                auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {kept.access_token}")]
            )
            assert me.user.username == "busy"  # the session committed before the restart is still there


def test_metrics_endpoint_and_json_logs(env: dict[str, str]) -> None:
    """Prometheus text on AUTH_METRICS_ADDR; every log line on stderr is one JSON object."""
    import urllib.request

    metrics_addr = f"127.0.0.1:{free_port()}"
    server = ServerProcess({**env, "AUTH_METRICS_ADDR": metrics_addr}).start()
    try:
        assert grpcurl(server.addr, "grpc.health.v1.Health/Check").returncode == 0
        grpcurl(server.addr, "auth.v1.AuthService/GetMe")  # UNAUTHENTICATED, counted too
        with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'auth_rpc_calls_total{code="UNAUTHENTICATED",method="/auth.v1.AuthService/GetMe"} 1.0' in text
        assert "auth_rpc_latency_seconds_bucket" in text and "auth_store_errors_total 0.0" in text
    finally:
        server.stop()
    log_lines = [line for line in server.output if line.startswith("{")]
    assert log_lines, server.output
    entries = [json.loads(line) for line in log_lines]
    access = [e for e in entries if e.get("logger") == "auth.access"]
    assert any(e["method"] == "/auth.v1.AuthService/GetMe" and e["reason"] == "TOKEN_MISSING" for e in access)
