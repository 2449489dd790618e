"""Running the bridge: uvicorn on its own thread and event loop, beside grpcio's sync gRPC server.

`auth-server serve` builds the gRPC server (its own thread pool), then starts a BridgeServer that
forwards to it over loopback, and stops both on SIGTERM (bridge first, so in-flight HTTP calls can
still reach gRPC). `auth-server bridge --upstream HOST:PORT` runs a BridgeServer alone.
uvicorn runs off the main thread, so it installs no signal handlers: the CLI owns signals. Its
socket is bound here, before the thread starts, so a port in use fails start-up with a one-line
ConfigError (exit code 2), and port 0 works (the chosen port is known at once).

Trust: the gRPC guard believes `x-forwarded-for` only from AUTH_TRUSTED_PROXIES, or from a bridge
that sends the bridge secret (`with_bridge_secret`: AUTH_BRIDGE_SECRET, or one made at start-up
that only this process and its workers know). Loopback is not trusted as such. The bridge itself
keeps the operator's list for deciding whether to pass on an incoming X-Forwarded-For. A bridge on
another machine needs AUTH_BRIDGE_SECRET set on both sides, or its address in AUTH_TRUSTED_PROXIES.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import socket
import threading
import time

import uvicorn

from auth_server.http.app import create_app
from auth_server.infra.config import ConfigError, Settings

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


def with_bridge_secret(settings: Settings) -> Settings:
    """The settings with a bridge secret: AUTH_BRIDGE_SECRET, or a new one for this process.

    The in-process bridge sends it with every call, and the guard believes the bridge's
    x-forwarded-for because of it, not because the bridge connects from loopback: any process on
    the host can connect from loopback.
    """
    if settings.bridge_secret:
        return settings
    return dataclasses.replace(settings, bridge_secret=secrets.token_urlsafe(32))


def bind(addr: str) -> socket.socket:
    """A listening TCP socket on HOST:PORT ([v6]:PORT too); ConfigError naming AUTH_HTTP_ADDR when the
    address cannot be had."""
    host, port = _split(addr)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        # A setting that cannot be used, like the gRPC address (api/server.py): one line, exit code 2.
        why = os.strerror(error.errno) if error.errno else str(error)  # not create_server's long wording
        raise ConfigError(f"AUTH_HTTP_ADDR: HTTP bridge cannot listen on {addr}: {why}") from None
    # create_server makes the socket with proto 0, and accepted sockets inherit it; asyncio sets
    # TCP_NODELAY on a connection only when its proto is IPPROTO_TCP. Without it uvicorn's separate
    # header and body writes meet the client's delayed ACK: ~40 ms per request on a kept-alive
    # connection (issue 15). The same descriptor, re-wrapped with the protocol stated.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=listener.detach())


class BridgeServer:
    def __init__(self, settings: Settings, upstream: str, listener: socket.socket | None = None) -> None:
        """`listener`: a socket from `bind(settings.http_addr)` the caller made earlier (`serve` binds it
        first, so a busy HTTP port fails before the gRPC server starts); by default bound here."""
        self.upstream = upstream
        self._grace = settings.shutdown_grace
        app = create_app(settings, upstream)  # RouteError here, before anything listens
        self._socket = listener or bind(settings.http_addr)
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
