"""The ASGI application: HTTP/JSON in front of the auth.v1 gRPC services, for browsers.

It owns the HTTP side only and holds no auth logic: each request is matched against the route
table derived from the protos (routes.py), turned into the RPC's request message (transcode.py),
and handed to a backend (backends.py): in `auth-server serve` the guarded handlers of this process,
run on the handler pool (the guard decides access exactly as for a gRPC call); in front of a gRPC
server elsewhere, the generated stubs over one `grpc.aio` channel. Either way the caller's
credentials and hints go along as what gRPC calls metadata:
`authorization`, `x-tenant-id`, `x-device-name` as received, the browser's `User-Agent` as
`x-user-agent`, and the client address as `x-forwarded-for`. The bridge is a proxy: it appends its
peer to an incoming `X-Forwarded-For` only when that peer is itself in AUTH_TRUSTED_PROXIES, and
otherwise sends the peer alone, so a browser cannot choose the IP its session records. (The guard
must trust the bridge in turn: in process it does; over gRPC `serve --workers` and `bridge` send the
bridge secret: runner.py.)

Browser concerns live here too: a body limit (AUTH_MAX_MESSAGE_BYTES, 413), JSON only (415 for
another content type, 400 for malformed JSON: never a 500; the one exception is the unlock link's
confirmation page and its form post, unlock_page.py), `Cache-Control: no-store` on every API
answer, the refresh cookie (cookies.py), CORS for the AUTH_CORS_ORIGINS allow-list (Starlette's
middleware; nothing is allowed by default), `GET /healthz` from grpc.health.v1, and the static
demo page under `/demo` with a strict Content-Security-Policy.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_client.gen.auth.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from auth_server.http import cookies, unlock_page
from auth_server.http.backends import Backend, Headers, InProcess, Local, Upstream
from auth_server.http.errors import HttpError, bad_request
from auth_server.http.routes import Match, RouteTable, derive_routes
from auth_server.http.transcode import build_request, parse_json_object, response_json
from auth_server.infra.config import Settings
from auth_server.infra.proxies import TrustedProxies

log = logging.getLogger(__name__)

# The generated modules that serve each proto file: the stubs are found by service name in them.
STUB_MODULES = ((auth_pb2.DESCRIPTOR, auth_pb2_grpc), (admin_pb2.DESCRIPTOR, admin_pb2_grpc))
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


# What JSONResponse.render makes, with one encoder for every response instead of one per json.dumps call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
_API_RAW = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in API_HEADERS.items()]
_API_NAMES = frozenset(name.lower() for name in API_HEADERS)


class ApiResponse(JSONResponse):
    """A JSONResponse with API_HEADERS (encoded once) and `headers`: the same status, header list and bytes
    as `JSONResponse(content, status, {**API_HEADERS, **headers})`, for less work on every answer."""

    def __init__(self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        if headers and not _API_NAMES.isdisjoint(name.lower() for name in headers):
            super().__init__(content, status_code, {**API_HEADERS, **headers})  # an API header replaced
            return
        self.status_code = status_code
        self.background = None
        self.body = body = _ENCODER.encode(content).encode("utf-8")
        raw = _API_RAW.copy()
        if headers:
            raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        raw.append((b"content-type", b"application/json"))
        self.raw_headers = raw


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return ApiResponse(content, status, headers)


def error_response(error: HttpError) -> JSONResponse:
    return _json(error.body(), error.http_status, error.headers)


def _printable(value: str) -> str:
    if value.isascii() and value.isprintable():  # the common case, without a per-character loop
        return value
    return "".join(ch for ch in value if " " <= ch <= "~")


class BridgeApp:
    """The bridge proper (no CORS): lifespan opens/closes the backend, http requests are served."""

    def __init__(self, settings: Settings, upstream: str, local: InProcess | None = None) -> None:
        """`local`: the guarded handlers of this process, called in place of the gRPC server at `upstream`."""
        self.routes = RouteTable(derive_routes(file for file, _ in STUB_MODULES))
        # Routes without path variables by (method, path): a dict lookup instead of trying every pattern,
        # kept only where the table's own search finds that same route first.
        self._literal: dict[tuple[str, str], Match] = {}
        for route in self.routes.routes:
            found, _ = self.routes.find(route.http_method, route.template)
            if not route.path_fields and found is not None and found.route is route:
                self._literal[(route.http_method, route.template)] = found
        self._backend: Backend = (
            Local(local) if local is not None else Upstream(upstream, STUB_MODULES, settings.bridge_secret)
        )
        self._limit = settings.max_message_bytes
        self._cookie = settings.refresh_cookie
        self._device_ttl = settings.device_token_ttl
        self._proxies = TrustedProxies(settings.trusted_proxies)
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
                    await self._backend.open()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._backend.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw.decode("latin-1")
        method = request.method
        if method in ("GET", "HEAD"):
            if path == "/healthz":
                status = await self._backend.health()
                return _json({"status": status}, 200 if status == "SERVING" else 503)
            if path in self._demo:
                content, media = self._demo[path]
                return Response(content, media_type=media, headers=DEMO_HEADERS)
            if path in unlock_page.LINKS:  # an e-mailed link (unlock, "This wasn't me"): a page that redeems nothing
                return unlock_page.confirmation_page(request.scope.get("query_string", b""), path)
        match = self._literal.get((method, path))
        allowed: tuple[str, ...] = ()
        if match is None:
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
            reply = await self._backend.call(route, message, self._headers(request))
        except HttpError as failure:
            if from_cookie and failure.http_status == 401:
                failure.headers["Set-Cookie"] = cookies.clear_cookie()
            raise

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
        """A browser's form post (a mailed link's page, its button): the form's fields make the request, and
        the answer is an HTML page, errors included, because the browser displays whatever comes back."""
        rpc, fields = match.route.rpc, {}
        try:
            fields = unlock_page.parse_form(await self._read_body(request))
            query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            message = build_request(match.route, match.variables, query, fields)
            reply = await self._backend.call(match.route, message, self._headers(request))
        except HttpError as error:  # the bridge's own refusals and the call's failures alike
            return unlock_page.result_page(error, rpc, fields)
        return unlock_page.result_page(None, rpc, fields, reply)

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

    def _headers(self, request: Request) -> Headers:
        """What the call carries as gRPC metadata would (the backend sends it as such, or hands it to the guard)."""
        headers: Headers = {}
        user_agent, incoming = None, []
        # One pass over the raw headers (names are lower case in ASGI) rather than a lookup per name.
        for raw_name, raw_value in request.scope["headers"]:
            name = raw_name.decode("latin-1")
            if name in FORWARDED_HEADERS:
                value = raw_value.decode("latin-1")
                if _printable(value) != value:
                    raise bad_request("invalid_header", f"The {name} header must be printable ASCII.")
                headers.setdefault(name, []).append(value.strip())
            elif name == "user-agent" and user_agent is None:
                user_agent = raw_value.decode("latin-1")
            elif name == "x-forwarded-for":
                incoming.append(_printable(raw_value.decode("latin-1")))
        headers["x-user-agent"] = [_printable(user_agent or "")[:MAX_USER_AGENT].strip()]
        forwarded = self._forwarded_for(request, incoming)
        if forwarded:
            headers["x-forwarded-for"] = [forwarded]
        return headers

    def _forwarded_for(self, request: Request, incoming: list[str]) -> str:
        peer = request.client.host if request.client else ""
        if not (incoming and peer and peer in self._proxies):
            return peer
        chain = [hop.strip() for hop in ",".join(incoming).split(",") if hop.strip()] + [peer]
        while len(chain) > 1 and len(", ".join(chain)) > MAX_FORWARDED_CHARS:
            chain.pop(0)  # the leftmost hops are the least trusted: drop them first
        return ", ".join(chain)


class CorsWhenOrigin:
    """Starlette's CORS middleware for requests that carry an Origin; the others (same-origin reads, every
    non-browser client) get the one thing it would add to them, `Vary: Origin`, without its per-request
    cost of header objects and a wrapped `send` (issue 15)."""

    def __init__(self, bridge: ASGIApp, cors: ASGIApp) -> None:
        self._bridge = bridge
        self._cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._bridge(scope, receive, send)
            return
        for name, _ in scope["headers"]:
            if name == b"origin":
                await self._cors(scope, receive, send)
                return

        async def vary_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _vary_origin(list(message.get("headers", ())))
            await send(message)

        await self._bridge(scope, receive, vary_send)


def _vary_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`Vary: Origin` merged in as the CORS middleware does: one Vary header, "Origin" last."""
    found = [i for i, (name, _) in enumerate(headers) if name.lower() == b"vary"]
    if not found:
        headers.append((b"vary", b"Origin"))
        return headers
    merged = b", ".join([*(headers[i][1] for i in found), b"Origin"])
    headers[found[0]] = (b"vary", merged)
    return [h for i, h in enumerate(headers) if i not in found[1:]]


def create_app(settings: Settings, upstream: str, local: InProcess | None = None) -> ASGIApp:
    """The bridge wrapped in CORS for the configured origins (none: every cross-origin call is refused)."""
    bridge = BridgeApp(settings, upstream, local)
    methods = sorted({route.http_method for route in bridge.routes.routes} | {"GET"})
    cors = CORSMiddleware(
        bridge,
        allow_origins=list(settings.cors_origins),
        allow_methods=methods,
        allow_headers=list(CORS_HEADERS),
        allow_credentials=True,
        expose_headers=["WWW-Authenticate", "Retry-After"],
        max_age=600,
    )
    return CorsWhenOrigin(bridge, cors)
