"""The NestJS client package (clients/node, npm `auth-service-client`) in a real NestJS app against the
real `auth-server` process.

Builds and packs the package from the npm registry's dependencies (node_modules cached under the
gitignored clients/node/node_modules and tests/e2e/nest_app/node_modules, reinstalled when a lockfile
changes), installs the packed tarball into the fixture app tests/e2e/nest_app (NestJS pinned in its
package.json), and starts the app: an HTTP API plus a gRPC microservice, every handler behind the
package's AuthGuard. A person signs up and logs in through routes that call the package's AuthClient
(the code read from a real SMTP server); then the answers of @Public(), the 401s (token_missing,
session_revoked), @Roles('admin') (403, then 200 once the live user is an admin), @CurrentUser(), a
revocation seen within 1 s through revocation push (WatchRevocations) while the guard's cache TTL is its
default 5 s, a revocation seen once the cache TTL has passed in an app with push turned off, the same
guard on gRPC handlers, and 503 when the auth service cannot answer.

The auth service runs with its default Introspect access (service tokens only): the app is given the
credentials of a service account made with the real `auth-server service create nest-gateway --json`,
and the package's guard introspects with its own service token. Without credentials the same guard
answers 503 (fail closed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import grpc
import httpx
import pytest

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support.mail import SmtpSink, free_port
from tests.support.process import AUTH_SERVER, REPO, ServerProcess, running
from tests.support.rpc import failure

pytestmark = pytest.mark.e2e

NODE_CLIENT = REPO / "clients" / "node"
# Another copy of the fixture app (e.g. with another NestJS major in its package.json) can be checked with
# NODE_CLIENT_NEST_APP=/path/to/copy; the README says which majors were checked so.
NEST_APP = Path(os.environ.get("NODE_CLIENT_NEST_APP") or REPO / "tests" / "e2e" / "nest_app")
PASSWORD = "correct horse battery"
SECRET = "e2e-secret-e2e-secret-e2e-secret-e2e-secret"
DEFAULT_CACHE_TTL = 5.0  # seconds: the package's default cache TTL, which the main app under test keeps
PUSH_WITHIN = 1.0  # seconds: a revocation reaches the app with revocation push (the bound)
CACHE_TTL = 0.5  # seconds: the cache TTL of the app with revocation push off (AUTH_CACHE_TTL_MS)
MARGIN = 2.0  # seconds on top of the TTL for a loaded 2-core machine
T = TypeVar("T")
_names = count(1)


def _require_npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        message = "npm is not installed (the README's prerequisites: Node.js 20+ with npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return npm


def _npm(args: list[str], cwd: Path, timeout: float = 600) -> str:
    npm = _require_npm()
    done = subprocess.run(
        [npm, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={
            **os.environ,
            "npm_config_audit": "false",
            "npm_config_fund": "false",
            "npm_config_update_notifier": "false",
        },
    )
    assert done.returncode == 0, f"npm {' '.join(args)} in {cwd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _install(directory: Path) -> None:
    """`npm ci` unless node_modules was installed from this very package-lock.json (clients/node/scripts/install.sh)."""
    done = subprocess.run(
        [str(NODE_CLIENT / "scripts" / "install.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"npm ci in {directory} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def nest_app_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built and packed (`npm pack` runs its build), installed into the fixture app, built."""
    _require_npm()
    _install(NODE_CLIENT)
    packed = tmp_path_factory.mktemp("npm-pack")
    listing = json.loads(_npm(["pack", "--json", "--pack-destination", str(packed)], NODE_CLIENT))
    tarball = packed / listing[0]["filename"]
    files = {entry["path"] for entry in listing[0]["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "README.md", "package.json"} <= files, files
    assert not any(f.startswith(("src/", "test/", "node_modules/")) for f in files), files
    _install(NEST_APP)
    # The tarball as an app installs a release; --no-save keeps package.json's `file:` spec as it is.
    _npm(["install", "--no-save", str(tarball)], NEST_APP)
    _npm(["run", "build"], NEST_APP)
    return NEST_APP


class NestApp:
    """`node dist/main.js` of the fixture app, on free ports; ready once it printed its listening line."""

    def __init__(
        self,
        auth_address: str,
        cache_ttl_ms: int | None,
        service: dict[str, str] | None = None,
        watch_revocations: bool = True,
    ) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.env = {
            **os.environ,
            "AUTH_ADDRESS": auth_address,
            "HTTP_PORT": str(self.http_port),
            "GRPC_PORT": str(self.grpc_port),
            "AUTH_WATCH_REVOCATIONS": "1" if watch_revocations else "0",
        }
        self.env.pop("AUTH_CACHE_TTL_MS", None)  # unset: the package's default TTL
        if cache_ttl_ms is not None:
            self.env["AUTH_CACHE_TTL_MS"] = str(cache_ttl_ms)
        self.env.pop("AUTH_CLIENT_ID", None)
        self.env.pop("AUTH_CLIENT_SECRET", None)
        if service is not None:  # AuthModule's serviceCredentials (tests/e2e/nest_app/src/app.module.ts)
            self.env["AUTH_CLIENT_ID"] = service["client_id"]
            self.env["AUTH_CLIENT_SECRET"] = service["client_secret"]
        self.output: list[str] = []
        self._ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> NestApp:
        node = shutil.which("node")
        assert node, "node is not installed"
        self.proc = subprocess.Popen(
            [node, "dist/main.js"],
            cwd=NEST_APP,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError("the NestJS app did not start:\n" + "".join(self.output))
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)
            if "nest app listening" in line:
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('node-client')}/auth.db"


@pytest.fixture(scope="module")
def server_env(store: str, smtp: SmtpSink) -> dict[str, str]:
    return {
        # The default (Introspect for service tokens only), spelled out so an outer environment cannot change it.
        "AUTH_INTROSPECT_ACCESS": "service",
        "AUTH_STORE": store,
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_SMTP_URL": smtp.url,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_OTP_RESEND_INTERVAL": "0",
        "AUTH_SOURCE_LOGIN_RATE": "0",
    }


@pytest.fixture(scope="module")
def server(server_env: dict[str, str]) -> Iterator[ServerProcess]:
    with running(server_env) as process:
        yield process


@pytest.fixture(scope="module")
def service_account(server: ServerProcess, server_env: dict[str, str]) -> dict[str, str]:
    """A service account for the app, made with the real CLI where the server runs (same store and secret)."""
    made = subprocess.run(
        [str(AUTH_SERVER), "service", "create", "nest-gateway", "--json"],
        env={**os.environ, **server_env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    account: dict[str, str] = json.loads(made.stdout)
    assert account["name"] == "nest-gateway" and account["client_id"] and account["client_secret"], account
    return account


def revocation_stream(app: NestApp) -> dict[str, object]:
    """The guard's revocation stream as the app shows it (AuthGate.revocations): {up, events, fallbacks}."""
    answer = httpx.get(f"{app.url}/account/health/revocations", timeout=10)
    assert answer.status_code == 200, answer.text
    state: dict[str, object] = answer.json()
    return state


@pytest.fixture(scope="module")
def app(nest_app_built: Path, server: ServerProcess, service_account: dict[str, str]) -> Iterator[NestApp]:
    """The app as the README wires it: service credentials, the default cache TTL, revocation push."""
    nest = NestApp(server.addr, None, service_account).start()
    try:
        # The module opens the stream at start-up, in the background: wait for it rather than sleep.
        poll(lambda: True if revocation_stream(nest)["up"] else None, 10, "the revocation stream up")
        yield nest
    finally:
        nest.stop()


@pytest.fixture(scope="module")
def ttl_app(nest_app_built: Path, server: ServerProcess, service_account: dict[str, str]) -> Iterator[NestApp]:
    """The same app with revocation push off and a short cache TTL: revocations are seen within the TTL."""
    nest = NestApp(server.addr, int(CACHE_TTL * 1000), service_account, watch_revocations=False).start()
    try:
        yield nest
    finally:
        nest.stop()


@pytest.fixture
def http(app: NestApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url, timeout=30) as client:
        yield client


class Person:
    """Someone who signs up and logs in through the app's routes, i.e. the package's AuthClient."""

    def __init__(self, http: httpx.Client, smtp: SmtpSink) -> None:
        n = next(_names)
        self.http, self.smtp = http, smtp
        self.username, self.email = f"nest{n}-{os.getpid()}", f"nest{n}-{os.getpid()}@example.com"
        started = http.post(
            "/account/signup", json={"username": self.username, "email": self.email, "password": PASSWORD}
        )
        assert started.status_code == 200, started.text
        assert started.json()["deliveryHint"].endswith("***@example.com")
        code = smtp.last_code(self.email)
        created = http.post("/account/signup/verify", json={"signupId": started.json()["signupId"], "code": code})
        assert created.status_code == 200, created.text
        assert created.json()["username"] == self.username and created.json()["emailVerified"] is True
        self.id = created.json()["id"]
        self.logins = 1  # mails so far (the sign-up code): the next login code is the next one

    def login(self) -> tuple[str, str]:
        """A new session: (access token, session id)."""
        started = self.http.post("/account/login", json={"usernameOrEmail": self.username, "password": PASSWORD})
        assert started.status_code == 200, started.text
        self.logins += 1
        code = self.smtp.last_code(self.email, self.logins)
        verified = self.http.post("/account/login/verify", json={"loginId": started.json()["loginId"], "otp": code})
        assert verified.status_code == 200, verified.text
        return verified.json()["accessToken"], verified.json()["sessionId"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def revoke(server: ServerProcess, token: str, session_id: str) -> None:
    """Log a session out on the auth service directly (another device), not through the app."""
    with grpc.insecure_channel(server.addr) as channel:
        auth_pb2_grpc.AuthServiceStub(channel).LogoutSession(
            auth_pb2.LogoutSessionRequest(session_id=session_id),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )


def poll(check: Callable[[], T | None], within: float, what: str) -> tuple[T, float]:
    """Asks `check` until it returns something, for at most `within` seconds: (the answer, seconds taken)."""
    started = time.monotonic()
    while True:
        found = check()
        took = time.monotonic() - started
        if found is not None:
            return found, took
        assert took < within, f"{what}: not seen within {within} s"
        time.sleep(0.05)


def test_public_route_answers_without_a_token(http: httpx.Client) -> None:
    answer = http.get("/account/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_protected_route_without_a_token_is_401_token_missing_like_the_bridge(http: httpx.Client) -> None:
    answer = http.get("/account/me")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert error["code"] == 401
    assert error["status"] == "UNAUTHENTICATED"
    assert error["reason"] == "token_missing"
    assert error["message"]


def test_signup_and_login_through_the_client_then_current_user(http: httpx.Client, smtp: SmtpSink) -> None:
    person = Person(http, smtp)
    token, session_id = person.login()
    me = http.get("/account/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "id": person.id,
        "username": person.username,
        "email": person.email,
        "role": "user",
        "tenantId": "default",
        "sessionId": session_id,
    }
    assert http.get("/account/me/id", headers=bearer(token)).json() == {"id": person.id}
    assert http.get("/account/sessions", headers=bearer(token)).json() == {"count": 1}


def test_client_errors_answer_like_the_bridge(http: httpx.Client) -> None:
    answer = http.post("/account/signup", json={"username": "x", "email": "not-an-email", "password": "short"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["status"], error["reason"]) == ("INVALID_ARGUMENT", "validation_failed")
    assert {f["field"] for f in error["fields"]} == {"username", "email", "password"}


def test_a_revoked_token_is_401_session_revoked(http: httpx.Client, smtp: SmtpSink, server: ServerProcess) -> None:
    token, session_id = Person(http, smtp).login()
    revoke(server, token, session_id)  # before the app ever saw this token: nothing cached
    answer = http.get("/account/me", headers=bearer(token))
    assert answer.status_code == 401
    assert answer.json()["error"]["reason"] == "session_revoked"
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    garbage = http.get("/account/me", headers=bearer("not-a-jwt"))
    assert (garbage.status_code, garbage.json()["error"]["reason"]) == (401, "token_invalid")


def _revoked(http: httpx.Client, token: str) -> Callable[[], str | None]:
    def revoked() -> str | None:
        answer = http.get("/account/me", headers=bearer(token))
        if answer.status_code == 200:
            return None
        assert answer.status_code == 401, answer.text
        reason: str = answer.json()["error"]["reason"]
        return reason

    return revoked


def test_a_revocation_is_pushed_to_the_guard_within_a_second(
    app: NestApp, http: httpx.Client, smtp: SmtpSink, server: ServerProcess
) -> None:
    """Revocation push: the app's cache TTL is the default 5 s, yet a logout is seen within 1 s."""
    assert revocation_stream(app)["up"] is True
    token, session_id = Person(http, smtp).login()
    for _ in range(3):  # the guard caches this answer: within the TTL, without push, it would keep answering 200
        assert http.get("/account/me", headers=bearer(token)).status_code == 200
    events = revocation_stream(app)["events"]
    assert isinstance(events, int)
    revoke(server, token, session_id)  # on the auth service directly (another device), not through the app
    reason, took = poll(_revoked(http, token), PUSH_WITHIN, "the pushed revocation")
    assert reason == "session_revoked"
    state = revocation_stream(app)
    assert state["up"] is True
    assert isinstance(state["events"], int) and state["events"] > events, state
    print(f"revocation seen by the guard {took:.3f} s after it happened (push; cache TTL {DEFAULT_CACHE_TTL} s)")


def test_a_revocation_is_seen_once_the_cache_ttl_has_passed(
    ttl_app: NestApp, smtp: SmtpSink, server: ServerProcess
) -> None:
    """Without revocation push (turned off here) the cache TTL bounds the delay."""
    assert revocation_stream(ttl_app) == {"up": False, "events": 0, "fallbacks": 0}
    with httpx.Client(base_url=ttl_app.url, timeout=30) as http:
        token, session_id = Person(http, smtp).login()
        assert http.get("/account/me", headers=bearer(token)).status_code == 200  # the guard caches this answer
        revoke(server, token, session_id)
        reason, took = poll(_revoked(http, token), CACHE_TTL + MARGIN, "the revocation")
    assert reason == "session_revoked"
    print(f"revocation seen by the guard {took:.2f} s after it happened (no push; cache TTL {CACHE_TTL} s)")


def test_roles_are_checked_on_the_live_user(
    http: httpx.Client, smtp: SmtpSink, server: ServerProcess, store: str
) -> None:
    person = Person(http, smtp)
    token, _ = person.login()
    forbidden = http.get("/reports/admin", headers=bearer(token))
    assert forbidden.status_code == 403
    error = forbidden.json()["error"]
    assert (error["code"], error["status"], error["reason"]) == (403, "PERMISSION_DENIED", "insufficient_role")
    assert http.get("/reports/any-role", headers=bearer(token)).json() == {"role": "user"}

    made = subprocess.run(
        [str(AUTH_SERVER), "user", "set-role", person.username, "admin"],
        env={**os.environ, "AUTH_STORE": store},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr

    # The same token, no new login: tokens carry no role, the guard sees the live user's.
    def admitted() -> httpx.Response | None:
        answer = http.get("/reports/admin", headers=bearer(token))
        return answer if answer.status_code == 200 else None

    # ROLE_CHANGED is pushed; the bound is the TTL's, so it holds even if a push were missed.
    answer, took = poll(admitted, DEFAULT_CACHE_TTL + MARGIN, "the new admin role")
    print(f"role change seen by the guard {took:.3f} s after it happened")
    assert answer.json() == {"report": "all the numbers", "for": person.username}
    assert http.get("/account/me", headers=bearer(token)).json()["role"] == "admin"


def _demo_pb2(tmp_path: Path) -> ModuleType:
    """The fixture app's demo.proto compiled for Python (grpcio-tools is a test dependency)."""
    from grpc_tools import protoc

    assert protoc.main(["protoc", f"-I{NEST_APP / 'proto'}", f"--python_out={tmp_path}", "demo.proto"]) == 0
    spec = importlib.util.spec_from_file_location("demo_pb2", tmp_path / "demo_pb2.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("demo_pb2", module)
    spec.loader.exec_module(module)
    return module


def test_grpc_microservice_handlers_are_guarded_too(
    app: NestApp, http: httpx.Client, smtp: SmtpSink, server: ServerProcess, store: str, tmp_path: Path
) -> None:
    demo = _demo_pb2(tmp_path)
    person = Person(http, smtp)
    token, session_id = person.login()
    with grpc.insecure_channel(app.grpc_address) as channel:
        who_am_i = channel.unary_unary(
            "/demo.v1.DemoService/WhoAmI",
            request_serializer=demo.WhoAmIRequest.SerializeToString,
            response_deserializer=demo.WhoAmIResponse.FromString,
        )
        admin_report = channel.unary_unary(
            "/demo.v1.DemoService/AdminReport",
            request_serializer=demo.AdminReportRequest.SerializeToString,
            response_deserializer=demo.AdminReportResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as missing:
            who_am_i(demo.WhoAmIRequest(), timeout=10)
        seen = failure(missing.value)
        assert (seen.code, seen.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")

        me = who_am_i(demo.WhoAmIRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)
        assert (me.id, me.username, me.email, me.role, me.tenant_id, me.session_id) == (
            person.id,
            person.username,
            person.email,
            "user",
            "default",
            session_id,
        )
        with pytest.raises(grpc.RpcError) as denied:
            admin_report(demo.AdminReportRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)
        seen = failure(denied.value)
        assert (seen.code, seen.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_ROLE")

        revoke(server, token, session_id)

        def revoked() -> str | None:
            try:
                who_am_i(demo.WhoAmIRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)
            except grpc.RpcError as error:
                return failure(error).reason
            return None

        reason, _ = poll(revoked, PUSH_WITHIN + MARGIN, "the revocation over gRPC")
        assert reason == "SESSION_REVOKED"


def test_without_service_credentials_the_guard_fails_closed_with_503(
    nest_app_built: Path, server: ServerProcess, http: httpx.Client, smtp: SmtpSink
) -> None:
    token, _ = Person(http, smtp).login()
    assert http.get("/account/me", headers=bearer(token)).status_code == 200  # the app with credentials
    bare = NestApp(server.addr, 500).start()  # the same app and auth service, no serviceCredentials
    try:
        with httpx.Client(base_url=bare.url, timeout=30) as client:
            assert client.get("/account/health").status_code == 200
            answer = client.get("/account/me", headers=bearer(token))
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert (error["status"], error["reason"]) == ("UNAVAILABLE", "auth_service_unavailable")
    finally:
        bare.stop()
    # The guard logs why: the auth service refused the anonymous Introspect.
    assert any("introspection failed" in line and "TOKEN_MISSING" in line for line in bare.output), bare.output


def test_503_when_the_auth_service_cannot_answer(nest_app_built: Path, service_account: dict[str, str]) -> None:
    nowhere = NestApp(f"127.0.0.1:{free_port()}", 500, service_account).start()  # nothing listens there
    try:
        with httpx.Client(base_url=nowhere.url, timeout=30) as client:
            assert client.get("/account/health").status_code == 200  # @Public(): no auth service needed
            answer = client.get("/account/me", headers=bearer("any.token.at-all"))
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert (error["status"], error["reason"]) == ("UNAVAILABLE", "auth_service_unavailable")
    finally:
        nowhere.stop()
