"""The ASGI application: HTTP/JSON in front of the auth.v1 gRPC services, for browsers.

It owns the HTTP side only and holds no auth logic: each request is matched against the route
table derived from the protos (routes.py), turned into the RPC's request message (transcode.py),
and sent through the generated stubs over one `grpc.aio` channel (so the event loop never blocks),
with the caller's credentials and hints as call metadata:
`authorization`, `x-tenant-id`, `x-device-name` as received, the browser's `User-Agent` as
`x-user-agent`, and the client address as `x-forwarded-for`. The bridge is a proxy: it appends its
peer to an incoming `X-Forwarded-For` only when that peer is itself in AUTH_TRUSTED_PROXIES, and
otherwise sends the peer alone, so a browser cannot choose the IP its session records. (The gRPC
server must trust the bridge's address in turn; `auth-server serve` arranges that: runner.py.)

Browser concerns live here too: a body limit (AUTH_MAX_MESSAGE_BYTES, 413), JSON only (415 for
another content type, 400 for malformed JSON: never a 500; the one exception is the unlock link's
confirmation page and its form post, unlock_page.py), `Cache-Control: no-store` on every API
answer, the refresh cookie (cookies.py), CORS for the AUTH_CORS_ORIGINS allow-list (Starlette's
middleware; nothing is allowed by default), `GET /healthz` from grpc.health.v1, and the static
demo page under `/demo` with a strict Content-Security-Policy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from auth_client.gen.auth.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_server.http import cookies, unlock_page
from auth_server.http.errors import HttpError, bad_request, from_rpc_error
from auth_server.http.routes import Match, Route, RouteTable, derive_routes
from auth_server.http.transcode import build_request, parse_json_object, response_json
from auth_server.infra.config import Settings
from auth_server.infra.proxies import BRIDGE_HEADER, TrustedProxies

log = logging.getLogger(__name__)

# The generated modules that serve each proto file: the stubs are found by service name in them.
STUB_MODULES = ((auth_pb2.DESCRIPTOR, auth_pb2_grpc), (admin_pb2.DESCRIPTOR, admin_pb2_grpc))
CALL_TIMEOUT = 30.0  # seconds for one forwarded call (bcrypt and SMTP included): 504 after that
HEALTH_TIMEOUT = 3.0
MAX_USER_AGENT = 512
MAX_FORWARDED_CHARS = 1024
FORWARDED_HEADERS = ("authorization", "x-tenant-id", "x-device-name")  # passed through as call metadata
CORS_HEADERS = ("authorization", "content-type", "x-tenant-id", "x-device-name")
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
DEMO_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
DEMO_FILES = {
    "/demo": ("demo.html", "text/html; charset=utf-8"),
    "/demo/": ("demo.html", "text/html; charset=utf-8"),
    "/demo/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/demo/demo.css": ("demo.css", "text/css; charset=utf-8"),
}


def _load_demo() -> dict[str, tuple[bytes, str]]:
    static = resources.files("auth_server.http").joinpath("static")
    return {path: (static.joinpath(name).read_bytes(), media) for path, (name, media) in DEMO_FILES.items()}


class Upstream:
    """The grpc.aio channel to the service and one generated stub per service, made on the serving loop."""

    def __init__(self, target: str, files: Iterable[tuple[FileDescriptor, Any]]) -> None:
        self.target = target
        self._files = tuple(files)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._health: health_pb2_grpc.HealthStub | None = None

    def open(self) -> None:
        if self._channel is not None:
            return
        self._channel = grpc.aio.insecure_channel(self.target, options=[("grpc.primary_user_agent", "auth-bridge")])
        for file, module in self._files:
            for service in file.services_by_name.values():
                self._stubs[service.full_name] = getattr(module, f"{service.name}Stub")(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    async def call(self, route: Route, request: Message, metadata: list[tuple[str, str]]) -> Message:
        self.open()
        method = getattr(self._stubs[route.service], route.method.name)
        return await method(request, metadata=metadata, timeout=CALL_TIMEOUT)

    async def health(self) -> str:
        self.open()
        assert self._health is not None
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            log.warning("health check of %s failed: %s", self.target, error.code().name)
            return "UNAVAILABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers={**API_HEADERS, **(headers or {})})


def error_response(error: HttpError) -> JSONResponse:
    return _json(error.body(), error.http_status, error.headers)


def _printable(value: str) -> str:
    if value.isascii() and value.isprintable():  # the common case, without a per-character loop
        return value
    return "".join(ch for ch in value if " " <= ch <= "~")


class BridgeApp:
    """The bridge proper (no CORS): lifespan opens/closes the upstream channel, http requests are served."""

    def __init__(self, settings: Settings, upstream: str) -> None:
        self.routes = RouteTable(derive_routes(file for file, _ in STUB_MODULES))
        self._upstream = Upstream(upstream, STUB_MODULES)
        self._limit = settings.max_message_bytes
        self._cookie = settings.refresh_cookie
        self._device_ttl = settings.device_token_ttl
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._bridge_secret = settings.bridge_secret
        self._demo = _load_demo()
        for route in self.routes.routes:
            log.debug("route %s %s -> %s", route.http_method, route.template, route.rpc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served (uvicorn runs with ws="none")
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except HttpError as error:
            response = error_response(error)
        except Exception:
            log.exception("bridge: unexpected error on %s %s", request.method, scope.get("path"))
            response = error_response(HttpError(500, "INTERNAL", "internal", "Internal error."))
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._upstream.open()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw.decode("latin-1")
        method = request.method
        if method in ("GET", "HEAD"):
            if path == "/healthz":
                status = await self._upstream.health()
                return _json({"status": status}, 200 if status == "SERVING" else 503)
            if path in self._demo:
                content, media = self._demo[path]
                return Response(content, media_type=media, headers=DEMO_HEADERS)
            if path == unlock_page.PAGE_PATH:  # the e-mailed link: a page that redeems nothing
                return unlock_page.confirmation_page(request.scope.get("query_string", b""))
        match, allowed = self.routes.find(method, path)
        if match is None:
            if allowed:
                raise HttpError(
                    405,
                    "UNIMPLEMENTED",
                    "method_not_allowed",
                    f"{method} is not allowed here; use {', '.join(allowed)}.",
                    headers={"Allow": ", ".join(allowed)},
                )
            raise HttpError(404, "NOT_FOUND", "route_not_found", "No such route.")
        if match.route.rpc in unlock_page.FORM_RPCS and unlock_page.is_form(request.headers.get("content-type", "")):
            return await self._forward_form(request, match)
        return await self._forward(request, match)

    async def _forward(self, request: Request, match: Match) -> Response:
        route = match.route
        body = None
        if route.body:
            raw = await self._read_body(request)
            if raw.strip():
                self._require_json(request)
                body = parse_json_object(raw)
        try:
            query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        except ValueError:
            raise bad_request("invalid_field", "Malformed query string.") from None
        message = build_request(route, match.variables, query, body)

        from_cookie = False
        if self._cookie and cookies.carries_token(route.request_type) and not message.refresh_token:
            token = request.cookies.get(cookies.COOKIE_NAME)
            if token:
                self._require_json(request)  # a cross-site form cannot send this without a preflight
                message.refresh_token = token
                from_cookie = True
        if (
            self._cookie
            and cookies.carries_token(route.request_type, cookies.DEVICE_FIELD)
            and not message.device_token
            and request.cookies.get(cookies.DEVICE_COOKIE)
        ):
            self._require_json(request)
            message.device_token = request.cookies[cookies.DEVICE_COOKIE]

        try:
            reply = await self._upstream.call(route, message, self._metadata(request))
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error.code(), error.details(), error.trailing_metadata())
            if from_cookie and failure.http_status == 401:
                failure.headers["Set-Cookie"] = cookies.clear_cookie()
            raise failure from None
        except grpc.aio.UsageError:  # the channel is closing: the bridge is shutting down
            raise HttpError(503, "UNAVAILABLE", "unavailable", "The service is shutting down; retry.") from None

        data = response_json(route, reply)
        headers: dict[str, str] = {}
        if self._cookie and cookies.carries_token(route.response_type) and reply.refresh_token:
            headers["Set-Cookie"] = cookies.set_cookie(reply.refresh_token, reply)
            if isinstance(data, dict):
                data.pop(cookies.JSON_FIELD, None)
        elif self._cookie and cookies.ends_own_session(route.rpc, message, request.cookies.get(cookies.COOKIE_NAME)):
            headers["Set-Cookie"] = cookies.clear_cookie()
        device_cookie = None
        if self._cookie and cookies.carries_token(route.response_type, cookies.DEVICE_FIELD) and reply.device_token:
            device_cookie = cookies.set_device_cookie(reply.device_token, self._device_ttl)
            if isinstance(data, dict):
                data.pop(cookies.DEVICE_JSON_FIELD, None)
        response = _json(data, 200, headers)
        if device_cookie:
            response.headers.append("Set-Cookie", device_cookie)  # a second one: a dict holds only one
        return response

    async def _forward_form(self, request: Request, match: Match) -> Response:
        """A browser's form post (the unlock page's button): the form's fields make the request, and the
        answer is an HTML page, errors included, because the browser displays whatever comes back."""
        try:
            fields = unlock_page.parse_form(await self._read_body(request))
            query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            message = build_request(match.route, match.variables, query, fields)
            await self._upstream.call(match.route, message, self._metadata(request))
        except HttpError as error:
            return unlock_page.result_page(error)
        except grpc.aio.AioRpcError as error:
            return unlock_page.result_page(from_rpc_error(error.code(), error.details(), error.trailing_metadata()))
        except grpc.aio.UsageError:  # the channel is closing: the bridge is shutting down
            closing = HttpError(503, "UNAVAILABLE", "unavailable", "The service is shutting down; retry.")
            return unlock_page.result_page(closing)
        return unlock_page.result_page(None)

    async def _read_body(self, request: Request) -> bytes:
        too_large = HttpError(
            413, "RESOURCE_EXHAUSTED", "payload_too_large", f"The request body exceeds {self._limit} bytes."
        )
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise bad_request("invalid_header", "Content-Length is not a number.")
        if length is not None and int(length) > self._limit:
            raise too_large  # refused before reading a byte of it
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _require_json(request: Request) -> None:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise HttpError(
                415, "INVALID_ARGUMENT", "unsupported_media_type", "Send the request body as application/json."
            )

    def _metadata(self, request: Request) -> list[tuple[str, str]]:
        metadata: list[tuple[str, str]] = []
        for name in FORWARDED_HEADERS:
            for value in request.headers.getlist(name):
                if _printable(value) != value:
                    raise bad_request("invalid_header", f"The {name} header must be printable ASCII.")
                metadata.append((name, value.strip()))
        user_agent = _printable(request.headers.get("user-agent", ""))[:MAX_USER_AGENT].strip()
        metadata.append(("x-user-agent", user_agent))
        forwarded = self._forwarded_for(request)
        if forwarded:
            metadata.append(("x-forwarded-for", forwarded))
            if self._bridge_secret:  # proves to the guard that this hop may be believed
                metadata.append((BRIDGE_HEADER, self._bridge_secret))
        return metadata

    def _forwarded_for(self, request: Request) -> str:
        peer = request.client.host if request.client else ""
        incoming = [_printable(v) for v in request.headers.getlist("x-forwarded-for")]
        if not (incoming and peer and peer in self._proxies):
            return peer
        chain = [hop.strip() for hop in ",".join(incoming).split(",") if hop.strip()] + [peer]
        while len(chain) > 1 and len(", ".join(chain)) > MAX_FORWARDED_CHARS:
            chain.pop(0)  # the leftmost hops are the least trusted: drop them first
        return ", ".join(chain)


def create_app(settings: Settings, upstream: str) -> ASGIApp:
    """The bridge wrapped in CORS for the configured origins (none: every cross-origin call is refused)."""
    bridge = BridgeApp(settings, upstream)
    methods = sorted({route.http_method for route in bridge.routes.routes} | {"GET"})
    return CORSMiddleware(
        bridge,
        allow_origins=list(settings.cors_origins),
        allow_methods=methods,
        allow_headers=list(CORS_HEADERS),
        allow_credentials=True,
        expose_headers=["WWW-Authenticate", "Retry-After"],
        max_age=600,
    )
