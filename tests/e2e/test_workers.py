"""`auth-server serve --workers N`: N server processes on one port (SO_REUSEPORT) under a supervising parent."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.process import ServerProcess

pytestmark = pytest.mark.e2e


def _workers(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def _serving(addr: str) -> bool:
    # A fresh channel per check: SO_REUSEPORT spreads connections, not calls, over the workers.
    with grpc.insecure_channel(addr) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_workers_share_the_port_restart_when_killed_and_stop_on_sigterm(tmp_path: Path) -> None:
    env = {"AUTH_STORE": f"sqlite:///{tmp_path}/auth.db", "AUTH_BCRYPT_ROUNDS": "4"}
    server = ServerProcess(env, args=("serve", "--workers", "2")).start()
    try:
        assert server.proc is not None
        assert "2 worker processes" in "".join(server.output)
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        assert all(_serving(server.addr) for _ in range(6))

        os.kill(workers[0], signal.SIGKILL)  # the supervisor starts a new worker in its place
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            len(_workers(server.proc.pid)) != 2 or workers[0] in _workers(server.proc.pid)
        ):
            time.sleep(0.2)
        assert len(_workers(server.proc.pid)) == 2 and workers[0] not in _workers(server.proc.pid)
        assert all(_serving(server.addr) for _ in range(6))
        remaining = _workers(server.proc.pid)
    finally:
        code = server.stop()
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in remaining)  # no worker outlives the parent
