"""Writers queue, they do not fail: 50 rotating refresh chains at once against the `auth-server` process
on SQLite finish without one error (issue 15: under such load a refresh answered STORE_UNAVAILABLE
after SQLite's busy timeout, "database is locked").

Every Refresh is one conditional write (the rotation), so 50 chains keep the server's 32 pool threads
all wanting SQLite's single write lock at once. On the old adapter a run this size failed only now and
then (the starvation needs a 5 s wait); tests/store/test_sqlite_writers.py provokes it every time with a
short busy timeout. This one checks the whole path, the process as operators run it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support.mail import SmtpSink
from tests.support.process import ServerProcess, running
from tests.support.rpc import failure

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret-e2e-secret-e2e-secret-e2e-secret"
PASSWORD = "correct horse battery"
CHAINS = 50
ROTATIONS = 40  # per chain: 2,000 refreshes in all


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpSink) -> Iterator[ServerProcess]:
    env = {
        "AUTH_STORE": f"sqlite:///{tmp_path}/auth.db",
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_SMTP_URL": smtp.url,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_SOURCE_LOGIN_RATE": "0",  # the chains' 50 logins all come from 127.0.0.1
    }
    with running(env) as process:
        yield process


def _session(stub: auth_pb2_grpc.AuthServiceStub, smtp: SmtpSink, n: int) -> str:
    """Sign a user up and log in; the session's first refresh token."""
    name = f"chain{n}"
    request = auth_pb2.SignupRequest(username=name, email=f"{name}@example.com", password=PASSWORD)
    started = stub.Signup(request, timeout=30)
    signup_code = smtp.last_code(f"{name}@example.com")
    stub.VerifySignup(auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=signup_code), timeout=30)
    login = stub.Login(auth_pb2.LoginRequest(username_or_email=name, password=PASSWORD), timeout=30)
    code = smtp.last_code(f"{name}@example.com", count=2)
    verified = stub.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login.login_id, otp=code), timeout=30)
    return verified.refresh_token


def test_concurrent_rotating_refresh_chains_have_no_errors(server: ServerProcess, smtp: SmtpSink) -> None:
    channels = [grpc.insecure_channel(server.addr) for _ in range(CHAINS)]  # one client connection per chain
    stubs = [auth_pb2_grpc.AuthServiceStub(channel) for channel in channels]
    try:
        with ThreadPoolExecutor(2) as pool:  # a few at a time: password checks are bounded per core
            tokens = list(pool.map(lambda n: _session(stubs[n], smtp, n), range(CHAINS)))

        start = threading.Barrier(CHAINS)
        errors: Counter[str] = Counter()
        done = Counter[int]()
        lock = threading.Lock()

        def chain(n: int) -> None:
            token = tokens[n]
            start.wait(timeout=60)
            for _ in range(ROTATIONS):
                try:
                    reply = stubs[n].Refresh(auth_pb2.RefreshRequest(refresh_token=token), timeout=60)
                except grpc.RpcError as error:
                    seen = failure(error)
                    with lock:
                        errors[f"{seen.code.name} {seen.reason}: {seen.message}"] += 1
                    return  # a failed rotation ends the chain: its token may or may not have rotated
                token = reply.refresh_token
                with lock:
                    done[n] += 1

        with ThreadPoolExecutor(CHAINS) as pool:
            list(pool.map(chain, range(CHAINS)))
    finally:
        for channel in channels:
            channel.close()

    assert not errors, f"failed refreshes under {CHAINS} concurrent chains: {dict(errors)}"
    assert sum(done.values()) == CHAINS * ROTATIONS
