"""Helpers shared by the measurement scripts (scripts/bench.py, scripts/probe_server_model.py).

Finding tools (.cache/bin first), CPU accounting from /proc, waiting for a quiet machine, reading
ghz's JSON report, and starting a FerretDB (MongoDB wire protocol, SQLite handler) for a run.
Measurement code only: nothing here is part of the service.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# grpc.health.v1 as ghz needs it (the service's reflection cannot serve method symbols to ghz).
HEALTH_PROTO = """\
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_tool(name: str, env: str) -> str | None:
    """$ENV, else .cache/bin/NAME (scripts/provision builds it there), else PATH."""
    if os.environ.get(env):
        return os.environ[env]
    local = REPO / ".cache" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def cpu_seconds(*pids: int) -> float:
    """User+system CPU seconds used so far by the given processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine so far (all cores)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, threshold: float = 0.25, step: float = 0.5) -> float | None:
    """Wait until processes use under `threshold` cores in all (sampled over `step` s).

    Returns None once quiet, or the seconds waited if it never got quiet within `max_wait`.
    Call it while nothing of the measurement is busy: whatever is busy then is someone else.
    """
    start = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(step)
        if (machine_busy_seconds() - before) / step < threshold:
            return None
        if time.monotonic() - start >= max_wait:
            return time.monotonic() - start


def is_cut(message: str) -> bool:
    """A call ghz cut off itself when its --duration ended (not a server error)."""
    return "Unavailable" in message and (
        "use of closed network connection" in message
        or "transport is closing" in message
        or "client connection is closing" in message
    )


def latency_ms(report: dict[str, Any]) -> dict[int, float]:
    """ghz's latency percentiles (10, 25, 50, 75, 90, 95, 99) in milliseconds."""
    return {int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}


def start_ferretdb(binary: str, state: Path, cpus: str | None, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """FerretDB 1.24 with its SQLite handler in `state`, optionally pinned (taskset -c CPUS, GOMAXPROCS).

    Returns the process and its URI once it answers a ping (RuntimeError if it never does).
    """
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    port = free_port()
    state.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary,
        "--handler=sqlite",
        f"--sqlite-url=file:{state}/",
        f"--listen-addr=127.0.0.1:{port}",
        f"--state-dir={state}",
        "--debug-addr=-",
        "--telemetry=disable",
        "--log-level=warn",
    ]
    env = dict(os.environ)
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
        env["GOMAXPROCS"] = str(len(cpus.split(",")))
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                client.admin.command("ping")
                return proc, uri
            except PyMongoError:
                if time.monotonic() > end or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError(f"FerretDB did not come up: {log_path.read_text()[-500:]}") from None
                time.sleep(0.2)
    finally:
        client.close()


def index_ferret_ids(db_file: Path, collections: list[str] | None = None) -> int:
    """Give FerretDB's tables in one database file an index that its `_id` lookups can use.

    FerretDB 1.24's SQLite backend indexes `_id` as `_ferretdb_sjson->"_id"` but queries
    `_ferretdb_sjson->'$._id' = ?`; SQLite does not match the two expressions, so every find_one by
    _id scans the table (~60 lookups/s on 10k documents: the store, not the server, would be
    measured). A real MongoDB answers these from its _id index, so this adds an index on the exact
    expression the queries use, to every collection (or the named ones). Returns how many.
    """
    conn = sqlite3.connect(db_file, timeout=10)
    done = 0
    try:
        rows = conn.execute("SELECT name, table_name FROM _ferretdb_collections").fetchall()
        for name, table in rows:
            if collections is not None and name not in collections:
                continue
            if not re.fullmatch(r"[a-z0-9_]+", table):
                raise RuntimeError(f"unexpected FerretDB table name {table!r}")
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{table}_id_path" ON "{table}" (_ferretdb_sjson->\'$._id\')')
            conn.commit()
            plan = conn.execute(
                f"EXPLAIN QUERY PLAN SELECT 1 FROM \"{table}\" WHERE _ferretdb_sjson->'$._id' = ?",  # noqa: S608 (name checked above)
                ('"x"',),
            ).fetchall()
            if not any("USING INDEX" in str(row) for row in plan):
                log(f"warning: FerretDB _id lookups on {name} still scan: {plan}")
            done += 1
    finally:
        conn.close()
    return done
