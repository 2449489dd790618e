"""The guarded handlers called in process, for `serve`'s own HTTP bridge: no loopback gRPC call.

`LocalCalls` serves the same servicer objects the gRPC server serves, and every call goes through the
guard's one transport-neutral decision (`Guard.decide_and_call`: the rule from the proto options,
authentication, tenant, client IP, the access log line, the metrics, the error boundary), exactly as
the gRPC interceptor does; there is no second copy of any rule here. A failure is raised as the
guard's AuthError, which the bridge maps to the same HTTP status and JSON body it would have built
from the gRPC status (auth_server/http/errors.py).

It implements `auth_server.http.backends.InProcess` (structurally: http never imports api); the
runtime hands it to the bridge (runtime/cli.py). Calls block (bcrypt, SMTP, the store), so the
bridge runs them on `executor`, the gRPC server's own handler pool: one bound on handler threads
for both transports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2

from auth_server.api.guard import Guard
from auth_server.domain.errors import AuthError, Code


class LocalContext:
    """The part of grpc.ServicerContext that unary handlers may touch, for a call with no gRPC under it.

    The servicers read what they need from `current_call()`, not from the context; this exists so a
    handler that does reach for its context (a generated default answering "not implemented", an
    abort) behaves, and its abort ends the call through the guard's error boundary like any AuthError.
    """

    def __init__(self, headers: dict[str, list[str]]) -> None:
        self._headers = headers
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((key, value) for key, values in self._headers.items() for value in values)

    def peer(self) -> str:
        return "local:bridge"

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # no stream end to call back at

    def send_initial_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        pass

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        pass

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        known = Code.__members__.get(code.name, Code.INTERNAL)
        raise AuthError(known, code.name, details or "The request could not be completed.")

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self.abort(status.code, status.details)


class LocalCalls:
    """Unary methods of the given services by full name ('/auth.v1.AuthService/GetMe'), guarded."""

    def __init__(
        self,
        guard: Guard,
        servicers: Iterable[tuple[FileDescriptor, object]],
        health_servicer: health.HealthServicer,
        executor: Executor,
    ) -> None:
        self.executor = executor
        self._guard = guard
        self._health = health_servicer
        self._methods: dict[str, tuple[Any, Callable[[Any, Any], Any]]] = {}
        for file, servicer in servicers:
            for service in file.services_by_name.values():
                for method in service.methods:
                    if method.client_streaming or method.server_streaming:
                        continue  # no HTTP route streams; WatchRevocations is gRPC only
                    name = f"/{service.full_name}/{method.name}"
                    self._methods[name] = (guard.rule_of(name), getattr(servicer, method.name))

    def call(self, method: str, request: Message, headers: dict[str, list[str]]) -> Message:
        """The handler's reply, or the guard's AuthError raised (denied, failed, or not served here)."""
        found = self._methods.get(method)
        if found is None:
            raise AuthError(Code.INTERNAL, "INTERNAL", "Internal error.")  # routes and servicers share protos
        rule, behavior = found
        reply, error = self._guard.decide_and_call(
            method, rule, headers, "", behavior, request, LocalContext(headers), forwarded_by_own_bridge=True
        )
        if error is not None:
            raise error
        return reply

    def health(self) -> str:
        """grpc.health.v1's overall status, as the stock servicer answers Check for ""."""
        context = LocalContext({})
        reply = self._health.Check(health_pb2.HealthCheckRequest(), context)
        if context.code is not None:  # not registered: what the loopback bridge hears as an error
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
