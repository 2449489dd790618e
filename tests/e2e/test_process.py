"""The `auth-server` process as operators run it: grpcurl through reflection, health, start-up errors
(bad settings, a busy port), graceful SIGTERM, metrics and logs. The README's walkthroughs run as
written in test_readme.py."""

from __future__ import annotations

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


def test_sigterm_exits_zero_and_keeps_data(env: dict[str, str], smtp: SmtpSink) -> None:
    server = ServerProcess(env).start()
    started = grpcurl(
        server.addr,
        "auth.v1.AuthService/Signup",
        {"username": "kept", "email": "kept@example.com", "password": "correct horse battery"},
    )
    assert started.returncode == 0, started.stderr
    verify = {"signup_id": json.loads(started.stdout)["signup_id"], "code": smtp.last_code("kept@example.com")}
    assert grpcurl(server.addr, "auth.v1.AuthService/VerifySignup", verify).returncode == 0
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


@pytest.mark.parametrize("mail", ["console", "smtp"])
def test_serve_prints_one_banner_and_ctrl_c_stops_it(env: dict[str, str], smtp: SmtpSink, mail: str) -> None:
    """What a newcomer reads once `scripts/serve` is up: where gRPC and HTTP listen, the /demo page, where the
    login codes appear, and how to stop; then Ctrl-C (SIGINT) stops the server cleanly."""
    import signal

    server = ServerProcess({**env, "AUTH_SMTP_URL": smtp.url if mail == "smtp" else ""}).start()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(30) == 0
    printed = [line.rstrip("\n") for line in server.output if not line.startswith("{")]  # not the JSON logs
    start = printed.index("auth-server: serving")
    grpc_line, http_line, demo_line, codes_line, stop_line = printed[start + 1 : start + 6]
    assert grpc_line.startswith(f"  gRPC listening on {server.addr} (store: sqlite:///")
    assert http_line == f"  HTTP bridge listening on {server.http_url}"
    assert demo_line == f"  demo page:   {server.http_url}/demo"
    if mail == "smtp":
        assert codes_line == f"  login codes: e-mailed through {smtp.url}"
    else:
        assert codes_line.startswith("  login codes: printed in this terminal, marked DEV MAIL")
    assert stop_line == "  stop:        Ctrl-C (in-flight calls finish first)"
    assert printed.count("auth-server: serving") == 1 and printed[start + 6 :] == [
        "auth-server: shutting down (finishing in-flight calls)",
        "auth-server: stopped",
    ]


def test_unlock_link_reaches_the_bridge_where_it_listens(env: dict[str, str], smtp: SmtpSink) -> None:
    """AUTH_PUBLIC_URL unset and the bridge on a port picked at start (AUTH_HTTP_ADDR port 0): the link in
    the lockout mail still points at the bridge, which answers it."""
    import re

    import httpx

    overrides = {
        "AUTH_HTTP_ADDR": "127.0.0.1:0",
        "AUTH_PUBLIC_URL": "",
        # The unlock mail goes out at the first failed password.
        "AUTH_LOCKOUT_THRESHOLD": "1",
        "AUTH_ACCOUNT_FAILURE_LIMIT": "1",
    }
    with running({**env, **overrides}) as server:
        assert not server.http_url.endswith(":0")
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            account = {"username": "locked", "email": "locked@example.com", "password": "correct horse battery"}
            started = http.post("/api/v1/auth/signup", json=account)
            assert started.status_code == 200
            code = smtp.last_code("locked@example.com")
            verify = {"signupId": started.json()["signupId"], "code": code}
            assert http.post("/api/v1/auth/signup/verify", json=verify).status_code == 200
            wrong = http.post("/api/v1/auth/login", json={"usernameOrEmail": "locked", "password": "not it at all"})
            assert wrong.status_code == 401
        (link,) = re.findall(r"https?://\S+", smtp.wait_for("locked@example.com", count=2).body)
        assert link.startswith(f"{server.http_url}/api/v1/auth/unlock?token=")
        opened = httpx.get(link, timeout=30)  # as the mail's reader clicks it: the bridge answers
        assert opened.status_code == 200 and "unlock" in opened.text.lower()


def test_grpc_port_in_use_is_one_clear_line(env: dict[str, str]) -> None:
    """Another program holds the gRPC port: one line naming AUTH_GRPC_ADDR, exit code 2, no traceback and
    no grpc C-core log line."""
    import os
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [str(AUTH_SERVER), "serve"],
            env={**os.environ, **env, "AUTH_GRPC_ADDR": addr, "AUTH_HTTP_ADDR": f"127.0.0.1:{free_port()}"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"auth-server: configuration error: AUTH_GRPC_ADDR: gRPC server cannot listen on {addr}: Address already in use"
    ]
    assert "Traceback" not in result.stdout


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
    started = auth.Signup(
        auth_pb2.SignupRequest(username="busy", email="busy@example.com", password="correct horse battery")
    )
    signup_code = smtp.last_code("busy@example.com")
    auth.VerifySignup(auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=signup_code))
    login = auth.Login(auth_pb2.LoginRequest(username_or_email="busy", password="correct horse battery"))
    code = smtp.last_code("busy@example.com", count=2)
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
        assert 'auth_session_cache_reads_total{result="hit"} 0.0' in text  # no token got as far as the cache
        assert "auth_session_cache_entries 0.0" in text and "auth_session_cache_tail_age_seconds" in text
    finally:
        server.stop()
    log_lines = [line for line in server.output if line.startswith("{")]
    assert log_lines, server.output
    entries = [json.loads(line) for line in log_lines]
    access = [e for e in entries if e.get("logger") == "auth.access"]
    assert any(e["method"] == "/auth.v1.AuthService/GetMe" and e["reason"] == "TOKEN_MISSING" for e in access)
