"""A bounded soak: mixed load against a real `auth-server serve` process for a fixed time.

Every user walks the whole life cycle (sign up, log in, read the code from a real SMTP sink, verify,
GetMe, ListSessions, refresh, log out) in a loop from several client threads. At the end it checks that
no call failed with an unexpected status or reason, that the server's resident memory stayed flat
(the last samples no more than 20 % above those after warm-up), and that the store's rows of records
that end (sessions, challenges) stayed flat once the purge had settled (AUTH_PURGE_INTERVAL and
AUTH_ACCESS_TTL short here; the last count no more than 50 % + 20 rows above the first settled one).
Exit status 0 only if all hold. Rows of users, throttle counters (24 h per account), audit events
(kept at least an hour) and the revocation log (kept a day) grow with the accounts the soak creates,
by design: their counts are printed per life cycle.

    .venv/bin/python scripts/soak.py --seconds 60     # the short mode scripts/test runs
    .venv/bin/python scripts/soak.py --seconds 900    # a longer soak
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sqlite3
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
# The purge, short enough to settle within the soak: a revoked session or a used code goes 2 x
# AUTH_ACCESS_TTL after it ended (domain/purge.py), checked every PURGE_INTERVAL seconds.
ACCESS_TTL, PURGE_INTERVAL = 10, 2
PURGE_SETTLED = 2 * ACCESS_TTL + 3 * PURGE_INTERVAL + 5  # seconds into the soak
ROW_TABLES = ("users", "sessions", "login_challenges", "counters", "audit_events", "revocations")
PURGED_TABLES = ("sessions", "login_challenges")  # what must stay flat under steady load
ROW_GROWTH_LIMIT, ROW_SLACK = 1.5, 20


def row_counts(db: Path) -> dict[str, int]:
    """Rows per table of the server's SQLite file, read beside it (WAL: the server is not held up)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ROW_TABLES}  # noqa: S608


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
                request = auth_pb2.SignupRequest(username=name, email=f"{name}@example.com", password=PASSWORD)
                started = auth.Signup(request)
                signup_code = sink.last_code(f"{name}@example.com")
                auth.VerifySignup(auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=signup_code))
                login = auth.Login(auth_pb2.LoginRequest(username_or_email=name, password=PASSWORD))
                code = sink.last_code(f"{name}@example.com", count=2)
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
            "AUTH_PURGE_INTERVAL": str(PURGE_INTERVAL),
            "AUTH_ACCESS_TTL": str(ACCESS_TTL),
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
    db = Path(workdir) / "auth.db"
    started = time.monotonic()
    settled_rows: dict[str, int] | None = None  # the first row counts once the purge has settled
    settled_at = 0.0
    deadline = time.monotonic() + args.seconds
    while not stop.wait(min(5.0, max(0.0, deadline - time.monotonic()))):
        samples.append(rss_kib(server.proc.pid))
        if settled_rows is None and time.monotonic() - started >= PURGE_SETTLED:
            settled_rows, settled_at = row_counts(db), time.monotonic() - started
        if time.monotonic() >= deadline:
            stop.set()
    for thread in threads:
        thread.join()
    final_rows = row_counts(db)
    exit_code = server.stop()
    sink.stop()

    quarter = max(1, len(samples) // 4)
    baseline, final = max(samples[: quarter + 1]), max(samples[-quarter:])
    growth = final / baseline if baseline else 1.0
    unexpected = {k: v for k, v in tally.items() if k.startswith("unexpected")}
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, {tally['cycles']} user life cycles")
    print(f"soak: server RSS after warm-up {baseline} KiB, at the end {final} KiB (x{growth:.2f}); samples {samples}")
    print(f"soak: outcomes {dict(tally)}")
    cycles = max(1, tally["cycles"])
    per_cycle = ", ".join(f"{t} {final_rows[t] / cycles:.1f}" for t in ROW_TABLES if t not in PURGED_TABLES)
    print(f"soak: store rows at {settled_at:.0f} s {settled_rows}, at the end {final_rows}")
    print(f"soak: rows per life cycle of the tables that grow with accounts: {per_cycle}")
    problems = []
    if settled_rows is None:
        print(f"soak: row count not checked: the purge settles after {PURGE_SETTLED} s, longer than the soak")
    else:
        for table in PURGED_TABLES:
            if final_rows[table] > settled_rows[table] * ROW_GROWTH_LIMIT + ROW_SLACK:
                problems.append(f"{table} rows grew {settled_rows[table]} -> {final_rows[table]} despite the purge")
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
