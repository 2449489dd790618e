"""The real server, in process on a free port, over both stores, with mail going to a real SMTP sink."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from auth_client.gen.auth.v1 import admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_server.config import load_settings
from auth_server.server import App, create_server
from tests.support.mail import SmtpSink

PASSWORD = "correct horse battery"
SECRET = "integration-test-secret-that-is-long-enough"


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

    app: App
    smtp: SmtpSink
    channel: grpc.Channel
    auth: auth_pb2_grpc.AuthServiceStub = field(init=False)
    admin: admin_pb2_grpc.AdminServiceStub = field(init=False)
    health: health_pb2_grpc.HealthStub = field(init=False)

    def __post_init__(self) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def store_uri(self) -> str:
        return self.app.settings.store_uri

    def signup(self, username: str, tenant: str | None = None, password: str = PASSWORD) -> auth_pb2.User:
        request = auth_pb2.SignupRequest(username=username, email=f"{username}@example.com", password=password)
        return self.auth.Signup(request, metadata=md(tenant=tenant)).user

    def login(self, username: str, tenant: str | None = None, password: str = PASSWORD) -> str:
        """Password step; returns the login_id."""
        response = self.auth.Login(
            auth_pb2.LoginRequest(username_or_email=username, password=password), metadata=md(tenant=tenant)
        )
        return response.login_id

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


def md(token: str | None = None, tenant: str | None = None, **extra: str) -> list[tuple[str, str]]:
    """Call metadata: bearer token, tenant, and any extra headers."""
    items = [("authorization", f"Bearer {token}")] if token else []
    if tenant:
        items.append(("x-tenant-id", tenant))
    items.extend((k.replace("_", "-"), v) for k, v in extra.items())
    return items


@pytest.fixture
def make_client(store_uri: str, smtp: SmtpSink) -> Iterator[Any]:
    apps: list[App] = []
    channels: list[grpc.Channel] = []

    def make(**env: str) -> Client:
        settings = load_settings(
            {
                "AUTH_STORE": store_uri,
                "AUTH_GRPC_ADDR": "127.0.0.1:0",
                "AUTH_JWT_SECRET": SECRET,
                "AUTH_SMTP_URL": smtp.url,
                "AUTH_BCRYPT_ROUNDS": "4",
                "AUTH_TENANTS": "default,acme",
                "AUTH_OTP_RESEND_INTERVAL": "0",
                **env,
            }
        )
        app = create_server(settings, health_interval=0.2)
        apps.append(app)
        channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        channels.append(channel)
        return Client(app, smtp, channel)

    yield make
    for channel in channels:
        channel.close()
    for app in apps:
        app.stop(0)


@pytest.fixture
def client(make_client: Any) -> Client:
    return make_client()
