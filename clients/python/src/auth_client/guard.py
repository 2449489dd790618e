"""A server interceptor other Python gRPC services mount to protect their methods with auth.v1 tokens.

    rules = {
        "/example.v1.Orders/ListOrders": "authenticated",
        "/example.v1.Orders/CancelOrder": {"admin"},
        "/grpc.health.v1.Health/*": "public",
    }
    server = grpc.server(pool, interceptors=[Guard(rules, AuthClient("auth:50051"))])
    ...
    def ListOrders(self, request, context):
        me = current_identity()  # user, session_id, tenant of the caller

This module owns the decision for each call:
- Rules: one per full method name ("/pkg.Service/Method"; "/pkg.Service/*" covers a whole service, an
  exact name wins): "public", "authenticated", or a non-empty collection of role names ("user",
  "manager", "admin"). Fail closed: a method without a rule is denied with PERMISSION_DENIED /
  ACCESS_RULE_MISSING, even to callers with a valid token. Unknown methods stay UNIMPLEMENTED.
- Credentials: `authorization: Bearer <token>` and `x-tenant-id` from the call's metadata, checked by
  this service's `Introspect` through an `AuthClient` / `AsyncAuthClient` (the x-tenant-id is passed
  on; when the caller sends none, the client's bound tenant or the auth service's default applies).
- Cache: Introspect answers (live or not) are kept in a bounded LRU keyed by (tenant, SHA-256 of the
  token) for `cache_ttl` seconds (DEFAULT_CACHE_TTL = 5 s). That TTL is the revocation delay: a token
  revoked, expired, locked out or whose role changed on the auth service keeps its cached answer here
  for at most `cache_ttl` seconds. `cache_ttl=0` turns caching off (every call introspects).
- Answers: no token -> UNAUTHENTICATED / TOKEN_MISSING; a token that is not even shaped like one ->
  UNAUTHENTICATED / TOKEN_INVALID; an inactive token -> UNAUTHENTICATED with the auth service's reason
  (TOKEN_INVALID, TOKEN_EXPIRED, SESSION_REVOKED, ACCOUNT_LOCKED); wrong role -> PERMISSION_DENIED /
  INSUFFICIENT_ROLE; a bad tenant -> the auth service's own INVALID_ARGUMENT / NOT_FOUND answer; auth
  service unreachable or failing -> UNAVAILABLE / AUTH_SERVICE_UNAVAILABLE (never a pass). All with
  google.rpc.ErrorInfo, domain "auth.v1".
- Identity: handlers of protected methods read the caller with `current_identity()` (a ContextVar set
  for the duration of the call, so concurrent calls never see each other's caller).

`Guard` is for grpcio's sync server, `AsyncGuard` for grpc.aio servers; they share everything but the
transport calls.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from auth_client.client import AsyncAuthClient, AuthClient
from auth_client.errors import AuthServiceError, rich_status
from auth_client.gen.auth.v1 import access_pb2, auth_pb2
from auth_client.interceptors import AUTHORIZATION, TENANT

log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL = 5.0  # seconds: also the longest a revoked token is still accepted here
DEFAULT_CACHE_SIZE = 10_000  # entries (tenant, token hash): bounds memory under a flood of tokens
DEFAULT_INTROSPECT_TIMEOUT = 2.0  # seconds: a slow auth service must not hold our handlers for long

ROLE_NAMES = {access_pb2.ROLE_USER: "user", access_pb2.ROLE_MANAGER: "manager", access_pb2.ROLE_ADMIN: "admin"}
RuleSpec = Literal["public", "authenticated"] | Collection[str | int]
_METHOD_NAME = re.compile(r"^/[A-Za-z_][\w.]*/(?:[A-Za-z_]\w*|\*)$")


@dataclass(frozen=True)
class Rule:
    public: bool
    roles: frozenset[str] | None  # None: any authenticated caller


def parse_rules(rules: Mapping[str, RuleSpec]) -> dict[str, Rule]:
    """Validate the rules once, at start-up, so a typo fails the service's start rather than a call."""
    table: dict[str, Rule] = {}
    for method, spec in rules.items():
        if not _METHOD_NAME.match(method):
            raise ValueError(f"{method!r}: rule keys are full method names like '/pkg.Service/Method'")
        if spec == "public" or spec == "authenticated":
            table[method] = Rule(public=spec == "public", roles=None)
            continue
        if isinstance(spec, str):  # a bare "admin" would be a one-letter-typo away from "public"
            raise ValueError(f"{method}: rule must be 'public', 'authenticated' or a collection of roles, got {spec!r}")
        roles = frozenset(ROLE_NAMES.get(r, "") if isinstance(r, int) else r.lower() for r in spec)
        if not roles or not roles <= set(ROLE_NAMES.values()):
            raise ValueError(f"{method}: roles must be a non-empty subset of {sorted(ROLE_NAMES.values())}")
        table[method] = Rule(public=False, roles=roles)
    return table


@dataclass(frozen=True)
class Identity:
    """The caller of a protected method, as the auth service knows them right now (within the cache TTL)."""

    user: auth_pb2.User
    session_id: str
    tenant: str

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def role(self) -> str:
        """ "user", "manager" or "admin"."""
        return ROLE_NAMES.get(self.user.role, "")


_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("auth_client_identity", default=None)


def current_identity() -> Identity:
    """The caller of the running protected call; LookupError in a public method or outside a guarded call."""
    identity = _identity.get()
    if identity is None:
        raise LookupError("no authenticated caller: the method is public or the call did not pass the guard")
    return identity


def optional_identity() -> Identity | None:
    """The caller if the running call passed an authenticated rule, else None."""
    return _identity.get()


class IntrospectionCache:
    """A bounded LRU of Introspect answers that expire `ttl` seconds after they were fetched.

    Thread-safe (the sync server runs handlers on many threads). `clock` is injectable so tests can
    move time instead of sleeping.
    """

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("ttl must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, auth_pb2.IntrospectResponse]] = OrderedDict()

    @staticmethod
    def key(tenant: str | None, token: str) -> tuple[str, bytes]:
        # Hash the token: the cache then never holds a usable credential (heap dumps, debuggers).
        return (tenant or "", hashlib.sha256(token.encode()).digest())

    def get(self, tenant: str | None, token: str) -> auth_pb2.IntrospectResponse | None:
        key = self.key(tenant, token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, tenant: str | None, token: str, answer: auth_pb2.IntrospectResponse) -> None:
        ttl = self.ttl
        if answer.active and answer.HasField("expires_at"):
            # Never keep an answer past the token's own expiry (wall clock, as the token's exp is).
            ttl = min(ttl, answer.expires_at.ToSeconds() - time.time())
        if ttl <= 0:
            return
        key = self.key(tenant, token)
        with self._lock:
            self._entries[key] = (self._clock() + ttl, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class _Denied(Exception):
    """A call the guard refuses: the status it answers with."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = rich_status(code, reason, message)


_NO_RULE = (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_RULE_MISSING", "This method declares no access rule.")
_TOKEN_MISSING = (
    grpc.StatusCode.UNAUTHENTICATED,
    "TOKEN_MISSING",
    "An access token is required: send 'authorization: Bearer <token>'.",
)
_TOKEN_INVALID = (
    grpc.StatusCode.UNAUTHENTICATED,
    "TOKEN_INVALID",
    "The access token is not valid, has expired, or its session has ended.",
)


class _Gate:
    """The decision logic both guards share; only the Introspect call differs between them."""

    def __init__(
        self,
        rules: Mapping[str, RuleSpec],
        cache_ttl: float,
        cache_size: int,
        clock: Callable[[], float],
        introspect_timeout: float,
    ) -> None:
        self.rules = parse_rules(rules)
        self.cache = IntrospectionCache(cache_ttl, cache_size, clock)
        self.introspect_timeout = introspect_timeout

    def rule(self, method: str) -> Rule:
        rule = self.rules.get(method) or self.rules.get(method.rpartition("/")[0] + "/*")
        if rule is None:
            raise _Denied(*_NO_RULE)
        return rule

    @staticmethod
    def credentials(metadata: Sequence[tuple[str, Any]] | None) -> tuple[str | None, str]:
        """(tenant or None, bearer token) from the call's metadata."""
        tokens: list[str] = []
        tenants: list[str] = []
        for key, value in metadata or ():
            if key == AUTHORIZATION and isinstance(value, str):
                tokens.append(value)
            elif key == TENANT and isinstance(value, str):
                tenants.append(value)
        if len(tenants) > 1:  # which one would the auth service have meant? Refuse, as it does.
            raise _Denied(grpc.StatusCode.INVALID_ARGUMENT, "TENANT_INVALID", "Send one x-tenant-id.")
        if not tokens:
            raise _Denied(*_TOKEN_MISSING)
        scheme, _, token = tokens[0].strip().partition(" ")
        if len(tokens) > 1 or scheme.lower() != "bearer" or not token.strip():
            raise _Denied(*_TOKEN_INVALID)
        return (tenants[0] if tenants else None), token.strip()

    @staticmethod
    def unreachable(method: str, error: AuthServiceError) -> _Denied:
        """What the caller gets when Introspect itself failed."""
        if error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) and error.reason:
            # TENANT_INVALID / TENANT_NOT_FOUND: the caller's own mistake, answered as the auth service does.
            return _Denied(error.code, error.reason, error.message)
        log.warning("auth service introspection failed during %s: %s", method, error)
        # Fail closed: no answer from the auth service is never a yes.
        return _Denied(
            grpc.StatusCode.UNAVAILABLE, "AUTH_SERVICE_UNAVAILABLE", "The auth service is unavailable; retry later."
        )

    @staticmethod
    def judge(rule: Rule, answer: auth_pb2.IntrospectResponse) -> Identity:
        if not answer.active:
            # The auth service says why (TOKEN_EXPIRED: refresh; SESSION_REVOKED: log in again).
            code, reason, message = _TOKEN_INVALID
            raise _Denied(code, answer.inactive_reason or reason, message)
        user = auth_pb2.User()
        user.CopyFrom(answer.user)  # each call gets its own copy: a handler mutating it cannot touch the cache
        identity = Identity(user=user, session_id=answer.session_id, tenant=answer.tenant_id)
        if rule.roles is not None and identity.role not in rule.roles:
            raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_ROLE", "Your role does not allow this call.")
        return identity


_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Any, bool], Any]) -> grpc.RpcMethodHandler:
    """The same handler with its behavior wrapped; `wrap(behavior, streams_responses)`."""
    for attribute, factory, streams in _HANDLER_KINDS:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return factory(  # type: ignore[operator]
                wrap(behavior, streams),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class Guard(grpc.ServerInterceptor):
    """The guard for grpcio's sync server (`grpc.server(..., interceptors=[Guard(...)])`)."""

    def __init__(
        self,
        rules: Mapping[str, RuleSpec],
        auth: AuthClient,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        introspect_timeout: float = DEFAULT_INTROSPECT_TIMEOUT,
    ) -> None:
        self._gate = _Gate(rules, cache_ttl, cache_size, clock, introspect_timeout)
        self._auth = auth

    @property
    def cache(self) -> IntrospectionCache:
        return self._gate.cache

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # not served here: grpc answers UNIMPLEMENTED
        details: Any = handler_call_details
        method: str = details.method
        metadata = details.invocation_metadata

        def admit(context: grpc.ServicerContext) -> Identity | None:
            try:
                return self._admit(method, metadata)
            except _Denied as denied:
                context.abort_with_status(denied.status)
                raise  # abort_with_status always raises; this keeps the type checker honest

        def wrap(behavior: Any, streams: bool) -> Any:
            if streams:

                def guarded_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    token = _identity.set(admit(context))
                    try:
                        yield from behavior(request, context)
                    finally:
                        _identity.reset(token)

                return guarded_stream

            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                token = _identity.set(admit(context))
                try:
                    return behavior(request, context)
                finally:
                    _identity.reset(token)

            return guarded

        return _rewrap(handler, wrap)

    def _admit(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> Identity | None:
        rule = self._gate.rule(method)
        if rule.public:
            return None
        tenant, token = self._gate.credentials(metadata)
        answer = self._gate.cache.get(tenant, token)
        if answer is None:
            try:
                answer = self._auth.introspect(token, tenant=tenant, timeout=self._gate.introspect_timeout)
            except AuthServiceError as error:
                raise self._gate.unreachable(method, error) from error
            self._gate.cache.put(tenant, token, answer)
        return self._gate.judge(rule, answer)


class AsyncGuard(grpc.aio.ServerInterceptor):
    """The guard for grpc.aio servers (`grpc.aio.server(interceptors=[AsyncGuard(...)])`)."""

    def __init__(
        self,
        rules: Mapping[str, RuleSpec],
        auth: AsyncAuthClient,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        introspect_timeout: float = DEFAULT_INTROSPECT_TIMEOUT,
    ) -> None:
        self._gate = _Gate(rules, cache_ttl, cache_size, clock, introspect_timeout)
        self._auth = auth

    @property
    def cache(self) -> IntrospectionCache:
        return self._gate.cache

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]  # not served here: grpc answers UNIMPLEMENTED
        details: Any = handler_call_details
        method: str = details.method
        metadata = details.invocation_metadata

        async def admit(context: grpc.aio.ServicerContext) -> Identity | None:
            try:
                return await self._admit(method, metadata)
            except _Denied as denied:
                await context.abort_with_status(denied.status)
                raise

        def wrap(behavior: Any, streams: bool) -> Any:
            if streams:

                async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    token = _identity.set(await admit(context))
                    try:
                        result = behavior(request, context)
                        if inspect.isasyncgen(result):
                            async for response in result:
                                yield response
                        elif inspect.isawaitable(result):  # a handler writing with context.write()
                            await result
                        else:
                            for response in result:
                                yield response
                    finally:
                        _identity.reset(token)

                return guarded_stream

            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = _identity.set(await admit(context))
                try:
                    result = behavior(request, context)
                    return await result if inspect.isawaitable(result) else result
                finally:
                    _identity.reset(token)

            return guarded

        return _rewrap(handler, wrap)

    async def _admit(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> Identity | None:
        rule = self._gate.rule(method)
        if rule.public:
            return None
        tenant, token = self._gate.credentials(metadata)
        answer = self._gate.cache.get(tenant, token)
        if answer is None:
            try:
                answer = await self._auth.introspect(token, tenant=tenant, timeout=self._gate.introspect_timeout)
            except AuthServiceError as error:
                raise self._gate.unreachable(method, error) from error
            self._gate.cache.put(tenant, token, answer)
        return self._gate.judge(rule, answer)
