"""What the bridge calls to run an RPC: the guarded handlers in this process, or a gRPC server over the wire.

`Local` is `auth-server serve`'s bridge: it hands the request message and the caller's headers to an
`InProcess` (the API layer's LocalCalls, injected by the runtime: http never imports api), which runs
the gRPC service's own guard decision and handler on the handler pool. No loopback gRPC call, no
second serialisation, and the guard still decides every call (docs/performance.md, issue 15).

`Upstream` is the bridge in front of a gRPC server elsewhere (`auth-server bridge --upstream`, and the
parent of `serve --workers N`, whose handlers live in the worker processes): one `grpc.aio` channel, the
headers sent as call metadata, and the bridge secret with x-forwarded-for so the guard believes it.

Both answer the reply message, or raise HttpError built the same way from the same failure (errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auth_server.domain.errors import AuthError
from auth_server.http.errors import HttpError, from_auth_error, from_rpc_error
from auth_server.http.routes import Route
from auth_server.infra.proxies import BRIDGE_HEADER

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0  # seconds for one call (bcrypt and SMTP included): 504 after that
HEALTH_TIMEOUT = 3.0
Headers = dict[str, list[str]]  # lower-case name -> values, as gRPC metadata would carry them


def _closing() -> HttpError:
    return HttpError(503, "UNAVAILABLE", "unavailable", "The service is shutting down; retry.")


def _deadline() -> HttpError:
    # What the loopback bridge answers when its call's deadline passes (errors.py: DEADLINE_EXCEEDED).
    return from_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, None, None)


class Backend(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, route: Route, request: Message, headers: Headers) -> Message:
        """The reply; HttpError for any failure."""
        ...

    async def health(self) -> str:
        """grpc.health.v1's overall ServingStatus name ("SERVING", ...)."""
        ...


class InProcess(Protocol):
    """The guarded handlers of this process (auth_server/api/local.py's LocalCalls)."""

    executor: Executor  # where calls run: they block (bcrypt, SMTP, the store)

    def call(self, method: str, request: Message, headers: Headers) -> Message:
        """Method '/pkg.Service/Method'; the reply, or the guard's AuthError raised."""
        ...

    def health(self) -> str: ...


class Local:
    """The bridge of `serve`: the guarded handlers called in this process, on the handler pool."""

    def __init__(self, calls: InProcess) -> None:
        self._calls = calls
        self._names: dict[str, str] = {}  # route.rpc -> '/pkg.Service/Method'

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, route: Route, request: Message, headers: Headers) -> Message:
        name = self._names.get(route.rpc)
        if name is None:
            name = self._names[route.rpc] = f"/{route.service}/{route.method.name}"
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[Message] = loop.create_future()
        call = self._calls.call

        def run() -> None:  # on a pool thread
            try:
                outcome: tuple[Message | None, BaseException | None] = (call(name, request, headers), None)
            except BaseException as error:  # AuthError; anything else is the guard's bug, still answered
                outcome = (None, error)
            try:
                loop.call_soon_threadsafe(_settle, pending, *outcome)
            except RuntimeError:  # the loop is closed: nobody waits for this answer any more
                pass

        # Rather than run_in_executor: one callback back to the loop instead of two futures chained
        # (wrap_future's callbacks and state copies cost more than the rest of this hand-off).
        try:
            self._calls.executor.submit(run)
        except RuntimeError:  # the pool is shut down: the process is stopping
            raise _closing() from None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            pending.cancel()

        # The deadline as a plain timer rather than asyncio.wait_for: this path runs on every request.
        timer = loop.call_later(CALL_TIMEOUT, expire)
        try:
            return await pending
        except AuthError as error:
            raise from_auth_error(error) from None
        except asyncio.CancelledError:
            if not expired:
                raise  # the request itself was cancelled (client gone, shutdown)
            raise _deadline() from None  # the handler goes on on its thread; its answer is dropped
        finally:
            timer.cancel()

    async def health(self) -> str:
        return self._calls.health()  # a dict lookup under a lock: no need for the pool


def _settle(pending: asyncio.Future[Message], reply: Message | None, error: BaseException | None) -> None:
    if pending.done():  # cancelled meanwhile: the deadline passed, or the client went away
        return
    if error is not None:
        pending.set_exception(error)
    else:
        pending.set_result(reply)  # type: ignore[arg-type]


class Upstream:
    """A gRPC server elsewhere, over one grpc.aio channel and one generated stub per service."""

    def __init__(self, target: str, files: Iterable[tuple[FileDescriptor, Any]], bridge_secret: str) -> None:
        self.target = target
        self._files = tuple(files)
        self._bridge_secret = bridge_secret
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._health: health_pb2_grpc.HealthStub | None = None

    def _open(self) -> None:
        if self._channel is not None:
            return
        self._channel = grpc.aio.insecure_channel(self.target, options=[("grpc.primary_user_agent", "auth-bridge")])
        for file, module in self._files:
            for service in file.services_by_name.values():
                self._stubs[service.full_name] = getattr(module, f"{service.name}Stub")(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def open(self) -> None:
        self._open()  # made on the serving loop: grpc.aio binds a channel to the loop it is made on

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    async def call(self, route: Route, request: Message, headers: Headers) -> Message:
        self._open()
        metadata = [(name, value) for name, values in headers.items() for value in values]
        if self._bridge_secret and "x-forwarded-for" in headers:
            metadata.append((BRIDGE_HEADER, self._bridge_secret))  # proves to the guard that this hop may be believed
        method = getattr(self._stubs[route.service], route.method.name)
        try:
            return await method(request, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error.code(), error.details(), error.trailing_metadata()) from None
        except grpc.aio.UsageError:  # the channel is closing: the bridge is shutting down
            raise _closing() from None

    async def health(self) -> str:
        self._open()
        assert self._health is not None
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            log.warning("health check of %s failed: %s", self.target, error.code().name)
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
