"""Losing the store while running: calls fail fast with UNAVAILABLE / STORE_UNAVAILABLE, health turns
NOT_SERVING, and both recover by themselves when the store is back (a real FerretDB, stopped and
restarted on the same port and data directory).

Requirements covered: OWASP ASVS 5.0 V16.5.2/V16.5.3 (fail securely when a resource is unavailable: no
access granted, no internals disclosed), V15.4 (safe concurrency: nothing half-written).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from auth_server.api.server import create_server
from auth_server.infra.config import load_settings
from tests.integration.conftest import PASSWORD, SECRET, signup
from tests.support.ferretdb import REPO, free_port, unavailable
from tests.support.mail import SmtpSink
from tests.support.rpc import fails


class Ferret:
    def __init__(self, workdir: Path) -> None:
        self.binary = Path(os.environ.get("AUTH_FERRETDB_BIN") or REPO / ".cache" / "bin" / "ferretdb")
        if not os.access(self.binary, os.X_OK):
            unavailable(f"this test stops and restarts its own FerretDB, and there is none at {self.binary}")
        self.workdir = workdir
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/outage"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "--handler=sqlite",
                f"--sqlite-url=file:{self.workdir}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                f"--state-dir={self.workdir}",
                "--debug-addr=-",
                "--telemetry=disable",
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with MongoClient(self.uri, serverSelectionTimeoutMS=250) as client:
            for _ in range(120):  # bounded: at most ~30 s of 250 ms server-selection waits
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    continue
        raise AssertionError("FerretDB did not come up")

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def ferret(tmp_path: Path) -> Iterator[Ferret]:
    server = Ferret(tmp_path)
    server.start()
    yield server
    server.stop()


def _wait_for(health: health_pb2_grpc.HealthStub, wanted: int) -> None:
    """Follow the health Watch stream until it reports `wanted` (bounded by the call's deadline)."""
    for response in health.Watch(health_pb2.HealthCheckRequest(service="auth.v1.AuthService"), timeout=30):
        if response.status == wanted:
            return


@contextlib.contextmanager
def served(
    store_uri: str, smtp: SmtpSink
) -> Iterator[tuple[auth_pb2_grpc.AuthServiceStub, health_pb2_grpc.HealthStub]]:
    """The real server in process on `store_uri`, health checked every 0.2 s, mailing to `smtp`; its auth
    and health stubs."""
    settings = load_settings(
        {
            "AUTH_STORE": store_uri,
            "AUTH_JWT_SECRET": SECRET,
            "AUTH_GRPC_ADDR": "127.0.0.1:0",
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_SMTP_URL": smtp.url,
            "AUTH_OTP_RESEND_INTERVAL": "0",
        }
    )
    app = create_server(settings, health_interval=0.2)
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield auth_pb2_grpc.AuthServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        app.stop(0)


def test_store_lost_and_back(ferret: Ferret, tmp_path: Path, smtp: SmtpSink) -> None:
    with served(ferret.uri, smtp) as (auth, health):
        signup(auth, smtp, "steady")
        ferret.stop()
        request = auth_pb2.SignupRequest(username="lost", email="lost@example.com", password=PASSWORD)
        failure = fails(auth.Signup, request, timeout=10)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
        assert "127.0.0.1" not in failure.message and "Traceback" not in failure.message
        _wait_for(health, health_pb2.HealthCheckResponse.NOT_SERVING)

        ferret.start()
        _wait_for(health, health_pb2.HealthCheckResponse.SERVING)
        again = fails(
            auth.Signup, auth_pb2.SignupRequest(username="steady", email="other@example.com", password=PASSWORD)
        )
        assert again.reason == "USERNAME_TAKEN"  # what was committed before the outage is still there
        assert signup(auth, smtp, "lost").username == "lost"  # and the failed call left nothing behind


def _chattr(flag: str, *paths: Path) -> None:
    """Immutable files: the one way to make a file unwritable for root too (chmod does not stop root)."""
    result = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        message = f"chattr {flag} is not available here ({result.stderr.strip()}); cannot make SQLite unwritable"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_sqlite_file_unwritable_and_back(tmp_path: Path, smtp: SmtpSink) -> None:
    db = tmp_path / "auth.db"
    # The database and its WAL become read-only; the shared-memory index must stay writable (SQLite maps
    # it, and an immutable one would crash the process with SIGBUS rather than fail a call).
    files = [db, db.with_name(db.name + "-wal")]
    with served(f"sqlite:///{db}", smtp) as (auth, health):
        try:
            signup(auth, smtp, "before")
            _chattr("+i", *files)
            request = auth_pb2.SignupRequest(username="during", email="during@example.com", password=PASSWORD)
            failure = fails(auth.Signup, request, timeout=10)
            assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
            _wait_for(health, health_pb2.HealthCheckResponse.NOT_SERVING)
            _chattr("-i", *files)
            _wait_for(health, health_pb2.HealthCheckResponse.SERVING)
            assert signup(auth, smtp, "during").username == "during"  # the refused call left nothing half-written
            taken = fails(
                auth.Signup, auth_pb2.SignupRequest(username="before", email="b2@example.com", password=PASSWORD)
            )
            assert taken.reason == "USERNAME_TAKEN"
        finally:
            subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True, check=False)
