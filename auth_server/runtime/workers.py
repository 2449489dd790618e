"""`auth-server serve --workers N`: N server processes sharing one gRPC port, under a supervising parent.

Python runs one thread of Python code at a time per process, so one grpcio server uses about one core
however large its thread pool. More cores need more processes. Each worker is a full server
(`create_server(..., reuse_port=True)`) with its own store connection(s); they all listen on the same
address with SO_REUSEPORT, and the kernel spreads incoming *connections* across them. A client with
a single channel (one HTTP/2 connection) therefore talks to one worker only; load spreads over many
clients or channels. No state is shared between workers other than the store (DESIGN.md: all state
lives in the store), so this is the same as running N replicas behind a load balancer.

The parent does not serve gRPC itself. It:
- reserves the port (port 0 becomes a concrete port, held by a bound, never-listening SO_REUSEPORT
  socket, so no other program takes it while workers start or restart);
- creates the development JWT secret (SQLite store without AUTH_JWT_SECRET) before any worker runs,
  so the workers do not race to create it;
- starts the workers (`python -m auth_server.runtime.workers`, a fresh interpreter each: nothing of grpc is
  forked) and waits until each reports, over a pipe, that it is serving; a worker that fails to start
  stops everything and its exit code (2 configuration, 1 store/address) becomes the parent's;
- runs the HTTP bridge once, in the parent, in front of the shared port (AUTH_METRICS_ADDR is not
  served: each worker has its own registry and they cannot share its port);
- forwards SIGTERM/SIGINT to the workers, waits for them to finish their in-flight calls, exits 0;
- restarts a worker that dies while serving (at most N restarts a minute; past that it shuts
  everything down and exits 1).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from auth_server.infra.config import ConfigError, Settings, load_dev_secret, load_settings
from auth_server.runtime.banner import serving_banner
from auth_server.runtime.signals import StopRequest
from auth_server.store.base import StoreUnavailable

READY_FD_ENV = "AUTH_WORKER_READY_FD"
WORKER_ID_ENV = "AUTH_WORKER_ID"
START_TIMEOUT_S = 60.0
RESTART_WINDOW_S = 60.0
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1


def _say(message: str) -> None:
    print(f"auth-server: {message}", flush=True)


def _reserve(addr: str) -> tuple[socket.socket | None, str]:
    """For port 0: a concrete port, held by a bound (not listening) SO_REUSEPORT socket; else as given."""
    host, _, port = addr.rpartition(":")
    if int(port) != 0:
        return None, addr
    bare = host.strip("[]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(bare or None, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)
    return sock, f"{host}:{sock.getsockname()[1]}"


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started_at: float


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._count = count
        self._workers: list[_Worker] = []
        self._env: dict[str, str] = {}
        self._restarts: list[float] = []

    def _spawn(self, index: int) -> _Worker:
        """Start worker `index` and wait until it serves; on failure raise SystemExit with its code."""
        read_end, write_end = os.pipe()
        env = {**self._env, READY_FD_ENV: str(write_end), WORKER_ID_ENV: str(index)}
        try:
            proc = subprocess.Popen(  # a fresh interpreter: nothing of this process's grpc state is forked
                [sys.executable, "-m", "auth_server.runtime.workers"], env=env, pass_fds=(write_end,)
            )
        finally:
            os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], START_TIMEOUT_S)
            line = os.read(read_end, 64) if ready else b""
        finally:
            os.close(read_end)
        if not line.startswith(b"ready"):
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            print(f"auth-server: worker {index} did not start (exit code {code})", file=sys.stderr, flush=True)
            raise SystemExit(code if code in (EXIT_CONFIG, EXIT_UNAVAILABLE) else EXIT_UNAVAILABLE)
        return _Worker(index, proc, time.monotonic())

    def run(self) -> int:
        from auth_server.http.runner import BridgeServer, local_target, with_bridge_secret

        settings = self._settings = with_bridge_secret(self._settings)
        if not settings.jwt_secret:
            load_dev_secret(settings.dev_secret_file or "var/auth.db.jwt-secret")  # created once, here
        reservation, addr = _reserve(settings.grpc_addr)
        # The workers read their settings from the environment, as the parent did, plus what it resolved.
        self._env = {
            **os.environ,
            "AUTH_GRPC_ADDR": addr,
            "AUTH_STORE": settings.store_uri,
            "AUTH_BRIDGE_SECRET": settings.bridge_secret,  # so the workers believe the parent's bridge
        }
        stop = StopRequest()
        bridge = None
        try:
            for index in range(self._count):
                self._workers.append(self._spawn(index))
            if settings.metrics_addr:  # one registry per worker, and they cannot share one port
                print("auth-server: AUTH_METRICS_ADDR is not served with --workers > 1", file=sys.stderr, flush=True)
            bridge = BridgeServer(settings, local_target(addr)).start()
            print(serving_banner(settings, addr, bridge.url, workers=self._count), flush=True)
            code = self._supervise(stop)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        finally:
            _say("shutting down (finishing in-flight calls)")
            if bridge is not None:
                bridge.stop()
            self._stop_workers()
            if reservation is not None:
                reservation.close()
        _say("stopped")
        return code

    def _supervise(self, stop: StopRequest) -> int:
        while not stop.wait(0.5):
            for slot, worker in enumerate(self._workers):
                code = worker.proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(self._restarts) > self._count:
                    print("auth-server: workers keep dying; giving up", file=sys.stderr, flush=True)
                    return EXIT_UNAVAILABLE
                print(
                    f"auth-server: worker {worker.index} (pid {worker.proc.pid}) exited with {code}; restarting",
                    file=sys.stderr,
                    flush=True,
                )
                self._workers[slot] = self._spawn(worker.index)
        return 0

    def _stop_workers(self) -> None:
        for worker in self._workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace + 5
        for worker in self._workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()


def serve_workers(settings: Settings, count: int) -> int:
    """`auth-server serve --workers N` with N > 1."""
    return Supervisor(settings, count).run()


def _worker_main() -> int:
    """One worker: the gRPC server alone (no bridge), on the shared port, until SIGTERM/SIGINT."""
    from auth_server.api.server import create_server
    from auth_server.domain import devices
    from auth_server.runtime import logs

    stop = StopRequest()
    try:
        settings = load_settings()
        logs.configure(settings.log_level)
        app = create_server(settings, reuse_port=True)  # AUTH_BRIDGE_SECRET: the parent gave its bridge's
    except ConfigError as error:
        print(f"auth-server: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (StoreUnavailable, OSError, RuntimeError) as error:  # grpc raises RuntimeError for a busy port
        print(f"auth-server: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    threading.Thread(target=devices.warm_up, name="warm-up", daemon=True).start()  # off the first sign-in
    ready_fd = int(os.environ[READY_FD_ENV])
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    stop.wait()
    app.stop(settings.shutdown_grace)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
