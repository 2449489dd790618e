"""Benchmark the auth service against its own stack's ceiling, scenario by scenario (issue 6).

Run it as `scripts/bench [--quick] [--store sqlite|mongodb]`. It starts real `auth-server serve`
processes (a SQLite file in a temporary directory by default; with `--store mongodb` the server at
AUTH_TEST_MONGODB_URI, else a FerretDB 1.24 it starts from .cache/bin), prepares users and
sessions, drives load with ghz from separate processes, prints a table and writes
`bench/results.json`.

Pinning (taskset): the server runs on CPU 0 and every ghz on CPU 1 (`--cpus=1`), so the load
generator never takes the server's core. The scenarios whose point is bcrypt (login, isolation,
enumeration) give the server every core, as bcrypt.checkpw's reference rate gets every core too;
ghz then still runs on CPU 1 only. FerretDB, when started here, shares CPU 1 with ghz.

Fixtures: users are written through the Store API (`create_user`, one bcrypt hash at the configured
cost shared by all users, so setup does not spend minutes hashing); sessions are opened by the
domain's own `Sessions.open` (what VerifyOtp runs once the code is right), whose store writes are
collected and then written through the Store API in batches (SQLite: one transaction per batch;
MongoDB: insert_many of the adapter's own documents). No OTP e-mail round trip is needed to get
tokens; the tokens are the server's own (same secret).

ghz gets many distinct tokens without per-request files: the tokens are handed to ghz in its
environment (T0..Tn-1) and its metadata template picks `env (printf "T%d" (mod .RequestNumber n))`;
request bodies (Login, Refresh) come from a JSON array, which ghz uses round-robin by request number.

The HTTP bridge is driven by vegeta (`.cache/bin/vegeta`, pinned like ghz: CPU 1, GOMAXPROCS=1) with
the same tokens: a targets file of `GET /api/v1/auth/me` requests, one per token, used in turn, sent by
50 workers back to back (`-rate=0 -max-workers=50`) over kept-alive connections, like ghz's `-c 50`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtools import (
    HEALTH_PROTO,
    REPO,
    cpu_seconds,
    find_tool,
    index_ferret_ids,
    is_cut,
    latency_ms,
    log,
    machine_busy_seconds,
    start_ferretdb,
    wait_quiet,
)

SERVER_CPU = "0"
LOAD_CPU = "1"
TENANT = "default"
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "wrong horse battery staple"
DEVICE_UA = "ghz-bench"
TARGETS = {
    "auth_ratio": (">=", 0.6),
    "reject_ratio": (">=", 1.0),
    "login_ratio": (">=", 0.85),
    "refresh_login_ratio": (">=", 8.0),
    "p99_inflation": ("<=", 3.0),
    "storm_ratio": (">=", 0.6),
    "enum_timing_ratio": ("in", (0.9, 1.1)),
    "data_ratio": (">=", 0.9),
    "workers_ratio": ("info", None),
    "bridge_ratio": (">=", 0.8),  # issue 15: the bridge's GET /me against gRPC GetMe, same server
    "bridge_p50_excess_ms": ("<=", 2.0),  # the bridge's p50 minus GetMe's, both at 50 in flight
    "replicas_ratio": ("info", None),
    "revocation_p99_ms": ("<=", 100.0),  # issue 12: a revocation reaches a guarded service (scenario 11)
    "login_fairness": (">=", 0.8),  # issue 11: other sources' logins under one source's flood (scenario 12)
    "login_fairness_rate": ("info", None),
    "session_cap_ratio": ("info", None),  # issue 14: opening a session under the cap ÷ without (scenario 13)
    "session_cache_ratio": ("info", None),  # issue 15: GetMe with the session cache ÷ without (scenario 14)
}


@dataclass(frozen=True)
class Profile:
    name: str
    warmup: float  # seconds of ghz before each measured run (not counted)
    measure: float  # measured seconds of a throughput run
    login_measure: float  # measured seconds of the bcrypt-bound runs
    rounds: int  # interleaved rounds of the throughput scenarios; the median is reported
    auth_sessions: int  # distinct sessions whose tokens GetMe/ListSessions use
    refresh_calls: int  # most refresh calls per measured round (each with its own fresh token)
    refresh_warm: int  # refresh calls of each warm-up
    small_sessions: int  # scenario 8: sessions in the small store
    big_sessions: int  # scenario 8: sessions in the big store
    quiet_wait: float  # most seconds to wait for a quiet machine before a run


QUICK = Profile("quick", 1, 3, 5, 1, 1000, 5000, 2000, 1000, 20_000, 3)
FULL = Profile("full", 2, 8, 12, 2, 1000, 12000, 3000, 1000, 100_000, 8)


@dataclass
class Result:
    """One ghz run, reduced to what the table needs."""

    rps: float  # calls with the expected outcome per second
    p50: float
    p95: float
    p99: float
    mean: float
    count: int
    errors: int  # calls with another outcome (cut-off calls at the end of a timed run excluded)
    error_kinds: dict[str, int] = field(default_factory=dict)
    server_cpu: float | None = None  # cores used by the server process during the run
    foreign_cpu: float | None = None  # cores used by processes that are not part of the benchmark


@dataclass
class Scenario:
    key: str
    label: str
    runs: list[Result] = field(default_factory=list)
    note: str = ""

    def median(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else float("nan")

    def success_share(self) -> float:
        """Of all calls in every run, the share with the expected outcome."""
        calls = sum(r.count for r in self.runs)
        return (calls - sum(r.errors for r in self.runs)) / calls if calls else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rps": round(self.median("rps"), 1),
            "p50_ms": round(self.median("p50"), 3),
            "p95_ms": round(self.median("p95"), 3),
            "p99_ms": round(self.median("p99"), 3),
            "mean_ms": round(self.median("mean"), 3),
            "errors": sum(r.errors for r in self.runs),
            "calls": sum(r.count for r in self.runs),
            "rounds_rps": [round(r.rps, 1) for r in self.runs],
            "server_cpu": None if not self.runs else round(self.median("server_cpu"), 2),
            "foreign_cpu_max": max((r.foreign_cpu or 0.0 for r in self.runs), default=0.0),
            "error_kinds": _merge([r.error_kinds for r in self.runs]),
            "note": self.note,
        }


def _merge(kinds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        for name, n in k.items():
            out[name] = out.get(name, 0) + n
    return out


# ---------------------------------------------------------------------------------------------
# Fixtures: users and sessions written with the service's own code
# ---------------------------------------------------------------------------------------------


class _Collect:
    """Stands in for the store while Sessions.open builds sessions: keeps what it would write."""

    def __init__(self) -> None:
        self.sessions: list[Any] = []

    def create_session(self, tenant: str, session: Any) -> None:
        self.sessions.append(session)


@dataclass
class Fixture:
    users: list[Any]
    tokens: list[str]  # access tokens of the "auth" sessions
    refresh_tokens: list[str]
    sessions: list[Any]  # every session record (for copying into the data-scenario stores)


class Fixtures:
    def __init__(self, env: dict[str, str], rounds: int) -> None:
        from auth_server.domain.tokens import RefreshTokens, access_tokens_for
        from auth_server.infra.config import load_settings
        from auth_server.infra.keys import KeyRing

        self.settings = load_settings(env)
        self.keys = KeyRing.from_secret(self.settings.jwt_secret)
        self.access = access_tokens_for("HS256", self.keys.jwt, None, None, self.settings.access_ttl)
        self.refresh = RefreshTokens(self.keys.refresh)
        self.rounds = rounds
        import bcrypt

        self.password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(self.settings.bcrypt_rounds))

    def users(self, prefix: str, count: int) -> list[Any]:
        from auth_server.infra.clock import utcnow
        from auth_server.infra.ids import new_id
        from auth_server.store.base import User

        return [
            User(
                id=new_id(),
                username=f"{prefix}{i:05d}",
                email=f"{prefix}{i:05d}@bench.example",
                name=f"Bench {prefix} {i}",
                phone="",
                role="user",
                password_hash=self.password_hash,
                created_at=utcnow(),
            )
            for i in range(count)
        ]

    def open_sessions(self, users: list[Any], count: int) -> tuple[list[Any], list[Any]]:
        """`count` sessions spread over `users`, built by Sessions.open; (records, issued tokens)."""
        from auth_server.domain.audit import Audit
        from auth_server.domain.sessions import Device, Sessions

        collect = _Collect()
        # No session cap while building fixtures: the cap's lease needs a real store, and these are
        # written straight to one (write_records), as many per user as a scenario wants.
        uncapped = dataclasses.replace(self.settings, max_sessions_per_user=0)
        sessions = Sessions(collect, uncapped, self.keys, self.access, self.refresh, Audit(collect))  # type: ignore[arg-type]
        device = Device(name="Bench device", ip_address="127.0.0.1", user_agent=DEVICE_UA)
        issued = [sessions.open(TENANT, users[i % len(users)], device) for i in range(count)]
        return collect.sessions, issued


def write_records(store_uri: str, users: list[Any], sessions: list[Any]) -> None:
    """Write users and sessions through the Store API (batched: see the module docstring)."""
    from auth_server.store import open_store

    store = open_store(store_uri)
    store.open()
    try:
        store.prepare_tenant(TENANT)
        if store_uri.startswith("sqlite"):
            conn = store._connection()  # type: ignore[attr-defined]  # this thread's connection: batch commits
            for start in range(0, max(len(users), len(sessions)), 5000):
                conn.execute("BEGIN")
                for user in users[start : start + 5000]:
                    store.create_user(TENANT, user)
                for session in sessions[start : start + 5000]:
                    store.create_session(TENANT, session)
                conn.execute("COMMIT")
        else:
            from auth_server.store._fields import SESSION, USER, check_record
            from auth_server.store.mongo import _document

            handles = store._tenant(TENANT)  # type: ignore[attr-defined]
            for records, spec, collection in ((users, USER, handles.users), (sessions, SESSION, handles.sessions)):
                for start in range(0, len(records), 2000):
                    chunk = records[start : start + 2000]
                    for record in chunk:
                        check_record(spec, record)
                    collection.insert_many([_document(spec, r) for r in chunk], ordered=False)
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# Processes: servers and ghz
# ---------------------------------------------------------------------------------------------


class Server:
    """`auth-server serve [--workers N]` as a real process; stdout parsed for the port, stderr to a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, cpus: str | None, workers: int = 1) -> None:
        self.name = name
        self.log_path = log_dir / f"server-{name}.log"
        cmd = [str(Path(sys.executable).parent / "auth-server"), "serve"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        full_env = {**os.environ, **env, "AUTH_GRPC_ADDR": "127.0.0.1:0", "AUTH_HTTP_ADDR": "127.0.0.1:0"}
        with self.log_path.open("w") as err:  # a file, never a pipe: a chatty server must not block
            self.proc = subprocess.Popen(cmd, env=full_env, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=err)
        self.http_url = ""  # the bridge's base URL, from the same banner as the gRPC port
        self.port = self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> int:
        assert self.proc.stdout is not None
        found: list[int] = []
        lines: list[str] = []

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                if "gRPC listening on" in line and not found:
                    found.append(int(line.split("listening on ", 1)[1].split()[0].rpartition(":")[2]))
                if "HTTP bridge listening on " in line:
                    self.http_url = line.split("HTTP bridge listening on ", 1)[1].split()[0]

        threading.Thread(target=pump, daemon=True).start()
        end = time.monotonic() + timeout
        while not (found and self.http_url):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"server {self.name} did not start: {''.join(lines)} {self.log_tail()}")
            time.sleep(0.05)
        return found[0]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        kids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.proc.pid, *kids]

    def pin(self, cpus: str) -> None:
        """Move every thread of the server (and of its workers) to `cpus`."""
        for pid in self.pids():
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Ghz:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.health_proto = workdir / "health.proto"
        self.health_proto.write_text(HEALTH_PROTO)
        self._files = 0

    def data_file(self, items: list[dict[str, str]]) -> Path:
        self._files += 1
        path = self.workdir / f"data-{self._files}.json"
        path.write_text(json.dumps(items))
        return path

    def command(
        self,
        method: str,
        target: str,
        *,
        concurrency: int = 50,
        duration: float | None = None,
        total: int | None = None,
        rate: float | None = None,
        data_file: Path | None = None,
        token_count: int = 0,
        connections: int = 1,
        count_errors: bool = False,
        max_duration: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[str]:
        if method.startswith("grpc.health"):
            proto = [f"--proto={self.health_proto}"]
        else:
            proto = ["--import-paths=protos,third_party/googleapis", "--proto=auth/v1/auth.proto"]
        cmd = [
            "taskset",
            "-c",
            LOAD_CPU,
            self.binary,
            "--insecure",
            "--cpus=1",
            *proto,
            f"--call={method}",
            f"--concurrency={concurrency}",
            f"--connections={connections}",
            "--format=json",
            "--timeout=10s",  # a call slower than this is an error (DeadlineExceeded), and a run ends soon
        ]
        if duration is not None:
            # wait: calls in flight at the end complete and count (ghz's own default would cut them off)
            cmd += [f"--duration={duration:g}s", "--duration-stop=wait"]
        if total is not None:
            cmd += [f"--total={total}"]
        if max_duration is not None:
            cmd += [f"--max-duration={max_duration:g}s"]
        if rate:
            cmd += [f"--rps={int(rate)}"]
        if count_errors:  # latency of the calls that fail as expected, too
            cmd += ["--count-errors"]
        cmd += [f"--data-file={data_file}"] if data_file else ["--data={}"]
        headers = dict(metadata or {})
        if token_count:
            headers["authorization"] = "Bearer {{ env (printf `T%d` (mod .RequestNumber " + str(token_count) + ")) }}"
        if headers:
            cmd += ["--metadata=" + json.dumps(headers)]
        return [*cmd, target]

    def start(self, cmd: list[str], tokens: list[str] | None = None) -> subprocess.Popen[str]:
        env = dict(os.environ)
        for i, token in enumerate(tokens or []):
            env[f"T{i}"] = token
        return subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float, expected: str = "OK") -> Result:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"ghz failed ({proc.returncode}): {err[-800:]}")
        report: dict[str, Any] = json.loads(out)
        codes: dict[str, int] = report.get("statusCodeDistribution") or {}
        kinds: dict[str, int] = dict(report.get("errorDistribution") or {})
        cut = sum(n for msg, n in kinds.items() if is_cut(msg))
        good = codes.get(expected, 0)
        seconds = report["total"] / 1e9
        lat = latency_ms(report)
        count = int(report["count"])
        return Result(
            rps=good / seconds if seconds else 0.0,
            p50=lat.get(50, float("nan")),
            p95=lat.get(95, float("nan")),
            p99=lat.get(99, float("nan")),
            mean=report.get("average", 0) / 1e6,
            count=count,
            errors=count - good - cut,
            error_kinds={k: v for k, v in kinds.items() if not is_cut(k) and expected.lower() not in k.lower()},
        )


class Vegeta:
    """vegeta for the HTTP bridge: `concurrency` workers back to back over kept-alive connections."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self._files = 0

    def targets(self, url: str, tokens: list[str]) -> Path:
        """A targets file: GET `url` once per token (vegeta takes them in turn, round-robin)."""
        self._files += 1
        path = self.workdir / f"targets-{self._files}.txt"
        path.write_text("".join(f"GET {url}\nAuthorization: Bearer {t}\n\n" for t in tokens))
        return path

    def start(self, targets: Path, duration: float, concurrency: int = 50) -> tuple[subprocess.Popen[str], Path]:
        self._files += 1
        output = self.workdir / f"vegeta-{self._files}.bin"
        cmd = [
            "taskset",
            "-c",
            LOAD_CPU,
            self.binary,
            "attack",
            f"-targets={targets}",
            "-format=http",
            "-rate=0",  # no pacing: each worker sends its next request when the last one is answered
            f"-workers={concurrency}",
            f"-max-workers={concurrency}",
            f"-duration={duration:g}s",
            "-timeout=10s",
            "-keepalive=true",
            f"-output={output}",
        ]
        env = {**os.environ, "GOMAXPROCS": "1"}  # one core, as ghz --cpus=1
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return proc, output

    def finish(self, proc: subprocess.Popen[str], output: Path, timeout: float) -> Result:
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"vegeta failed ({proc.returncode}): {err[-800:]}")
        report = subprocess.run(
            [self.binary, "report", "-type=json", str(output)], capture_output=True, text=True, check=True
        )
        data: dict[str, Any] = json.loads(report.stdout)
        codes: dict[str, int] = data.get("status_codes") or {}
        lat = data["latencies"]
        seconds = (data["duration"] + data["wait"]) / 1e9
        count = int(data["requests"])
        good = codes.get("200", 0)
        kinds = {f"HTTP {code}": n for code, n in codes.items() if code != "200"}
        return Result(
            rps=good / seconds if seconds else 0.0,
            p50=lat["50th"] / 1e6,
            p95=lat["95th"] / 1e6,
            p99=lat["99th"] / 1e6,
            mean=lat["mean"] / 1e6,
            count=count,
            errors=count - good,
            error_kinds=kinds,  # status 0: no HTTP answer (connection refused or reset, timeout)
        )


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, profile: Profile, tmp: Path) -> None:
        self.args = args
        self.p = profile
        self.tmp = tmp
        self.ghz = Ghz(args.ghz, tmp)
        self.vegeta = Vegeta(args.vegeta, tmp) if args.vegeta else None
        self.servers: list[Server] = []
        self.extra_pids: list[int] = []  # FerretDB: ours, not foreign
        self.scenarios: dict[str, Scenario] = {}
        self.values: dict[str, Any] = {}
        self.cores = os.cpu_count() or 1
        self.all_cpus = f"0-{self.cores - 1}"
        self.started = time.monotonic()

    # ---- helpers ------------------------------------------------------------------------------

    def scenario(self, key: str, label: str) -> Scenario:
        return self.scenarios.setdefault(key, Scenario(key, label))

    def server(self, env: dict[str, str], name: str, cpus: str | None = SERVER_CPU, workers: int = 1) -> Server:
        server = Server(env, self.tmp, name, cpus, workers)
        self.servers.append(server)
        return server

    def quiet(self) -> None:
        waited = wait_quiet(self.p.quiet_wait)
        if waited is not None:
            log(f"    (machine still busy after {waited:.0f}s; measuring anyway)")

    def measure(
        self,
        server: Server | None,
        method: str,
        *,
        tokens: list[str] | None = None,
        data: list[dict[str, str]] | None = None,
        expected: str = "OK",
        warm: bool = True,
        quiet: bool = True,
        **kw: Any,
    ) -> Result:
        """One ghz run (after a warm-up run with the same arguments unless `warm` is False); `quiet`: wait
        for a quiet machine first (not while the run is meant to share it with another load)."""
        target = kw.pop("target", None) or server.target  # type: ignore[union-attr]
        data_file = self.ghz.data_file(data) if data else None
        common = {"data_file": data_file, "token_count": len(tokens or [])} | kw
        if quiet:
            self.quiet()
        if warm and self.p.warmup:
            warm_kw = common | {"duration": self.p.warmup, "total": None}
            proc = self.ghz.start(self.ghz.command(method, target, **warm_kw), tokens)
            self.ghz.finish(proc, self.p.warmup + 60, expected)
        return self.timed(server, method, target, tokens, expected, common)

    def timed(
        self,
        server: Server | None,
        method: str,
        target: str,
        tokens: list[str] | None,
        expected: str,
        kw: dict[str, Any],
    ) -> Result:
        if kw.get("duration") is None and kw.get("total") is None:
            kw = kw | {"duration": self.p.measure}

        def run() -> Result:
            proc = self.ghz.start(self.ghz.command(method, target, **kw), tokens)
            return self.ghz.finish(proc, (kw.get("duration") or 0) + 300, expected)

        return self.accounted(server, run)

    def accounted(self, servers: Server | list[Server] | None, run: Callable[[], Result]) -> Result:
        """`run` (one load generator run, or several side by side) with the CPU the servers used meanwhile."""
        servers = [servers] if isinstance(servers, Server) else servers or []
        pids = [pid for server in servers for pid in server.pids()]
        cpu0, busy0, ours0, t0 = cpu_seconds(*pids), machine_busy_seconds(), cpu_seconds(*self.extra_pids), time.time()
        children0 = _children_cpu()
        result = run()
        span = time.time() - t0
        load_cpu = _children_cpu() - children0  # the load generators are the children reaped in this window
        used = cpu_seconds(*pids) - cpu0
        ours = used + load_cpu + cpu_seconds(*self.extra_pids) - ours0
        result.server_cpu = used / span if pids else None
        result.foreign_cpu = max(0.0, (machine_busy_seconds() - busy0 - ours) / span)
        return result

    def measure_http(self, server: Server, path: str, tokens: list[str]) -> Result:
        """GET `path` on the server's bridge with each token in turn (vegeta), after a warm-up run."""
        vegeta = self.vegeta
        assert vegeta is not None
        targets = vegeta.targets(server.http_url + path, tokens)
        self.quiet()
        if self.p.warmup:
            proc, output = vegeta.start(targets, self.p.warmup)
            vegeta.finish(proc, output, self.p.warmup + 60)

        def run() -> Result:
            proc, output = vegeta.start(targets, self.p.measure)
            return vegeta.finish(proc, output, self.p.measure + 60)

        return self.accounted(server, run)

    def measure_spread(self, servers: list[Server], method: str, tokens: list[str], concurrency: int = 50) -> Result:
        """One ghz per server side by side, the concurrency split between them; their results combined.

        Rates and counts add up; p50/p95/p99 are the worse of the servers' (ghz reports no histogram to
        merge), the mean is weighted by calls.
        """
        each = {"token_count": len(tokens), "concurrency": concurrency // len(servers)}
        self.quiet()

        def side_by_side(duration: float) -> list[Result]:
            procs = [
                self.ghz.start(self.ghz.command(method, s.target, duration=duration, **each), tokens) for s in servers
            ]
            return [self.ghz.finish(proc, duration + 300) for proc in procs]

        if self.p.warmup:
            side_by_side(self.p.warmup)

        def run() -> Result:
            parts = side_by_side(self.p.measure)
            count = sum(r.count for r in parts)
            return Result(
                rps=sum(r.rps for r in parts),
                p50=max(r.p50 for r in parts),
                p95=max(r.p95 for r in parts),
                p99=max(r.p99 for r in parts),
                mean=sum(r.mean * r.count for r in parts) / count if count else float("nan"),
                count=count,
                errors=sum(r.errors for r in parts),
                error_kinds=_merge([r.error_kinds for r in parts]),
            )

        return self.accounted(servers, run)

    def record(self, key: str, label: str, result: Result, note: str = "") -> Result:
        scenario = self.scenario(key, label)
        scenario.runs.append(result)
        if note:
            scenario.note = note
        cpu = f" server {result.server_cpu:.0%}" if result.server_cpu is not None else ""
        log(
            f"  {key:<22} {result.rps:9.1f}/s  p50 {result.p50:7.2f}  p95 {result.p95:7.2f}  p99 {result.p99:7.2f} ms"
            f"  mean {result.mean:7.2f}  err {result.errors}{cpu}  foreign {result.foreign_cpu or 0:.0%}"
        )
        if result.error_kinds:
            log(f"    errors: {dict(list(result.error_kinds.items())[:3])}")
        return result

    # ---- environment ----------------------------------------------------------------------------

    def base_env(self, store_uri: str) -> dict[str, str]:
        return {
            "AUTH_STORE": store_uri,
            "AUTH_JWT_SECRET": self.secret,
            "AUTH_BCRYPT_ROUNDS": str(self.rounds),
            "AUTH_OTP_RESEND_INTERVAL": "0",  # every Login sends a code
            "AUTH_LOCKOUT_THRESHOLD": "1000",  # wrong passwords in the enumeration scenario never lock
            # The login throttles stay on (their counters are part of login_ratio's cost) but so high
            # that one ghz, a single source, is never refused by them.
            "AUTH_SOURCE_LOGIN_RATE": "1000000",
            "AUTH_ACCOUNT_FAILURE_LIMIT": "1000000",
            "AUTH_ACCESS_TTL": "3600",  # tokens made at setup outlive the run
            "AUTH_TENANTS": TENANT,
            "AUTH_DEFAULT_TENANT": TENANT,
            **dict(kv.split("=", 1) for kv in self.args.env),
        }

    def store_uri(self, name: str) -> str:
        if self.args.store == "sqlite":
            return f"sqlite:///{self.tmp}/{name}.db"
        base, _, query = self.mongo_uri.partition("?")
        return f"{base.rstrip('/')}/bench{name}{secrets.token_hex(3)}?{query}"

    # ---- run --------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.secret = secrets.token_urlsafe(48)
        self.rounds = self.args.bcrypt_rounds
        if self.args.store == "mongodb":
            self.mongo_uri = os.environ.get("AUTH_TEST_MONGODB_URI") or self.start_ferret()
        main_uri = self.store_uri("main")
        env = self.base_env(main_uri)
        log(f"setup: users and sessions ({self.args.store}) ...")
        t0 = time.monotonic()
        fx = Fixtures(env, self.p.rounds)
        read_users = fx.users("reader", 200)
        login_users = fx.users("login", 200)
        storm_users = fx.users("storm", 200)
        enum_users = fx.users("enum", 200)
        refresh_users = fx.users("refresher", 500)
        auth_sessions, auth_issued = fx.open_sessions(read_users, self.p.auth_sessions)
        refresh_per_round = self.p.refresh_calls + self.p.refresh_warm  # the warm-up gets its own tokens
        refresh_sessions, refresh_issued = fx.open_sessions(refresh_users, refresh_per_round * self.p.rounds)
        all_users = read_users + login_users + storm_users + enum_users + refresh_users
        write_records(main_uri, all_users, auth_sessions + refresh_sessions)
        tokens = [t.access_token for t in auth_issued]
        log(f"  main store: {len(all_users)} users, {len(auth_sessions) + len(refresh_sessions)} sessions")

        # Scenario 8's two stores: the same users and sessions, the big one with more sessions.
        filler_users = fx.users("filler", 1000)
        if 8 not in self.args.only:
            self.p = dataclasses.replace(self.p, small_sessions=0, big_sessions=0)
        small_uri, big_uri = self.store_uri("small"), self.store_uri("big")
        small_sessions, small_issued = fx.open_sessions(read_users, self.p.small_sessions)
        filler, _ = fx.open_sessions(filler_users, self.p.big_sessions - self.p.small_sessions)
        write_records(small_uri, read_users, small_sessions)
        write_records(big_uri, read_users + filler_users, small_sessions + filler)
        small_tokens = [t.access_token for t in small_issued]
        log(f"  data stores: {self.p.small_sessions} / {self.p.big_sessions} sessions; {time.monotonic() - t0:.0f}s")

        if self.args.ferret_id_index:
            if getattr(self, "ferret", None) is None:
                raise SystemExit("--ferret-id-index needs the FerretDB this script starts (not AUTH_TEST_MONGODB_URI)")
            indexed = sum(index_ferret_ids(db) for db in sorted((self.tmp / "ferret").glob("*.sqlite")))
            self.values["ferret_id_index"] = f"added to {indexed} collections (see loadtools.index_ferret_ids)"
            log(f"  FerretDB: _id index on the queried expression added to {indexed} collections")
        want = self.args.only
        if self.vegeta is None and want & {2}:
            log("  no vegeta: the bridge run of scenario 2 is skipped (scripts/provision vegeta, or $VEGETA)")
        main = self.server(env, "main")
        if want & {1, 2, 3}:
            self.scenario_throughput(main, tokens)
        if want & {4, 5}:
            self.scenario_login(main, login_users)
        if 5 in want:
            self.scenario_refresh(main, [t.refresh_token for t in refresh_issued], refresh_per_round)
        if 6 in want:
            self.scenario_isolation(main, tokens, storm_users)
        if 7 in want:
            self.scenario_enumeration(main, enum_users)
        main.stop()
        if 14 in want:  # before scenario 11, which revokes sessions of these tokens
            self.scenario_session_cache(env, tokens)
        if 8 in want:
            self.scenario_data(small_uri, big_uri, small_tokens)
        if 9 in want:
            self.scenario_workers(env)
        if 10 in want:
            self.scenario_replicas(env, tokens)
        if 11 in want:
            self.scenario_revocation_latency(env, auth_issued[:100])
        if 12 in want:
            self.scenario_login_fairness(env, login_users)
        if 13 in want:
            self.scenario_session_cap(env, login_users)
        return self.report()

    def start_ferret(self) -> str:
        binary = self.args.ferretdb or find_tool("ferretdb", "FERRETDB")
        if not binary:
            raise SystemExit("no MongoDB: set AUTH_TEST_MONGODB_URI or build FerretDB (scripts/provision ferretdb)")
        proc, uri = start_ferretdb(binary, self.tmp / "ferret", LOAD_CPU, self.tmp / "ferret.log")
        self.ferret = proc
        self.extra_pids.append(proc.pid)
        return uri

    # ---- scenarios 1-3: ceiling, authenticated reads, rejection -----------------------------------

    def scenario_throughput(self, server: Server, tokens: list[str]) -> None:
        log("scenarios 1-3: ceiling, GetMe/ListSessions, rejection")
        bad = [_break_signature(t) for t in tokens]
        for _ in range(self.p.rounds):
            self.record("ceiling", "1 ceiling: Health/Check", self.measure(server, "grpc.health.v1.Health/Check"))
            self.record(
                "getme",
                f"2 GetMe, {len(tokens)} sessions",
                self.measure(server, "auth.v1.AuthService/GetMe", tokens=tokens),
            )
            if self.vegeta is not None:  # the same call through the bridge, right after: bridge_ratio
                self.record(
                    "bridge_me",
                    f"2 bridge GET /api/v1/auth/me, {len(tokens)} sessions",
                    self.measure_http(server, "/api/v1/auth/me", tokens),
                )
            self.record(
                "reject",
                "3 GetMe, bad signature",
                self.measure(
                    server, "auth.v1.AuthService/GetMe", tokens=bad, expected="Unauthenticated", count_errors=True
                ),
            )
        self.record(
            "list_sessions",
            "2 ListSessions (5 per user)",
            self.measure(server, "auth.v1.AuthService/ListSessions", tokens=tokens),
        )

    # ---- scenario 4: login against bcrypt's own rate ----------------------------------------------

    def bcrypt_reference(self, seconds: float) -> float:
        """checkpw at the configured cost on every core (one thread per core; bcrypt frees the GIL)."""
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(self.rounds))
        done = [0] * self.cores
        self.quiet()
        stop = time.monotonic() + seconds

        def spin(i: int) -> None:
            while time.monotonic() < stop:
                bcrypt.checkpw(PASSWORD.encode(), hashed)
                done[i] += 1

        t0 = time.monotonic()
        with ThreadPoolExecutor(self.cores) as pool:
            list(pool.map(spin, range(self.cores)))
        return sum(done) / (time.monotonic() - t0)

    def scenario_login(self, server: Server, users: list[Any]) -> None:
        log(f"scenario 4: Login (bcrypt cost {self.rounds}) against bcrypt.checkpw on {self.cores} cores")
        server.pin(self.all_cpus)
        data = [{"username_or_email": u.username, "password": PASSWORD} for u in users]
        refs = []
        for _ in range(self.p.rounds):
            refs.append(self.bcrypt_reference(self.p.login_measure / 2))
            log(f"  bcrypt.checkpw          {refs[-1]:9.1f}/s")
            self.record(
                "login",
                f"4 Login (cost {self.rounds})",
                self.measure(
                    server,
                    "auth.v1.AuthService/Login",
                    data=data,
                    concurrency=2 * self.cores,
                    duration=self.p.login_measure,
                ),
            )
        self.values["bcrypt_rps"] = statistics.median(refs)
        self.values["bcrypt_rps_rounds"] = [round(r, 2) for r in refs]
        server.pin(SERVER_CPU)

    # ---- scenario 5: refresh with rotation ----------------------------------------------------------

    def scenario_refresh(self, server: Server, refresh_tokens: list[str], per_round: int) -> None:
        log("scenario 5: Refresh with rotation, every call a fresh token")
        for r in range(self.p.rounds):
            chunk = refresh_tokens[r * per_round : (r + 1) * per_round]
            warm, measured = chunk[: self.p.refresh_warm], chunk[self.p.refresh_warm :]
            self.quiet()
            warm_file = self.ghz.data_file([{"refresh_token": t} for t in warm])
            proc = self.ghz.start(
                self.ghz.command(
                    "auth.v1.AuthService/Refresh",
                    server.target,
                    data_file=warm_file,
                    total=len(warm),
                    max_duration=self.p.warmup,
                )
            )
            self.ghz.finish(proc, self.p.warmup + 60)
            file = self.ghz.data_file([{"refresh_token": t} for t in measured])
            result = self.timed(
                server,
                "auth.v1.AuthService/Refresh",
                server.target,
                None,
                "OK",
                # every token once at most: stop at the last token or after the measured time
                {"data_file": file, "total": len(measured), "max_duration": self.p.measure},
            )
            self.record("refresh", "5 Refresh (rotation)", result)

    # ---- scenario 6: isolation from a login storm ----------------------------------------------------

    def storm(self, server: Server, users: list[Any], seconds: float) -> subprocess.Popen[str]:
        data = [{"username_or_email": u.username, "password": PASSWORD} for u in users]
        cmd = self.ghz.command(
            "auth.v1.AuthService/Login",
            server.target,
            data_file=self.ghz.data_file(data),
            concurrency=8,
            duration=seconds,
        )
        return self.ghz.start(cmd)

    def scenario_isolation(self, server: Server, tokens: list[str], storm_users: list[Any]) -> None:
        getme = self.scenarios["getme"].median("rps") if "getme" in self.scenarios else 1000.0
        rate = max(50.0, round(getme * 0.5, -1))
        log(f"scenario 6: isolation from a Login storm (8 clients); GetMe at {rate:.0f}/s, no-op saturating")
        server.pin(self.all_cpus)
        storms = []
        for _ in range(self.p.rounds):
            for stormy in (False, True):
                suffix = "_storm" if stormy else "_alone"
                storm = None
                if stormy:
                    storm = self.storm(server, storm_users, 2 * (self.p.warmup + self.p.measure) + 8)
                    time.sleep(1.5)
                self.record(
                    "getme_rate" + suffix,
                    f"6 GetMe at {rate:.0f}/s, {'Login storm' if stormy else 'alone'}",
                    self._measure_noquiet(server, "auth.v1.AuthService/GetMe", tokens=tokens, rate=rate),
                )
                self.record(
                    "noop" + suffix,
                    f"6 Health/Check, {'Login storm' if stormy else 'alone'}",
                    self._measure_noquiet(server, "grpc.health.v1.Health/Check"),
                )
                if storm is not None:
                    storm.send_signal(signal.SIGINT)
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        storms.append(self.ghz.finish(storm, 60))
        self.values["storm_logins_per_s"] = [round(s.rps, 2) for s in storms]
        self.values["isolation_getme_rate"] = rate
        server.pin(SERVER_CPU)

    def _measure_noquiet(self, server: Server, method: str, **kw: Any) -> Result:
        tokens = kw.pop("tokens", None)
        common = {"token_count": len(tokens or [])} | kw
        if self.p.warmup:
            proc = self.ghz.start(self.ghz.command(method, server.target, **common, duration=self.p.warmup), tokens)
            self.ghz.finish(proc, 120)
        return self.timed(server, method, server.target, tokens, "OK", common)

    # ---- scenario 7: enumeration timing -------------------------------------------------------------

    def scenario_enumeration(self, server: Server, users: list[Any]) -> None:
        log("scenario 7: Login latency, unknown users vs known users with a wrong password (side by side)")
        server.pin(self.all_cpus)
        unknown = [{"username_or_email": f"nobody{i:05d}", "password": WRONG_PASSWORD} for i in range(200)]
        known = [{"username_or_email": u.username, "password": WRONG_PASSWORD} for u in users]
        for _ in range(self.p.rounds):
            self.quiet()
            procs = {}
            for name, data in (("enum_unknown", unknown), ("enum_known", known)):
                cmd = self.ghz.command(
                    "auth.v1.AuthService/Login",
                    server.target,
                    data_file=self.ghz.data_file(data),
                    concurrency=1,
                    duration=self.p.login_measure,
                    count_errors=True,
                )
                procs[name] = self.ghz.start(cmd)
            for name, proc in procs.items():
                label = "7 Login, unknown user" if name == "enum_unknown" else "7 Login, known user, wrong password"
                self.record(name, label, self.ghz.finish(proc, self.p.login_measure + 60, "Unauthenticated"))
        server.pin(SERVER_CPU)

    # ---- scenario 8: scale with data -----------------------------------------------------------------

    def scenario_data(self, small_uri: str, big_uri: str, tokens: list[str]) -> None:
        small_n, big_n = self.p.small_sessions, self.p.big_sessions
        log(f"scenario 8: GetMe with {small_n} vs {big_n} stored sessions (two servers, interleaved)")
        # Without the session cache: what is measured is the store's read of a session among many.
        small = self.server({**self.base_env(small_uri), "AUTH_SESSION_CACHE_TTL": "0"}, "small")
        big = self.server({**self.base_env(big_uri), "AUTH_SESSION_CACHE_TTL": "0"}, "big")
        try:
            for _ in range(self.p.rounds):
                for key, server, n in (("data_small", small, small_n), ("data_big", big, big_n)):
                    self.record(
                        key,
                        f"8 GetMe, {n} sessions stored",
                        self.measure(server, "auth.v1.AuthService/GetMe", tokens=tokens),
                    )
        finally:
            small.stop()
            big.stop()

    # ---- scenario 14: the session cache (issue 15) ------------------------------------------------

    def scenario_session_cache(self, env: dict[str, str], tokens: list[str]) -> None:
        log("scenario 14: GetMe with the session cache vs AUTH_SESSION_CACHE_TTL=0 (two servers, interleaved)")
        servers = {
            "cache_on": self.server(env, "cache-on"),
            "cache_off": self.server({**env, "AUTH_SESSION_CACHE_TTL": "0"}, "cache-off"),
        }
        try:
            for _ in range(self.p.rounds):
                for key, server in servers.items():
                    label = "14 GetMe, session cache" if key == "cache_on" else "14 GetMe, AUTH_SESSION_CACHE_TTL=0"
                    self.record(key, label, self.measure(server, "auth.v1.AuthService/GetMe", tokens=tokens))
        finally:
            for server in servers.values():
                server.stop()

    # ---- scenario 9: worker processes ----------------------------------------------------------------

    def scenario_workers(self, env: dict[str, str]) -> None:
        log("scenario 9: Health/Check on `serve --workers 1` vs `--workers 2` (unpinned servers, ghz on CPU 1)")
        servers = {n: self.server(env, f"workers{n}", cpus=None, workers=n) for n in (1, 2)}
        try:
            for _ in range(self.p.rounds):
                for n, server in servers.items():
                    self.record(
                        f"workers_{n}",
                        f"9 Health/Check, --workers {n}",
                        self.measure(server, "grpc.health.v1.Health/Check", connections=8, concurrency=64),
                    )
        finally:
            for server in servers.values():
                server.stop()

    # ---- scenario 10: replicas on one store -----------------------------------------------------------

    def scenario_replicas(self, env: dict[str, str], tokens: list[str]) -> None:
        log("scenario 10: GetMe on one server vs two server processes on one store, load spread over both")
        one = self.server(env, "replica-a", cpus=None)  # unpinned, as in scenario 9: ghz stays on CPU 1
        two = self.server(env, "replica-b", cpus=None)
        try:
            for _ in range(self.p.rounds):
                self.record(
                    "replicas_1",
                    "10 GetMe, 1 server",
                    self.measure(one, "auth.v1.AuthService/GetMe", tokens=tokens),
                )
                self.record(
                    "replicas_2",
                    "10 GetMe, 2 servers on one store",
                    self.measure_spread([one, two], "auth.v1.AuthService/GetMe", tokens),
                    note="two ghz at -c 25 side by side, one per server; p50/p95/p99: the worse of the two",
                )
        finally:
            one.stop()
            two.stop()

    # ---- scenario 11: revocation pushed to a guard (issue 12) ---------------------------------------

    def scenario_revocation_latency(self, env: dict[str, str], issued: list[Any]) -> None:
        """From sending LogoutSession to the moment the client package's guard (cache TTL 60 s, so only the
        pushed event can explain it) has dropped that session's cached answer, for each session in turn,
        against `serve --workers 2`. Revocations go out over 8 channels, so they land on both workers
        (SO_REUSEPORT picks one per connection); the guard's stream is on one of them."""
        import grpc

        from auth_client import AuthClient, Guard
        from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
        from auth_server.domain.audit import Audit
        from auth_server.domain.services import ServiceAccounts
        from auth_server.infra.keys import KeyRing
        from auth_server.store import open_store

        log(f"scenario 11: revocation -> guard eviction, {len(issued)} sessions, `serve --workers 2`")
        store = open_store(env["AUTH_STORE"])
        store.open()
        try:
            accounts = ServiceAccounts(
                store, KeyRing.from_secret(self.secret.encode()), Audit(store), frozenset({TENANT})
            )
            account, secret = accounts.create(f"bench{secrets.token_hex(3)}", [])
        finally:
            store.close()
        server = self.server(env, "revocation", cpus=None, workers=2)
        method = "/bench.v1.Orders/List"
        auth = AuthClient(server.target, service_credentials=(account.id, secret))
        guard = Guard(auth=auth, services=[method], rules={method: "authenticated"}, cache_ttl=60)
        channels = [grpc.insecure_channel(server.target, options=[("bench.channel", i)]) for i in range(8)]
        try:
            deadline = time.monotonic() + 30
            while not guard.revocations.up:
                if time.monotonic() > deadline:
                    raise RuntimeError("the guard's revocation stream did not connect")
                time.sleep(0.01)
            for tokens in issued:  # fill the cache, as a guarded service under load would have it
                guard._admit(method, [("authorization", f"Bearer {tokens.access_token}")])
            latencies: list[float] = []
            errors = 0
            started = time.monotonic()
            for i, tokens in enumerate(issued):
                stub = auth_pb2_grpc.AuthServiceStub(channels[i % len(channels)])
                sent = time.perf_counter()
                stub.LogoutSession(
                    auth_pb2.LogoutSessionRequest(session_id=tokens.session_id),
                    metadata=[("authorization", f"Bearer {tokens.access_token}")],
                    timeout=5,
                )
                give_up = sent + 5
                while guard.cache.get(None, tokens.access_token) is not None and time.perf_counter() < give_up:
                    time.sleep(0.0002)
                if guard.cache.get(None, tokens.access_token) is not None:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - sent) * 1000)
            elapsed = time.monotonic() - started
        finally:
            for channel in channels:
                channel.close()
            guard.close()
            auth.close()
            server.stop()
        cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [float("nan")] * 99
        self.record(
            "revocation_latency",
            "11 revocation -> guard eviction, --workers 2",
            Result(
                rps=len(latencies) / elapsed,
                p50=cuts[49],
                p95=cuts[94],
                p99=cuts[98],
                mean=statistics.fmean(latencies) if latencies else float("nan"),
                count=len(latencies),
                errors=errors,
            ),
            note="ms from sending LogoutSession to the guard's cache entry gone; one revocation at a time",
        )

    # ---- scenario 13: what the session cap adds to opening a session ---------------------------------

    def scenario_session_cap(self, env: dict[str, str], users: list[Any]) -> None:
        """Sessions.open against the real store, one thread, in process: with AUTH_MAX_SESSIONS_PER_USER=100
        and with 0 (no cap), interleaved, for users with a few sessions each (the common case: far below
        the cap a sign-in counts the live sessions, one read; near it, it also takes a per-user lease).
        Every sign-in (VerifyOtp) pays this; ghz cannot drive VerifyOtp (it needs the mailed code), so the
        domain step is timed directly, on the store the server uses."""
        from auth_server.domain.audit import Audit
        from auth_server.domain.sessions import Device, Sessions
        from auth_server.domain.tokens import RefreshTokens, access_tokens_for
        from auth_server.infra.config import load_settings
        from auth_server.infra.keys import KeyRing
        from auth_server.store import open_store

        calls = 300 if self.p.name == "quick" else 1500
        log(f"scenario 13: opening a session with the session cap (100) vs without (0), {calls} each, in process")
        settings = load_settings(env)
        keys = KeyRing.from_secret(settings.jwt_secret)
        access = access_tokens_for("HS256", keys.jwt, None, None, settings.access_ttl)
        device = Device(name="Bench device", ip_address="127.0.0.1", user_agent=DEVICE_UA)
        store = open_store(env["AUTH_STORE"])
        store.open()
        try:
            for _ in range(self.p.rounds):
                for name, cap in (("open_capped", 100), ("open_uncapped", 0)):
                    capped = dataclasses.replace(settings, max_sessions_per_user=cap)
                    sessions = Sessions(store, capped, keys, access, RefreshTokens(keys.refresh), Audit(store))
                    took: list[float] = []
                    started = time.perf_counter()
                    for i in range(calls):
                        before = time.perf_counter()
                        sessions.open(TENANT, users[i % len(users)], device)
                        took.append((time.perf_counter() - before) * 1000)
                    elapsed = time.perf_counter() - started
                    cuts = statistics.quantiles(took, n=100, method="inclusive")
                    label = "13 Sessions.open, cap 100" if cap else "13 Sessions.open, no cap"
                    self.record(
                        name,
                        label,
                        Result(calls / elapsed, cuts[49], cuts[94], cuts[98], statistics.fmean(took), calls, 0),
                        note="in process, one thread, on the server's store",
                    )
        finally:
            store.close()

    # ---- report ----------------------------------------------------------------------------------------

    # ---- scenario 12: login fairness under one source's flood -------------------------------------

    def scenario_login_fairness(self, env: dict[str, str], users: list[Any]) -> None:
        """Logins from other sources, alone and while one source floods Login with 24 callers.

        Sources are told by x-forwarded-for through a trusted proxy (the benchmark's address), as behind
        a real load balancer. The per-source rate is off: what is measured is the bcrypt pool's fairness.
        """
        log(f"scenario 12: Login from other sources, alone and under a 24-caller flood from one (cost {self.rounds})")
        fair_env = env | {"AUTH_TRUSTED_PROXIES": "127.0.0.1/32", "AUTH_SOURCE_LOGIN_RATE": "0"}
        server = self.server(fair_env, "fairness", cpus=self.all_cpus)
        data = [{"username_or_email": u.username, "password": PASSWORD} for u in users]
        flood_data = [{"username_or_email": f"ghost{i:05d}", "password": WRONG_PASSWORD} for i in range(500)]
        legit = {"concurrency": 2, "duration": self.p.login_measure, "metadata": {"x-forwarded-for": "203.0.113.10"}}
        try:
            for _ in range(self.p.rounds):
                self.record(
                    "login_others_alone",
                    "12 Login, other sources, alone",
                    self.measure(server, "auth.v1.AuthService/Login", data=data, **legit),
                )
                flood_cmd = self.ghz.command(
                    "auth.v1.AuthService/Login",
                    server.target,
                    data_file=self.ghz.data_file(flood_data),
                    concurrency=24,
                    duration=2 * (self.p.warmup + self.p.login_measure) + 10,
                    count_errors=True,
                    metadata={"x-forwarded-for": "198.51.100.66"},
                )
                flood = self.ghz.start(flood_cmd)
                time.sleep(1.5)  # the flood is running before the measured logins start
                try:
                    flooded = self.measure(
                        server, "auth.v1.AuthService/Login", data=data, warm=False, quiet=False, **legit
                    )
                    self.record("login_others_flood", "12 Login, other sources, one source flooding", flooded)
                finally:
                    flood.send_signal(signal.SIGINT)
                    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                        self.ghz.finish(flood, 60, "Unauthenticated")
        finally:
            server.stop()

    def report(self) -> dict[str, Any]:
        nan = float("nan")
        s = collections.defaultdict(lambda: nan, {k: v.median("rps") for k, v in self.scenarios.items()})
        p99 = collections.defaultdict(lambda: nan, {k: v.median("p99") for k, v in self.scenarios.items()})
        p50 = collections.defaultdict(lambda: nan, {k: v.median("p50") for k, v in self.scenarios.items()})
        mean = collections.defaultdict(lambda: nan, {k: v.median("mean") for k, v in self.scenarios.items()})
        success = collections.defaultdict(lambda: nan, {k: v.success_share() for k, v in self.scenarios.items()})
        self.values.setdefault("bcrypt_rps", nan)
        self.values.setdefault("bcrypt_rps_rounds", [])
        ratios = {
            "auth_ratio": s["getme"] / s["ceiling"],
            "reject_ratio": s["reject"] / s["getme"],
            "login_ratio": s["login"] / self.values["bcrypt_rps"],
            "refresh_login_ratio": s["refresh"] / s["login"],
            "p99_inflation": p99["getme_rate_storm"] / p99["getme_rate_alone"],
            "storm_ratio": s["noop_storm"] / s["noop_alone"],
            "enum_timing_ratio": mean["enum_unknown"] / mean["enum_known"],
            "data_ratio": s["data_big"] / s["data_small"],
            "workers_ratio": s["workers_2"] / s["workers_1"],
            "bridge_ratio": s["bridge_me"] / s["getme"],
            "bridge_p50_excess_ms": p50["bridge_me"] - p50["getme"],
            "replicas_ratio": s["replicas_2"] / s["replicas_1"],
            "revocation_p99_ms": p99["revocation_latency"],
            # The issue's measure: the share of other sources' logins that succeed, flood vs none.
            "login_fairness": success["login_others_flood"] / success["login_others_alone"],
            "login_fairness_rate": s["login_others_flood"] / s["login_others_alone"],  # their throughput
            "session_cap_ratio": s["open_capped"] / s["open_uncapped"],
            "session_cache_ratio": s["cache_on"] / s["cache_off"],
        }
        return {
            **{k: (round(v, 3) if v == v else None) for k, v in ratios.items()},
            "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
            "meta": {
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "profile": self.p.name,
                "store": self.args.store + ("" if self.args.store == "sqlite" else " (" + self.mongo_kind() + ")"),
                "cores": self.cores,
                "cpu_model": _cpu_model(),
                "python": platform.python_version(),
                "grpcio": _version("grpcio"),
                "bcrypt": _version("bcrypt"),
                "bcrypt_rounds": self.rounds,
                "pinning": f"server CPU {SERVER_CPU} (all: 4, 6, 7, 9, 10), ghz and vegeta CPU {LOAD_CPU}",
                "seconds": round(time.monotonic() - self.started),
                "command": "scripts/bench " + " ".join(sys.argv[1:]),
                "loadavg_at_end": _loadavg(),
                **self.values,
            },
            "scenarios": {k: v.summary() for k, v in self.scenarios.items()},
        }

    def mongo_kind(self) -> str:
        if os.environ.get("AUTH_TEST_MONGODB_URI"):
            return "AUTH_TEST_MONGODB_URI"
        return "FerretDB 1.24, SQLite backend" + (", _id expression index added" if self.args.ferret_id_index else "")

    def cleanup(self) -> None:
        for server in self.servers:
            server.stop()
        ferret = getattr(self, "ferret", None)
        if ferret is not None and ferret.poll() is None:
            ferret.terminate()
            ferret.wait(timeout=10)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _break_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B").join((signature[:5], signature[6:]))
    return f"{head}.{payload}.{flipped}"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def _ok(op: str, target: Any, value: float) -> str:
    if op == "info" or value != value:
        return ""
    if op == ">=":
        return "ok" if value >= target else "MISS"
    if op == "<=":
        return "ok" if value <= target else "MISS"
    low, high = target
    return "ok" if low <= value <= high else "MISS"


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"{meta['date']} · {meta['cores']} cores ({meta['cpu_model']}) · store {meta['store']} · "
        f"profile {meta['profile']} · bcrypt cost {meta['bcrypt_rounds']} · {meta['seconds']} s",
        f"pinning: {meta['pinning']}",
        "",
        "| scenario | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU | req/s per round |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in results["scenarios"].values():
        cpu = f"{s['server_cpu']:.0%}" if s["server_cpu"] is not None and s["server_cpu"] == s["server_cpu"] else ""
        lines.append(
            f"| {s['label']} | {s['rps']:.1f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} "
            f"| {s['errors']} | {cpu} | {' / '.join(f'{r:.0f}' for r in s['rounds_rps'])} |"
        )
    lines.append(
        f"| bcrypt.checkpw, {meta['cores']} threads | {meta['bcrypt_rps']:.1f} | | | | | | "
        f"{' / '.join(f'{r:.1f}' for r in meta['bcrypt_rps_rounds'])} |"
    )
    lines += ["", "| ratio | value | target | |", "|---|---:|---|---|"]
    for key, (op, target) in TARGETS.items():
        value = results[key] if results[key] is not None else float("nan")
        shown = "" if op == "info" else (f"{op} {target}" if op != "in" else f"{target[0]}-{target[1]}")
        lines.append(f"| {key} | {value:.2f} | {shown} | {_ok(op, target, value)} |")
    return "\n".join(lines)


@contextlib.contextmanager
def _bench(args: argparse.Namespace, profile: Profile) -> Iterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        bench = Bench(args, profile, Path(tmp))
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            yield bench
        finally:
            bench.cleanup()
            signal.signal(signal.SIGTERM, previous)
            if args.keep_logs:
                keep = REPO / "bench" / "logs"
                keep.mkdir(parents=True, exist_ok=True)
                for f in Path(tmp).glob("*.log"):
                    (keep / f.name).write_bytes(f.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark auth-server with ghz and vegeta: 14 scenarios, a table, and bench/results.json.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under two minutes (one round, short runs)")
    parser.add_argument(
        "--store",
        choices=("sqlite", "mongodb"),
        default="sqlite",
        help="sqlite (a temp file) or mongodb (AUTH_TEST_MONGODB_URI, else FerretDB from .cache/bin)",
    )
    parser.add_argument(
        "--bcrypt-rounds", type=int, default=None, help="bcrypt cost (default AUTH_BCRYPT_ROUNDS or 12; --quick: 10)"
    )
    parser.add_argument(
        "--output", help="the JSON's path (default bench/results.json; --peer keycloak: bench/peer-keycloak.json)"
    )
    parser.add_argument(
        "--peer",
        choices=("keycloak",),
        help="instead of the scenarios: this service and Keycloak side by side, read, refresh and login "
        "(scripts/peer_keycloak.py; downloads Keycloak once, takes minutes; writes bench/peer-keycloak.json)",
    )
    parser.add_argument(
        "--only", nargs="+", type=int, choices=range(1, 15), metavar="N", help="run only these scenarios (1-14)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: quick 1, full 2)")
    parser.add_argument("--measure", type=float, help="measured seconds of each throughput run")
    parser.add_argument(
        "--env", action="append", default=[], metavar="AUTH_X=V", help="extra server setting (repeatable), e.g. for A/B"
    )
    parser.add_argument(
        "--ferret-id-index",
        action="store_true",
        help="with the FerretDB started here: index the expression its _id lookups use (docs/performance.md)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="copy server logs to bench/logs/")
    parser.add_argument("--ghz", help="ghz binary (default $GHZ, .cache/bin/ghz, PATH)")
    parser.add_argument(
        "--vegeta", help="vegeta binary, HTTP load on the bridge (default $VEGETA, .cache/bin/vegeta, PATH)"
    )
    parser.add_argument("--ferretdb", help="FerretDB binary (default $FERRETDB, .cache/bin/ferretdb, PATH)")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.rounds:
        profile = dataclasses.replace(profile, rounds=args.rounds)
    if args.measure:
        profile = dataclasses.replace(profile, measure=args.measure)
    args.only = set(args.only or range(1, 15))
    if args.store == "mongodb":  # a FerretDB-backed store is far slower: fewer refresh tokens, same scenarios
        profile = dataclasses.replace(profile, refresh_calls=1000, refresh_warm=200)
    if args.bcrypt_rounds is None:
        args.bcrypt_rounds = int(os.environ.get("AUTH_BCRYPT_ROUNDS") or (10 if args.quick else 12))
    args.ghz = args.ghz or find_tool("ghz", "GHZ")
    args.vegeta = args.vegeta or find_tool("vegeta", "VEGETA")  # optional: without it no bridge run
    if not args.ghz:
        log("ghz not found: scripts/provision ghz (builds it into .cache/bin), or set $GHZ")
        return 2
    if not Path("/usr/bin/taskset").exists() and not any(
        (Path(d) / "taskset").exists() for d in os.environ.get("PATH", "").split(":")
    ):
        log("taskset (util-linux) is required")
        return 2
    if (os.cpu_count() or 1) < 2:
        log("needs at least 2 CPUs (server and load generator on different cores)")
        return 2
    sys.path.insert(0, str(REPO))
    if args.peer == "keycloak":
        sys.modules.setdefault("bench", sys.modules[__name__])  # peer_keycloak imports this module by name
        import peer_keycloak

        args.output = args.output or str(REPO / "bench" / "peer-keycloak.json")
        if not args.rounds:
            profile = dataclasses.replace(profile, rounds=1 if args.quick else 3)
        return peer_keycloak.run(args, profile)
    args.output = args.output or str(REPO / "bench" / "results.json")
    with _bench(args, profile) as bench:
        results = bench.run()
    return write_results(results, args.output, render)


def write_results(results: dict[str, Any], path: str, table: Callable[[dict[str, Any]], str]) -> int:
    """Write a run's result file, print its table and where the file went (this script and --peer keycloak)."""
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
