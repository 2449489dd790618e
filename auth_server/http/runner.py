"""Running the bridge: uvicorn on its own thread and event loop, beside grpcio's sync gRPC server.

`auth-server serve` builds the gRPC server (its own thread pool), then starts a BridgeServer that
forwards to it over loopback, and stops both on SIGTERM (bridge first, so in-flight HTTP calls can
still reach gRPC). `auth-server bridge --upstream HOST:PORT` runs a BridgeServer alone.
uvicorn runs off the main thread, so it installs no signal handlers: the CLI owns signals. Its
socket is bound here, before the thread starts, so a port in use fails start-up with a clear
OSError, and port 0 works (the chosen port is known at once).

Trust: the gRPC guard believes `x-forwarded-for` only from AUTH_TRUSTED_PROXIES. For the in-process
bridge, `trust_local_bridge` adds the addresses the bridge connects from (127.0.0.1, ::1 and the
gRPC listen IP when it is a literal one) to the gRPC server's settings only; the bridge itself keeps
the operator's list for deciding whether to pass on an incoming X-Forwarded-For. A bridge on
another machine must be listed in the gRPC server's AUTH_TRUSTED_PROXIES by the operator.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import socket
import threading
import time

import uvicorn

from auth_server.http.app import create_app
from auth_server.infra.config import Settings

LOOPBACK = ("127.0.0.1/32", "::1/128")
_ANY = ("", "0.0.0.0", "[::]", "::")  # noqa: S104 (recognising wildcard hosts, not binding)


def _rank(level: str) -> int:
    return logging.getLevelName(level)


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def local_target(grpc_addr: str, port: int | None = None) -> str:
    """Where a bridge on this machine reaches the gRPC server listening on `grpc_addr`."""
    host, listen_port = _split(grpc_addr)
    if host in _ANY:
        host = "[::1]" if host in ("[::]", "::") else "127.0.0.1"
    return f"{host}:{port if port is not None else listen_port}"


def trust_local_bridge(settings: Settings) -> Settings:
    """The gRPC server's settings with the in-process bridge's source addresses trusted as a proxy."""
    extra = list(LOOPBACK)
    host = local_target(settings.grpc_addr).rpartition(":")[0].strip("[]")
    try:
        extra.append(str(ipaddress.ip_address(host)))
    except ValueError:
        pass  # a host name: loopback covers "localhost"
    return dataclasses.replace(settings, trusted_proxies=tuple(dict.fromkeys([*settings.trusted_proxies, *extra])))


def bind(addr: str) -> socket.socket:
    """A listening TCP socket on HOST:PORT ([v6]:PORT too); OSError when the address cannot be had."""
    host, port = _split(addr)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        raise OSError(f"HTTP bridge cannot listen on {addr} (AUTH_HTTP_ADDR): {error.strerror or error}") from None


class BridgeServer:
    def __init__(self, settings: Settings, upstream: str) -> None:
        self.upstream = upstream
        self._grace = settings.shutdown_grace
        app = create_app(settings, upstream)  # RouteError here, before anything listens
        self._socket = bind(settings.http_addr)
        host, self.port = self._socket.getsockname()[:2]
        self.host = f"[{host}]" if ":" in host else host
        # uvicorn's start/stop chatter only at DEBUG: the CLI prints the readiness line itself.
        uvicorn_level = "DEBUG" if settings.log_level == "DEBUG" else max(settings.log_level, "WARNING", key=_rank)
        config = uvicorn.Config(
            app,
            log_config=None,  # keep the process's logging as configured by the CLI
            log_level=uvicorn_level.lower(),
            access_log=False,
            proxy_headers=False,  # the bridge decides what X-Forwarded-For is worth (app.py)
            server_header=False,
            lifespan="on",
            http="h11",
            ws="none",
            loop="asyncio",
            timeout_graceful_shutdown=max(1, math.ceil(self._grace)),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http-bridge", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> BridgeServer:
        """Start serving; OSError if the bridge did not come up."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the HTTP bridge on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown grace), close the channel."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self._grace + 5)
        self._socket.close()
