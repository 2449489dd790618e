"""A bounded soak: mixed load against a real `auth-server serve` process for a fixed time.

Every user walks the whole life cycle (sign up, log in, read the code from a real SMTP sink, verify,
GetMe, ListSessions, refresh, log out) in a loop from several client threads. At the end it checks that
no call failed with an unexpected status or reason and that the server's resident memory stayed flat
(the last samples no more than 20 % above those after warm-up). Exit status 0 only if both hold.

    .venv/bin/python scripts/soak.py --seconds 60     # the short mode scripts/test runs
    .venv/bin/python scripts/soak.py --seconds 900    # a longer soak
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support.mail import SmtpSink
from tests.support.process import ServerProcess

PASSWORD = "soak-password-long-enough"
EXPECTED_FAILURES = {"SESSION_REVOKED"}  # the final GetMe after logout, checked on purpose
MEMORY_GROWTH_LIMIT = 1.20


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def user_loop(worker: int, addr: str, sink: SmtpSink, stop: threading.Event, tally: collections.Counter) -> None:
    with grpc.insecure_channel(addr) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        rounds = 0
        while not stop.is_set():
            name = f"soak{worker}x{rounds}"
            rounds += 1
            try:
                auth.Signup(auth_pb2.SignupRequest(username=name, email=f"{name}@example.com", password=PASSWORD))
                login = auth.Login(auth_pb2.LoginRequest(username_or_email=name, password=PASSWORD))
                code = sink.last_code(f"{name}@example.com")
                tokens = auth.VerifyOtp(auth_pb2.VerifyOtpRequest(login_id=login.login_id, otp=code))
                bearer = [("authorization", f"Bearer {tokens.access_token}")]
                for _ in range(20):
                    auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer)
                auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer)
                fresh = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
                bearer = [("authorization", f"Bearer {fresh.access_token}")]
                auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=bearer)
                tally["cycles"] += 1
                auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer)
                tally["unexpected: GetMe after logout succeeded"] += 1
            except grpc.RpcError as error:
                from tests.support.rpc import failure

                reason = failure(error).reason or error.code().name  # type: ignore[attr-defined]
                tally[reason if reason in EXPECTED_FAILURES else f"unexpected: {reason}"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    sink = SmtpSink().start()
    workdir = tempfile.mkdtemp(prefix="auth-soak-")
    server = ServerProcess(
        {
            "AUTH_STORE": f"sqlite:///{workdir}/auth.db",
            "AUTH_JWT_SECRET": "soak-secret-" + "x" * 32,
            "AUTH_SMTP_URL": sink.url,
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_OTP_RESEND_INTERVAL": "0",
            # Every client of the soak comes from 127.0.0.1: one source, like users behind one proxy.
            "AUTH_SOURCE_LOGIN_RATE": "0",
            "AUTH_LOG_LEVEL": "WARNING",
        }
    ).start()
    assert server.proc is not None
    stop, tally = threading.Event(), collections.Counter()
    threads = [
        threading.Thread(target=user_loop, args=(i, server.addr, sink, stop, tally)) for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    samples: list[int] = []
    deadline = time.monotonic() + args.seconds
    while not stop.wait(min(5.0, max(0.0, deadline - time.monotonic()))):
        samples.append(rss_kib(server.proc.pid))
        if time.monotonic() >= deadline:
            stop.set()
    for thread in threads:
        thread.join()
    exit_code = server.stop()
    sink.stop()

    quarter = max(1, len(samples) // 4)
    baseline, final = max(samples[: quarter + 1]), max(samples[-quarter:])
    growth = final / baseline if baseline else 1.0
    unexpected = {k: v for k, v in tally.items() if k.startswith("unexpected")}
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, {tally['cycles']} user life cycles")
    print(f"soak: server RSS after warm-up {baseline} KiB, at the end {final} KiB (x{growth:.2f}); samples {samples}")
    print(f"soak: outcomes {dict(tally)}")
    problems = []
    if unexpected:
        problems.append(f"unexpected failures {unexpected}")
    if growth > MEMORY_GROWTH_LIMIT:
        problems.append(f"memory grew x{growth:.2f} (limit x{MEMORY_GROWTH_LIMIT})")
    if exit_code != 0:
        problems.append(f"server exited {exit_code} on SIGTERM")
    if tally["cycles"] == 0:
        problems.append("no life cycle completed")
    print("soak: " + ("FAILED: " + "; ".join(problems) if problems else "OK"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
