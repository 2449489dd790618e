"""The real server on a free port, over both stores, with mail going to a real SMTP sink.

By default the server runs in this process (`create_server`, the same code `auth-server serve` runs);
a test module that sets the `server_mode` fixture to "process" gets the real `auth-server` process
instead, with its own connection to the same store for checking what was written.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2_grpc

from auth_client.gen.auth.v1 import admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_server.api.server import App, create_server
from auth_server.http.runner import BridgeServer
from auth_server.infra.config import load_settings
from auth_server.store import open_store
from tests.support.mail import OTP_IN_MAIL, Mail, SmtpSink
from tests.support.process import ServerProcess

PASSWORD = "correct horse battery"
SECRET = "integration-test-secret-that-is-long-enough"
TENANTS = frozenset({"default", "acme"})  # AUTH_TENANTS of the test servers


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(params=["sqlite", "mongodb"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/auth.db"
    base = request.getfixturevalue("mongodb_uri").rstrip("/")
    return f"{base}/t{secrets.token_hex(4)}"  # a fresh database prefix per test


@dataclass
class Client:
    """Stubs on one channel plus the helpers most tests need."""

    app: App | None  # None when the server is a separate process
    store: Any  # the server's store (in process), or a connection of our own to the same database
    store_uri: str
    addr: str
    smtp: SmtpSink
    channel: grpc.Channel
    auth: auth_pb2_grpc.AuthServiceStub = field(init=False)
    admin: admin_pb2_grpc.AdminServiceStub = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def start_signup(
        self, username: str, tenant: str | None = None, password: str = PASSWORD, **fields: str
    ) -> tuple[auth_pb2.SignupResponse, Mail]:
        """Signup (step 1): the response and the mail it sent (a code, or a notice for a known address)."""
        return start_signup(self.auth, self.smtp, username, password, md(tenant=tenant), **fields)

    def signup(
        self, username: str, tenant: str | None = None, password: str = PASSWORD, **fields: str
    ) -> auth_pb2.User:
        """Signup, read the code from the mail, VerifySignup: the new user (see `signup`)."""
        return signup(self.auth, self.smtp, username, password, md(tenant=tenant), **fields)

    def login(self, username: str, tenant: str | None = None, password: str = PASSWORD) -> str:
        """Password step; returns the login_id."""
        response = self.auth.Login(
            auth_pb2.LoginRequest(username_or_email=username, password=password), metadata=md(tenant=tenant)
        )
        return response.login_id

    def sign_in_admin(self, username: str) -> str:
        """A new user made admin in the store (as `auth-server user set-role` does); its access token."""
        self.signup(username)
        user = self.store.find_user("default", username)
        self.store.update_user("default", user.id, set={"role": "admin"})
        return self.sign_in(username).access_token

    def create_service(self, name: str, tenants: str = "") -> tuple[str, str]:
        """A service account made as `auth-server service create` makes it; its (client id, secret)."""
        from auth_server.domain.audit import Audit
        from auth_server.domain.services import ServiceAccounts
        from auth_server.infra.keys import KeyRing

        accounts = ServiceAccounts(self.store, KeyRing.from_secret(SECRET.encode()), Audit(self.store), TENANTS)
        account, secret = accounts.create(name, tenants.split(","))
        return account.id, secret

    def service_token(self, name: str = "probe", tenants: str = "", tenant: str | None = None) -> str:
        """A new service account's token (IssueServiceToken), e.g. for Introspect."""
        client_id, secret = self.create_service(name, tenants)
        request = auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
        return self.auth.IssueServiceToken(request, metadata=md(tenant=tenant)).access_token

    def code_for(self, username: str) -> str:
        address = f"{username}@example.com"
        return self.smtp.last_code(address, count=len(self.smtp.to(address)) or 1)

    def sign_in(
        self, username: str, tenant: str | None = None, device: str | None = None, password: str = PASSWORD
    ) -> auth_pb2.VerifyOtpResponse:
        """Login, read the code from the mail, VerifyOtp: the tokens of a new session."""
        address = f"{username}@example.com"
        before = len(self.smtp.to(address))
        login_id = self.login(username, tenant, password)
        code = self.smtp.last_code(address, count=before + 1)
        request = auth_pb2.VerifyOtpRequest(login_id=login_id, otp=code)
        if device is not None:
            request.device_name = device
        return self.auth.VerifyOtp(request, metadata=md(tenant=tenant))


def start_signup(
    auth: auth_pb2_grpc.AuthServiceStub,
    smtp: SmtpSink,
    username: str,
    password: str = PASSWORD,
    metadata: list[tuple[str, str]] | None = None,
    **fields: str,
) -> tuple[auth_pb2.SignupResponse, Mail]:
    """Signup (step 1) through any stub: the response and the mail it sent (a code, or a notice for an
    address that has an account). `fields` are more SignupRequest fields; the e-mail defaults to
    <username>@example.com."""
    address = fields.setdefault("email", f"{username}@example.com").strip().lower()  # as the server keeps it
    before = len(smtp.to(address))
    started = auth.Signup(auth_pb2.SignupRequest(username=username, password=password, **fields), metadata=metadata)
    return started, smtp.wait_for(address, count=before + 1)


def signup(
    auth: auth_pb2_grpc.AuthServiceStub,
    smtp: SmtpSink,
    username: str,
    password: str = PASSWORD,
    metadata: list[tuple[str, str]] | None = None,
    **fields: str,
) -> auth_pb2.User:
    """Signup, read the code from the mail, VerifySignup: the new user.

    The sign-up mail is then dropped from the sink, so tests that count or read an address's mails see
    only those that follow the account's creation.
    """
    started, mail = start_signup(auth, smtp, username, password, metadata, **fields)
    (code,) = OTP_IN_MAIL.findall(mail.body)
    request = auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=code)
    user = auth.VerifySignup(request, metadata=metadata).user
    smtp.mails.remove(mail)
    return user


def md(token: str | None = None, tenant: str | None = None, **extra: str) -> list[tuple[str, str]]:
    """Call metadata: bearer token, tenant, and any extra headers."""
    items = [("authorization", f"Bearer {token}")] if token else []
    if tenant:
        items.append(("x-tenant-id", tenant))
    items.extend((k.replace("_", "-"), v) for k, v in extra.items())
    return items


@pytest.fixture
def server_mode() -> str:
    return "inprocess"


@pytest.fixture
def make_client(store_uri: str, smtp: SmtpSink, server_mode: str) -> Iterator[Any]:
    closers: list[Any] = []

    def make(**env: str) -> Client:
        env = {
            "AUTH_STORE": store_uri,
            "AUTH_GRPC_ADDR": "127.0.0.1:0",
            "AUTH_JWT_SECRET": SECRET,
            "AUTH_SMTP_URL": smtp.url,
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_TENANTS": "default,acme",
            "AUTH_OTP_RESEND_INTERVAL": "0",
            **env,
        }
        if server_mode == "process":
            env.pop("AUTH_GRPC_ADDR")  # ServerProcess picks free gRPC and HTTP ports itself
            process = ServerProcess(env).start()
            closers.append(process.stop)
            store = open_store(store_uri)
            store.open()
            closers.append(store.close)
            app, addr = None, process.addr
        else:
            app = create_server(load_settings(env), health_interval=0.2)
            closers.append(lambda: app.stop(0))
            store, addr = app.store, f"127.0.0.1:{app.port}"
        channel = grpc.insecure_channel(addr)
        closers.append(channel.close)
        return Client(app, store, store_uri, addr, smtp, channel)

    yield make
    for close in reversed(closers):
        close()


@pytest.fixture
def client(make_client: Any) -> Client:
    return make_client()


@pytest.fixture
def bridge(client: Client) -> Iterator[httpx.Client]:
    """The HTTP bridge (uvicorn) in this process on a free port, in front of the gRPC server of `client`
    (the loopback gRPC hop `auth-server bridge` makes), as an httpx client."""
    env = {"AUTH_STORE": client.store_uri, "AUTH_JWT_SECRET": SECRET, "AUTH_HTTP_ADDR": "127.0.0.1:0"}
    server = BridgeServer(load_settings(env), client.addr).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield http
    finally:
        server.stop()
