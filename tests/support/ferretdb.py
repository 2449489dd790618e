"""A real server speaking the MongoDB wire protocol for tests, never a mock.

In order of preference: the server at `AUTH_TEST_MONGODB_URI`; a `mongod` on PATH; FerretDB 1.24
with its SQLite handler (`$AUTH_FERRETDB_BIN`, else `<repo>/.cache/bin/ferretdb`, which scripts/test
builds). A server we start lives in a temporary directory on a free loopback port and is stopped
afterwards. When none can be had the tests are skipped loudly, or fail under `CI=true`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

REPO = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 30.0  # a cold FerretDB start on a busy machine takes a few seconds at most


# FerretDB 1.24 runs findAndModify and update as a read, then a separate write of the whole document
# (FerretDB#3040); the MongoDB adapter detects it and serialises its own writes (auth_server/store/mongo.py).


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """Skip loudly (a warning in the summary as well as the skip), or fail under CI=true."""
    message = f"no MongoDB server for the MongoDB tests: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    warnings.warn(message + " -- MongoDB TESTS SKIPPED", stacklevel=2)
    pytest.skip(message)


@contextlib.contextmanager
def mongodb_server() -> Iterator[str]:
    """Yield the URI of a MongoDB-compatible server for the duration of the block."""
    uri = os.environ.get("AUTH_TEST_MONGODB_URI")
    if uri:
        yield uri
        return
    mongod = shutil.which("mongod")
    ferretdb = Path(os.environ.get("AUTH_FERRETDB_BIN") or REPO / ".cache" / "bin" / "ferretdb")
    if mongod:
        argv = [
            mongod,
            "--dbpath",
            "{dir}",
            "--bind_ip",
            "127.0.0.1",
            "--port",
            "{port}",
            "--logpath",
            "{dir}/mongod.log",
        ]
    elif ferretdb.is_file() and os.access(ferretdb, os.X_OK):
        argv = [
            str(ferretdb),
            "--handler=sqlite",
            "--sqlite-url=file:{dir}/",
            "--listen-addr=127.0.0.1:{port}",
            "--state-dir={dir}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=warn",
        ]
    else:
        unavailable(
            "AUTH_TEST_MONGODB_URI is unset, there is no mongod on PATH and no FerretDB binary at "
            f"{ferretdb} (scripts/test builds it; or set AUTH_FERRETDB_BIN)"
        )
    with tempfile.TemporaryDirectory(prefix="auth-mongo-") as workdir, _started(argv, workdir) as uri:
        yield uri


@contextlib.contextmanager
def _started(argv_template: list[str], workdir: str) -> Iterator[str]:
    port = free_port()
    argv = [arg.format(dir=workdir, port=port) for arg in argv_template]
    log_path = Path(workdir) / "server.out"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        uri = f"mongodb://127.0.0.1:{port}/"
        problem = _wait_until_ready(process, uri)
        if problem:
            output = log_path.read_text(errors="replace").strip()[-1500:]
            unavailable(f"{argv[0]} did not start ({problem}); its output:\n{output}")
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], uri: str) -> str | None:
    """Poll with pings until the server answers; a description of the problem if it never does."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    # Each ping waits (at most 250 ms) for the driver to reach the server: a bounded poll, not a sleep.
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"exited with status {process.returncode}"
            try:
                client.admin.command("ping")
                return None
            except PyMongoError:
                continue
        return f"no answer within {_START_TIMEOUT_S:.0f} s"
    finally:
        client.close()
