"""Running the bridge: uvicorn on its own thread and event loop, beside grpcio's sync gRPC server.

`auth-server serve` builds the gRPC server (its own thread pool), then starts a BridgeServer that
calls the same guarded handlers in process on that pool (backends.py), and stops both on SIGTERM
(bridge first, so in-flight HTTP calls can finish). `auth-server bridge --upstream HOST:PORT` runs a
BridgeServer alone, forwarding over gRPC; so does the parent of `serve --workers N`.
uvicorn runs off the main thread, so it installs no signal handlers: the CLI owns signals. Its
socket is bound here, before the thread starts, so a port in use fails start-up with a one-line
ConfigError (exit code 2), and port 0 works (the chosen port is known at once).

Trust: the gRPC guard believes `x-forwarded-for` only from AUTH_TRUSTED_PROXIES, from the bridge of
its own process (in process: nothing on the wire to forge), or from a bridge that sends the bridge
secret (`with_bridge_secret`: AUTH_BRIDGE_SECRET, or one made at start-up that only this process and
its workers know). Loopback is not trusted as such. The bridge itself
keeps the operator's list for deciding whether to pass on an incoming X-Forwarded-For. A bridge on
another machine needs AUTH_BRIDGE_SECRET set on both sides, or its address in AUTH_TRUSTED_PROXIES.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import secrets
import socket
import threading
import time

import uvicorn

from auth_server.http.app import create_app
from auth_server.http.backends import InProcess
from auth_server.infra.config import ConfigError, Settings

_ANY = ("", "0.0.0.0", "[::]", "::")  # noqa: S104 (recognising wildcard hosts, not binding)
# The compiled HTTP parser and event loop when installed (both are dependencies): per request they cost
# about a third less than h11 and asyncio's loop (docs/performance.md, issue 15). The pure-Python pair
# still works where a wheel is missing.
LOOP_IMPL = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
# h11 refuses a request head over 16 KiB by itself; httptools keeps buffering it. The same bound here.
MAX_HEAD_BYTES = 16 * 1024


def _http_impl() -> str | type:
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHead(HttpToolsProtocol):
        """uvicorn's httptools protocol with a bound on the request line and headers (400 past it).

        Checked once a head is complete, and on every chunk while one is not, so a head that never ends
        is refused too; three overridden callbacks per request (one per header cost a tenth of the
        bridge's request in instructions).
        """

        _in_head = False
        _pending = 0  # bytes received while the current head is incomplete

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_headers_complete(self) -> None:
            self._in_head, self._pending = False, 0
            if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > MAX_HEAD_BYTES:
                raise ValueError("request head too large")  # the parser reports it: uvicorn answers 400
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                # At worst this chunk also ended a pipelined body: the bound is met a little early.
                self._pending += len(data)
                if self._pending > MAX_HEAD_BYTES:
                    self.send_400_response("Request header fields too large.")

    return BoundedHead


HTTP_IMPL = _http_impl()


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
    def __init__(
        self,
        settings: Settings,
        upstream: str,
        listener: socket.socket | None = None,
        local: InProcess | None = None,
    ) -> None:
        """`listener`: a socket from `bind(settings.http_addr)` the caller made earlier (`serve` binds it
        first, so a busy HTTP port fails before the gRPC server starts); by default bound here.
        `local`: the guarded handlers of this process (`serve`), called in place of the gRPC server at
        `upstream`."""
        self.upstream = upstream
        self._grace = settings.shutdown_grace
        app = create_app(settings, upstream, local)  # RouteError here, before anything listens
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
            http=HTTP_IMPL,
            ws="none",
            loop=LOOP_IMPL,
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
