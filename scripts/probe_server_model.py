"""Probe which gRPC server model suits the auth service: ``grpc.aio`` or the sync thread-pool server.

This is a measurement tool, not part of the service. It starts small throw-away gRPC servers
(one per variant, pinned to CPU 0 with ``taskset``), drives each with ghz from a separate process
pinned to CPU 1, and prints a markdown table of requests/s, p50, p99, errors and the server's
CPU use. Every variant serves the standard ``grpc.health.v1.Health/Check`` method (no-op variants
use the stock health servicer; the others register a generic handler with the same messages that
does the work), so one small proto is all ghz needs.

Variants: (a) no-op, (b) one SQLite point lookup by primary key, (c) one MongoDB ``find_one`` by
``_id`` on FerretDB, and (d) the no-op rate while four clients keep a bcrypt(cost 12) RPC busy.

Run it with the project's virtualenv (it needs grpcio, grpcio-health-checking, pymongo, bcrypt):

    .venv/bin/python scripts/probe-server-model

It uses ghz from ``.cache/bin/ghz`` (or ``$GHZ`` / PATH) and FerretDB from ``.cache/bin/ferretdb``
(or ``$FERRETDB``); without FerretDB the MongoDB rows are skipped. All servers listen on
127.0.0.1 with ports chosen by the kernel; every child process is stopped on exit, and each step
has a timeout; a default run takes six to seven minutes (--budget caps it at about eight).

FerretDB 1.24's SQLite backend cannot use its own `_id` index for `find_one({"_id": ...})`, so
the probe adds an index on the expression its queries use (see `loadtools.index_ferret_ids`);
otherwise FerretDB itself, not the gRPC server, would be what the MongoDB rows measure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtools import HEALTH_PROTO, index_ferret_ids, log, start_ferretdb
from loadtools import cpu_seconds as _cpu_seconds
from loadtools import find_tool as _find_tool
from loadtools import is_cut as _is_cut
from loadtools import machine_busy_seconds as _machine_busy_seconds
from loadtools import wait_quiet as _wait_quiet

ROWS = 10_000
SERVICE = "grpc.health.v1.Health"
HASH_METHOD = "/probe.v1.Probe/Hash"
SERVER_CPU = "0"
LOAD_CPU = "1"


# --------------------------------------------------------------------------------------------
# Server side (runs in a child process: `probe_server_model.py serve ...`)
# --------------------------------------------------------------------------------------------

_local = threading.local()


def _sqlite_conn(path: str) -> sqlite3.Connection:
    """One connection per thread, as the sync server (and an executor) would keep them."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA query_only = 1")
        _local.conn = conn
    return conn


def _sqlite_lookup(path: str) -> bool:
    row = (
        _sqlite_conn(path).execute("SELECT email, secret FROM users WHERE id = ?", (random.randrange(ROWS),)).fetchone()
    )
    return row is not None


def _user_id(i: int | None = None) -> str:
    """A string _id: FerretDB 1.x's SQLite backend pushes `_id` equality down to SQL only
    for string and ObjectId values (an int _id is a full scan there)."""
    return f"user{random.randrange(ROWS) if i is None else i:05d}"


def _bcrypt_hash() -> bytes:
    import bcrypt

    return bcrypt.hashpw(b"x" * 20, bcrypt.gensalt(12))


def _announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def _serve_sync(work: str, workers: int, sqlite_path: str, mongo_uri: str) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    req_t, resp_t = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    serving, not_serving = resp_t.SERVING, resp_t.NOT_SERVING
    server = grpc.server(ThreadPoolExecutor(max_workers=workers))

    def handler(fn: Callable[[Any, Any], Any]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=req_t.FromString,
            response_serializer=resp_t.SerializeToString,
        )

    if work in ("noop", "noop+bcrypt"):
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    elif work == "sqlite":

        def check_sqlite(_req: Any, _ctx: Any) -> Any:
            return resp_t(status=serving if _sqlite_lookup(sqlite_path) else not_serving)

        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Check": handler(check_sqlite)}),)
        )
    elif work == "mongo":
        from pymongo import MongoClient

        coll = MongoClient(mongo_uri, maxPoolSize=workers + 4).probe.users

        def check_mongo(_req: Any, _ctx: Any) -> Any:
            doc = coll.find_one({"_id": _user_id()})
            return resp_t(status=serving if doc else not_serving)

        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Check": handler(check_mongo)}),)
        )
    else:
        raise SystemExit(f"sync server: unknown work {work!r}")

    if work == "noop+bcrypt":

        def hash_rpc(_req: Any, _ctx: Any) -> Any:
            _bcrypt_hash()
            return resp_t(status=serving)

        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("probe.v1.Probe", {"Hash": handler(hash_rpc)}),)
        )

    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _announce(port)
    server.wait_for_termination()


async def _serve_aio_main(work: str, sqlite_path: str, mongo_uri: str) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    req_t, resp_t = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    serving, not_serving = resp_t.SERVING, resp_t.NOT_SERVING
    server = grpc.aio.server()

    def handler(fn: Callable[[Any, Any], Awaitable[Any]]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=req_t.FromString,
            response_serializer=resp_t.SerializeToString,
        )

    def register(fn: Callable[[Any, Any], Awaitable[Any]]) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Check": handler(fn)}),))

    if work in ("noop", "noop+bcrypt"):
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    elif work == "sqlite-thread":

        async def check_sqlite_thread(_req: Any, _ctx: Any) -> Any:
            found = await asyncio.to_thread(_sqlite_lookup, sqlite_path)
            return resp_t(status=serving if found else not_serving)

        register(check_sqlite_thread)
    elif work == "sqlite-inline":

        async def check_sqlite_inline(_req: Any, _ctx: Any) -> Any:
            return resp_t(status=serving if _sqlite_lookup(sqlite_path) else not_serving)

        register(check_sqlite_inline)
    elif work == "mongo-async":
        from pymongo import AsyncMongoClient

        acoll = AsyncMongoClient(mongo_uri).probe.users

        async def check_mongo_async(_req: Any, _ctx: Any) -> Any:
            doc = await acoll.find_one({"_id": _user_id()})
            return resp_t(status=serving if doc else not_serving)

        register(check_mongo_async)
    elif work == "mongo-thread":
        from pymongo import MongoClient

        coll = MongoClient(mongo_uri).probe.users

        async def check_mongo_thread(_req: Any, _ctx: Any) -> Any:
            doc = await asyncio.to_thread(coll.find_one, {"_id": _user_id()})
            return resp_t(status=serving if doc else not_serving)

        register(check_mongo_thread)
    else:
        raise SystemExit(f"aio server: unknown work {work!r}")

    if work == "noop+bcrypt":

        async def hash_rpc(_req: Any, _ctx: Any) -> Any:
            await asyncio.to_thread(_bcrypt_hash)
            return resp_t(status=serving)

        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("probe.v1.Probe", {"Hash": handler(hash_rpc)}),)
        )

    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _announce(port)
    await server.wait_for_termination()


def serve(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.model == "sync":
        _serve_sync(args.work, args.workers, args.sqlite, args.mongo)
    else:
        asyncio.run(_serve_aio_main(args.work, args.sqlite, args.mongo))
    return 0


# --------------------------------------------------------------------------------------------
# bcrypt load (child process: `probe_server_model.py hash-load ...`)
# --------------------------------------------------------------------------------------------


def hash_load(args: argparse.Namespace) -> int:
    """Keep `clients` Hash RPCs in flight until SIGINT/--seconds; print completion times as JSON."""
    import grpc
    from grpc_health.v1 import health_pb2

    stop = threading.Event()
    done: list[float] = []
    errors = [0]
    lock = threading.Lock()
    channel = grpc.insecure_channel(args.target)
    call = channel.unary_unary(
        HASH_METHOD,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )

    def worker() -> None:
        while not stop.is_set():
            try:
                call(health_pb2.HealthCheckRequest(), timeout=30)
                with lock:
                    done.append(time.monotonic())
            except grpc.RpcError:
                with lock:
                    errors[0] += 1

    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    stop.wait(args.seconds)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    with lock:
        print(json.dumps({"done": done, "errors": errors[0]}), flush=True)
    channel.close()
    return 0


# --------------------------------------------------------------------------------------------
# Orchestrator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    model: str  # "sync" | "aio"
    work: str
    label: str
    info_only: bool = False


CASES: tuple[Case, ...] = (
    Case("a-sync", "sync", "noop", "(a) no-op: stock Health servicer"),
    Case("a-aio", "aio", "noop", "(a) no-op: stock Health servicer (aio)"),
    Case("b-sync", "sync", "sqlite", "(b) SQLite PK lookup, connection per pool thread"),
    Case("b-aio", "aio", "sqlite-thread", "(b) SQLite PK lookup via asyncio.to_thread"),
    Case(
        "b-aio-inline",
        "aio",
        "sqlite-inline",
        "(b) SQLite PK lookup inline on the loop",
        True,
    ),
    Case("c-sync", "sync", "mongo", "(c) Mongo find_one, sync MongoClient"),
    Case("c-aio", "aio", "mongo-async", "(c) Mongo find_one, AsyncMongoClient"),
    Case(
        "c-aio-thread",
        "aio",
        "mongo-thread",
        "(c) Mongo find_one, MongoClient via to_thread",
    ),
    Case("d-sync", "sync", "noop+bcrypt", "(d) no-op while 4 clients run bcrypt(12)"),
    Case(
        "d-aio",
        "aio",
        "noop+bcrypt",
        "(d) no-op while 4 clients run bcrypt(12) via to_thread",
    ),
)


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    count: int
    errors: int
    server_cpu: float  # fraction of one core over the measured window
    store_cpu: float | None = None
    hashes_per_s: float | None = None
    cut: int = 0  # calls still in flight when ghz's --duration ended (not server errors)
    ghz_cpu: float = 0.0
    foreign_cpu: float = 0.0  # cores' worth of CPU used by other processes meanwhile
    error_kinds: dict[str, int] = field(default_factory=dict)


class Probe:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.deadline = time.monotonic() + args.budget
        self.proto = tmp / "health.proto"
        self.proto.write_text(HEALTH_PROTO)
        self.sqlite_path = str(tmp / "users.sqlite")
        self.mongo_uri = ""
        self.ferret: subprocess.Popen[str] | None = None

    # ---- process helpers ------------------------------------------------------------------

    def spawn(self, cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, text=True, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)

    # ---- fixtures ---------------------------------------------------------------------------

    def make_sqlite(self) -> None:
        conn = sqlite3.connect(self.sqlite_path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, secret TEXT)")
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?)",
            ((i, f"user{i}@example.test", "$2b$12$" + "x" * 53) for i in range(ROWS)),
        )
        conn.commit()
        conn.close()

    def start_ferret(self, binary: str) -> bool:
        state = self.tmp / "ferret"
        try:
            self.ferret, uri = start_ferretdb(binary, state, LOAD_CPU, self.tmp / "ferret.log")
        except RuntimeError as exc:
            log(f"{exc}; Mongo rows skipped.")
            return False
        self.procs.append(self.ferret)  # type: ignore[arg-type]
        self.mongo_uri = uri
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_uri, serverSelectionTimeoutMS=1000)
        try:
            coll = client.probe.users
            coll.drop()
            docs = [
                {
                    "_id": _user_id(i),
                    "email": f"user{i}@example.test",
                    "secret": "$2b$12$" + "x" * 53,
                }
                for i in range(ROWS)
            ]
            for i in range(0, ROWS, 1000):
                coll.insert_many(docs[i : i + 1000], ordered=False)
            assert coll.count_documents({}) == ROWS
        finally:
            client.close()
        index_ferret_ids(state / "probe.sqlite", ["users"])
        return True

    # ---- one measurement -------------------------------------------------------------------

    def ghz(self, port: int, seconds: float, json_out: bool) -> dict[str, Any]:
        cmd = [
            "taskset",
            "-c",
            LOAD_CPU,
            self.args.ghz,
            "--insecure",
            "--cpus=1",
            f"--proto={self.proto}",
            f"--import-paths={self.tmp}",
            f"--call={SERVICE}/Check",
            "-d",
            "{}",
            f"--concurrency={self.args.concurrency}",
            f"--duration={seconds:g}s",
            "--format=json" if json_out else "--format=summary",
            f"127.0.0.1:{port}",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise RuntimeError(f"ghz failed ({out.returncode}): {out.stderr[-500:]}")
        if not json_out:
            return {}
        report: dict[str, Any] = json.loads(out.stdout)
        # ghz is the only child reaped in this window: its CPU time, for a saturation check.
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        report["_ghz_cpu_seconds"] = used
        return report

    def measure(self, case: Case) -> Run:
        cmd = [
            "taskset",
            "-c",
            SERVER_CPU,
            sys.executable,
            str(Path(__file__).resolve()),
            "serve",
            f"--model={case.model}",
            f"--work={case.work}",
            f"--workers={self.args.workers}",
            f"--sqlite={self.sqlite_path}",
            f"--mongo={self.mongo_uri}",
        ]
        server_log = self.tmp / f"server-{case.key}.log"
        with server_log.open("w") as err_file:  # a file, not a pipe: a chatty server must never block
            server = self.spawn(cmd, stdout=subprocess.PIPE, stderr=err_file)
        loader: subprocess.Popen[str] | None = None
        try:
            port = _read_port(server, server_log, timeout=20)
            if case.work == "noop+bcrypt":
                loader = self.spawn(
                    [
                        "taskset",
                        "-c",
                        LOAD_CPU,
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "hash-load",
                        f"--target=127.0.0.1:{port}",
                        "--clients=4",
                        f"--seconds={self.args.warmup + self.args.duration + 20}",
                    ],
                    stdout=subprocess.PIPE,
                )
                time.sleep(1.5)  # let the four hashing calls reach steady state
            self.ghz(port, self.args.warmup, json_out=False)
            helpers = [p.pid for p in (self.ferret, loader) if p is not None]
            cpu0, helpers0, busy0 = _cpu_seconds(server.pid), _cpu_seconds(*helpers), _machine_busy_seconds()
            store0 = _cpu_seconds(self.ferret.pid) if self.ferret else 0.0
            t0 = time.monotonic()
            report = self.ghz(port, self.args.duration, json_out=True)
            t1 = time.monotonic()
            span = t1 - t0
            cpu = (_cpu_seconds(server.pid) - cpu0) / span
            ghz_cpu = report["_ghz_cpu_seconds"] / span
            # CPU used on this machine by anything but this probe (other people's work): noise.
            ours = cpu + ghz_cpu + (_cpu_seconds(*helpers) - helpers0) / span
            foreign = max(0.0, (_machine_busy_seconds() - busy0) / span - ours)
            store = None
            if self.ferret and "mongo" in case.work:
                store = (_cpu_seconds(self.ferret.pid) - store0) / span
            hashes = None
            if loader is not None:
                self.stop_loader(loader)
                out, _ = loader.communicate(timeout=30)
                stamps = json.loads(out)["done"]
                hashes = sum(1 for s in stamps if t0 <= s <= t1) / (t1 - t0)
            if server.poll() is not None:
                raise RuntimeError(f"server exited: {server_log.read_text()[-1000:]}")
            run = _parse_ghz(report, cpu, store, hashes, self.args.concurrency)
            run.ghz_cpu, run.foreign_cpu = ghz_cpu, foreign
            return run
        finally:
            if loader is not None:
                self.stop(loader)
            self.stop(server)

    def stop_loader(self, loader: subprocess.Popen[str]) -> None:
        if loader.poll() is None:
            loader.send_signal(signal.SIGINT)

    # ---- whole run --------------------------------------------------------------------------

    def run(self, cases: list[Case]) -> dict[str, list[Run]]:
        results: dict[str, list[Run]] = {c.key: [] for c in cases}
        per_run = self.args.warmup + self.args.duration + 4
        for rep in range(self.args.repeats):
            # Interleave the repeats (round-robin) so slow drift of the machine spreads evenly.
            for case in cases:
                if time.monotonic() + per_run > self.deadline:
                    log(f"time budget reached; skipping {case.key} round {rep + 1}")
                    continue
                waited = _wait_quiet(min(self.args.quiet_wait, self.deadline - time.monotonic() - per_run))
                if waited is not None:
                    log(f"  machine still busy after {waited:.0f}s wait; measuring anyway")
                try:
                    r = self.measure(case)
                # Keep going: one broken variant must not hide the others.
                except (
                    OSError,
                    RuntimeError,
                    ValueError,
                    KeyError,
                    subprocess.SubprocessError,
                ) as exc:
                    log(f"{case.key} round {rep + 1}: FAILED: {exc}")
                    continue
                results[case.key].append(r)
                if r.errors:
                    log(f"  errors: {r.error_kinds}")
                extra = f", {r.hashes_per_s:.1f} hash/s" if r.hashes_per_s is not None else ""
                log(
                    f"{case.key:>13} round {rep + 1}: {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:7.2f} ms  err {r.errors} (+{r.cut} cut)  "
                    f"cpu server {r.server_cpu:.0%} ghz {r.ghz_cpu:.0%} foreign {r.foreign_cpu:.0%}{extra}"
                )
        return results


def _read_port(proc: subprocess.Popen[str], log_file: Path, timeout: float) -> int:
    assert proc.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0].startswith("PORT "):
        err = log_file.read_text() if log_file.exists() else ""
        raise RuntimeError(f"server did not start: {result!r} {err[-1000:]}")
    return int(result[0].split()[1])


def _parse_ghz(
    rep: dict[str, Any],
    cpu: float,
    store: float | None,
    hashes: float | None,
    concurrency: int,
) -> Run:
    lat = {d["percentage"]: d["latency"] / 1e6 for d in rep.get("latencyDistribution") or []}
    codes: dict[str, int] = rep.get("statusCodeDistribution") or {}
    ok = codes.get("OK", 0)
    kinds: dict[str, int] = dict(rep.get("errorDistribution") or {})
    # When --duration ends, ghz closes its connection under the calls still in flight;
    # those (at most one per concurrent worker) come back as Unavailable and are no
    # server errors. Anything else, or more of them, counts as an error.
    cut = sum(n for msg, n in kinds.items() if _is_cut(msg))
    if cut > concurrency:
        cut = 0
    return Run(
        rps=ok / (rep["total"] / 1e9) if rep.get("total") else float(rep["rps"]),
        p50_ms=lat.get(50, float("nan")),
        p99_ms=lat.get(99, float("nan")),
        count=int(rep["count"]),
        errors=int(rep["count"]) - ok - cut,
        cut=cut,
        server_cpu=cpu,
        store_cpu=store,
        hashes_per_s=hashes,
        error_kinds=kinds,
    )


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(cases: list[Case], results: dict[str, list[Run]], args: argparse.Namespace) -> str:
    base = {
        "a": _med([r.rps for r in results.get("a-sync", [])]),
        "b": _med([r.rps for r in results.get("b-sync", [])]),
        "c": _med([r.rps for r in results.get("c-sync", [])]),
        "d": _med([r.rps for r in results.get("d-sync", [])]),
    }
    idle = {
        "sync": _med([r.rps for r in results.get("a-sync", [])]),
        "aio": _med([r.rps for r in results.get("a-aio", [])]),
    }
    lines = [
        (
            "| variant | server | req/s (median) | req/s of each run | p50 ms | p99 ms "
            "| errors | CPU server / ghz | server CPU µs/req | foreign CPU (max) | vs sync | note |"
        ),
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for case in cases:
        runs = results[case.key]
        server = f"sync, {args.workers} threads" if case.model == "sync" else "aio"
        if not runs:
            lines.append(f"| {case.label} | {server} | n/a | | | | | | | | | skipped or failed |")
            continue
        rps = _med([r.rps for r in runs])
        each = " / ".join(f"{r.rps:.0f}" for r in runs)
        sync_rps = base[case.key[0]]
        ratio = f"{rps / sync_rps:.2f}x" if sync_rps == sync_rps and sync_rps else "n/a"
        notes: list[str] = []
        if case.info_only:
            notes.append("info only: blocks the loop")
        if any(r.store_cpu is not None for r in runs):
            store = _med([r.store_cpu or 0.0 for r in runs])
            notes.append(f"FerretDB CPU {store:.0%}")
        if case.work == "noop+bcrypt":
            hps = _med([r.hashes_per_s or 0.0 for r in runs])
            notes.append(f"{hps:.1f} hash/s")
            if idle[case.model] == idle[case.model]:  # not NaN: the idle no-op row ran
                notes.append(f"{rps / idle[case.model]:.0%} of idle no-op")
        lines.append(
            f"| {case.label} | {server} | {rps:.0f} | {each} "
            f"| {_med([r.p50_ms for r in runs]):.2f} | {_med([r.p99_ms for r in runs]):.2f} "
            f"| {sum(r.errors for r in runs)} "
            f"| {_med([r.server_cpu for r in runs]):.0%} / {_med([r.ghz_cpu for r in runs]):.0%} "
            f"| {_med([1e6 * r.server_cpu / r.rps for r in runs if r.rps]):.0f} "
            f"| {max(r.foreign_cpu for r in runs):.0%} "
            f"| {ratio} | {'; '.join(notes)} |"
        )
    lines += [
        "",
        "req/s counts OK responses only; p50/p99 are ghz's latency percentiles; the",
        "median over rounds is shown. errors excludes the calls still in flight when",
        "ghz's --duration ends (ghz closes the connection under them; at most -c per run).",
        "CPU is the fraction of one core used during the measured window: the server",
        "(pinned alone to its core) and ghz (sharing the other core with FerretDB).",
        "server CPU µs/req: the server's CPU time per OK response (including, in the (d)",
        "rows, the bcrypt work done in the same process, so it is not comparable there).",
        "foreign CPU: the most CPU (in cores) that processes other than this probe used",
        "during one of the row's measured windows; high values mean that row is noisy.",
        "vs sync: ratio to the sync server's row of the same letter.",
    ]
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def orchestrate(args: argparse.Namespace) -> int:
    if not shutil.which("taskset"):
        log("taskset (util-linux) is required")
        return 2
    args.ghz = args.ghz or _find_tool("ghz", "GHZ")
    if not args.ghz:
        log("ghz not found: put it in .cache/bin/ghz, on PATH, or set $GHZ")
        return 2
    ferret_bin = args.ferretdb or _find_tool("ferretdb", "FERRETDB")
    cases = [c for c in CASES if not args.only or any(c.key.startswith(o) for o in args.only)]
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="probe-server-model-") as tmpdir,
        _probe(args, Path(tmpdir)) as probe,
    ):
        probe.make_sqlite()
        wants_mongo = any(c.key.startswith("c") for c in cases)
        if wants_mongo and not ferret_bin:
            log("FerretDB not found ($FERRETDB, .cache/bin/ferretdb): Mongo rows skipped")
        if wants_mongo and (not ferret_bin or not probe.start_ferret(ferret_bin)):
            cases = [c for c in cases if not c.key.startswith("c")]
        results = probe.run(cases)
    elapsed = time.monotonic() - started
    print(
        f"Run {datetime.date.today().isoformat()} on {os.cpu_count()} cores; "
        f"Python {sys.version.split()[0]}, grpcio {_version('grpcio')}, "
        f"pymongo {_version('pymongo')}, bcrypt {_version('bcrypt')}; "
        f"server on CPU {SERVER_CPU}, ghz (and FerretDB) on CPU {LOAD_CPU}; "
        f"ghz -c {args.concurrency}, {args.warmup:g}s warm-up + {args.duration:g}s measured, "
        f"{args.repeats} rounds interleaved; total {elapsed:.0f}s.\n"
    )
    print(render(cases, results, args))
    return 0


@contextmanager
def _probe(args: argparse.Namespace, tmp: Path) -> Iterator[Probe]:
    probe = Probe(args, tmp)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield probe
    finally:
        probe.cleanup()
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    p_serve = sub.add_parser("serve", help="(internal) run one server variant")
    p_serve.add_argument("--model", choices=("sync", "aio"), required=True)
    p_serve.add_argument("--work", required=True)
    p_serve.add_argument("--workers", type=int, default=16)
    p_serve.add_argument("--sqlite", default="")
    p_serve.add_argument("--mongo", default="")
    p_hash = sub.add_parser("hash-load", help="(internal) keep bcrypt RPCs in flight")
    p_hash.add_argument("--target", required=True)
    p_hash.add_argument("--clients", type=int, default=4)
    p_hash.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=16, help="sync server pool size")
    parser.add_argument("--concurrency", type=int, default=50, help="ghz -c")
    parser.add_argument("--duration", type=float, default=8, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median is reported)")
    parser.add_argument("--budget", type=float, default=480, help="stop starting runs after this")
    parser.add_argument(
        "--quiet-wait", type=float, default=8, help="wait up to this long for other load to settle before a run"
    )
    parser.add_argument("--only", nargs="*", help="case key prefixes, e.g. a b-aio d")
    parser.add_argument("--ghz", help="path of ghz")
    parser.add_argument("--ferretdb", help="path of the FerretDB binary")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args)
    if args.cmd == "hash-load":
        return hash_load(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
