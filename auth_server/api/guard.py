"""The guard: one server interceptor that decides, for every call, who is calling and whether they may.

Access rules come from the `(auth.v1.access)` method option in the protos, read once at start-up into
a table keyed by full method name. Fail closed: building the table fails (and the server refuses to
start) when a method of a served auth.v1 service declares no rule or an ambiguous one, and at run
time a method missing from the table is denied for everyone.

Per call the guard parses metadata once (tenant, bearer token, device hints, client IP), authenticates
protected methods (JWT signature first, so a bad token never costs a store read; then session and
user from the session cache or one store read, or one store read for the service account of a
service token), checks that the rule admits this kind of caller (a person's token never satisfies
`services`, a service token never `authenticated` or `roles`: CALLER_NOT_ALLOWED, decided before any
store read) and the roles or service name (a role refused on a cached user is checked again on the
stored one), and hands the handler a typed `CallInfo` through a ContextVar.
That decision is one transport-neutral method, `decide_and_call`: the gRPC interceptor calls it with a
call's metadata and peer, and `serve`'s HTTP bridge calls it in process (api/local.py) with the headers
it would have sent as metadata; there is no second copy of the rules.
It is also the one error boundary: AuthError becomes a status with ErrorInfo, store outages become
UNAVAILABLE / STORE_UNAVAILABLE, anything else INTERNAL with a generic message and a log line.
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import FileDescriptor
from grpc_status import rpc_status

from auth_client.gen.auth.v1 import access_pb2
from auth_server.api.access_log import AccessLog
from auth_server.api.rpc_errors import abort, to_status_proto
from auth_server.domain import audit, errors
from auth_server.domain.errors import AuthError, Code, unauthenticated
from auth_server.domain.services import NAME_PATTERN, ServiceAccounts, ServiceCaller
from auth_server.domain.sessions import Caller, Sessions
from auth_server.domain.tokens import AccessClaims, ServiceClaims
from auth_server.infra.config import TENANT_PATTERN, Settings
from auth_server.infra.metrics import Metrics
from auth_server.infra.proxies import BRIDGE_HEADER, TrustedProxies
from auth_server.store.base import StoreUnavailable

log = logging.getLogger(__name__)

ROLE_NAMES = {access_pb2.ROLE_USER: "user", access_pb2.ROLE_MANAGER: "manager", access_pb2.ROLE_ADMIN: "admin"}

# Infrastructure services that carry no auth.v1 option: health and reflection are public by design.
INFRASTRUCTURE_PUBLIC = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
MAX_HEADER_CHARS = 8192
MAX_CACHED_STATUSES = 256


class AccessRuleError(Exception):
    """A served method has no access rule, or an ambiguous one: the server must not start."""


@dataclass(frozen=True)
class Rule:
    public: bool
    roles: frozenset[str] | None  # None: any authenticated person (when `people`)
    people: bool = True  # a person's session token is admitted (`authenticated` or `roles`)
    services: frozenset[str] | None = None  # service account names admitted ("*": any); None: no service


def load_rules(files: Iterable[FileDescriptor]) -> dict[str, Rule]:
    """The access table of every method of every service in `files`, keyed '/pkg.Service/Method'."""
    table: dict[str, Rule] = {}
    problems: list[str] = []
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                name = f"/{service.full_name}/{method.name}"
                options = method.GetOptions()
                if not options.HasExtension(access_pb2.access):
                    problems.append(f"{name} declares no (auth.v1.access) rule")
                    continue
                rule = options.Extensions[access_pb2.access]
                people = int(rule.authenticated) + int(bool(rule.roles))
                services = list(rule.services)
                if rule.public:
                    valid = not people and not services
                else:
                    valid = people <= 1 and (people == 1 or bool(services))
                if not valid or access_pb2.ROLE_UNSPECIFIED in rule.roles:
                    problems.append(
                        f"{name} must be public alone, or set authenticated or roles (not both), services, or both"
                    )
                    continue
                if any(s != "*" and not NAME_PATTERN.match(s) for s in services):
                    problems.append(f'{name} names a service that is neither "*" nor a valid service account name')
                    continue
                roles = frozenset(ROLE_NAMES[r] for r in rule.roles) if rule.roles else None
                table[name] = Rule(
                    public=rule.public,
                    roles=roles,
                    people=people == 1,
                    services=frozenset(services) if services else None,
                )
    if problems:
        raise AccessRuleError("; ".join(problems))
    return table


@dataclass(frozen=True)
class CallInfo:
    """What the guard learned about the call; handlers read it instead of metadata."""

    tenant: str
    caller: Caller | None  # the person, when a person's token made the call
    user_agent: str
    device_name: str | None  # x-device-name
    ip_address: str
    service: ServiceCaller | None = None  # the service account, when a service token made the call

    def require_caller(self) -> Caller:
        if self.caller is None:  # only reachable if a public method's handler asks: a programming error
            raise unauthenticated(*errors.TOKEN_MISSING)
        return self.caller


_current: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("auth_call")


def current_call() -> CallInfo:
    return _current.get()


def _peer_ip(peer: str) -> str:
    # grpc peers look like "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000" or "unix:/path".
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


class Guard(grpc.ServerInterceptor):
    def __init__(
        self,
        rules: dict[str, Rule],
        sessions: Sessions,
        settings: Settings,
        metrics: Metrics,
        services: ServiceAccounts | None = None,
    ) -> None:
        self._services = services  # None: no service tokens (a guard built for people only)
        self._metrics = metrics
        self._rules = rules
        self._sessions = sessions
        self._settings = settings
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._bridge_secret = settings.bridge_secret.encode()  # compared on every call from the bridge
        # Built once per method, not per call: the served methods and their handlers never change once
        # the server runs. Only methods that resolved to a registered handler are kept, so the table is
        # bounded by the service definitions whatever method names callers send.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        # Per (method, code): the metric children, so a call does not look its labels up again.
        self._observers: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._statuses: dict[tuple[Code, str, str], grpc.Status] = {}
        self._access = AccessLog()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = self._wrap(method, continuation(handler_call_details))
        if handler is not None:
            self._handlers[method] = handler
        return handler

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        if method.startswith(INFRASTRUCTURE_PUBLIC):
            return handler
        rule = self._rules.get(method)
        if rule is not None and handler.unary_stream is not None:
            return self._wrap_stream(method, rule, handler)
        if rule is None or handler.unary_unary is None:
            return grpc.unary_unary_rpc_method_handler(_deny_undeclared)
        behavior = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            reply, error = self.decide_and_call(
                method, rule, _text_headers(context), _peer_ip(context.peer()), behavior, request, context
            )
            if error is not None:
                self._abort(context, error)
            return reply

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def decide_and_call(
        self,
        method: str,
        rule: Rule | None,
        headers: dict[str, list[str]],
        peer_ip: str,
        behavior: Callable[[Any, Any], Any],
        request: Any,
        context: Any,
        *,
        forwarded_by_own_bridge: bool = False,
    ) -> tuple[Any, AuthError | None]:
        """One unary call, whatever carried it: admission by `rule`, the handler with its `CallInfo`,
        the error boundary, the access log line and the metrics. (reply, None), or (None, the error).

        The gRPC interceptor calls it with the call's metadata and peer; the HTTP bridge of `serve`
        calls it in process (api/local.py) with the headers it would have sent as metadata and
        `forwarded_by_own_bridge`, because its x-forwarded-for is built by this process's own code and
        needs no secret to be believed. A method without a rule is denied (fail closed).
        """
        started = time.perf_counter()
        outcome: AuthError | None = None
        info: CallInfo | None = None
        # Known before anything can fail, so the access log names the source of rejected calls too.
        ip = self._client_ip(peer_ip, headers, forwarded_by_own_bridge)
        try:
            if rule is None:
                raise AuthError(Code.PERMISSION_DENIED, "ACCESS_RULE_MISSING", "This method declares no access rule.")
            info = self._admit(rule, headers, ip)
            token, ip_token = _current.set(info), audit.client_ip.set(info.ip_address)
            try:
                return behavior(request, context), None
            finally:
                _current.reset(token)
                audit.client_ip.reset(ip_token)
        except Exception as exc:  # the one error boundary: every failure gets a status
            outcome = self._boundary(method, exc)
        finally:
            self._finish(method, info, ip, outcome, time.perf_counter() - started)
        return None, outcome

    def rule_of(self, method: str) -> Rule | None:
        """The access rule of '/pkg.Service/Method' (None: none declared, and so denied)."""
        return self._rules.get(method)

    def _wrap_stream(self, method: str, rule: Rule, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A server-streaming method (WatchRevocations): the same admission, error boundary and access log
        as a unary call; the log line and latency cover the whole stream."""
        behavior = handler.unary_stream

        def guarded_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            outcome: AuthError | None = None
            info: CallInfo | None = None
            headers = _text_headers(context)
            ip = self._client_ip(_peer_ip(context.peer()), headers)
            try:
                info = self._admit(rule, headers, ip)
                token, ip_token = _current.set(info), audit.client_ip.set(info.ip_address)
                try:
                    yield from behavior(request, context)
                finally:
                    _current.reset(token)
                    audit.client_ip.reset(ip_token)
            except Exception as exc:  # the one error boundary: every failure gets a status
                outcome = self._boundary(method, exc)
            finally:
                self._finish(method, info, ip, outcome, time.perf_counter() - started)
            if outcome is not None:
                self._abort(context, outcome)

        return grpc.unary_stream_rpc_method_handler(
            guarded_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _boundary(self, method: str, exc: Exception) -> AuthError:
        """What a failure becomes on the wire; called inside the `except` so tracebacks are logged."""
        if isinstance(exc, AuthError):
            return exc
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable during %s", method, exc_info=True)
            self._metrics.store_errors.inc()
            return errors.store_unavailable()
        log.exception("unexpected error in %s", method)
        return AuthError(Code.INTERNAL, "INTERNAL", "Internal error.")

    def _abort(self, context: grpc.ServicerContext, error: AuthError) -> NoReturn:
        """abort(), with the status of a plain error (no metadata, no field violations) built once."""
        if error.metadata or error.violations:
            abort(context, error)
        key = (error.code, error.reason, error.message)
        status = self._statuses.get(key)
        if status is None:
            status = rpc_status.to_status(to_status_proto(error))
            if len(self._statuses) < MAX_CACHED_STATUSES:
                self._statuses[key] = status
        context.abort_with_status(status)
        raise AssertionError("abort_with_status returned")  # it always raises

    def _finish(self, method: str, info: CallInfo | None, ip: str, error: AuthError | None, seconds: float) -> None:
        """The access log line and the call metrics: one of each per call."""
        code = error.code.value if error else "OK"
        observers = self._observers.get((method, code))
        if observers is None:
            metrics = self._metrics
            observers = self._observers[(method, code)] = (
                metrics.calls.labels(method, code),
                metrics.latency.labels(method),
            )
        observers[0].inc()
        observers[1].observe(seconds)
        if self._access.enabled():
            caller = info.caller if info else None
            self._access.write(
                method=method,
                code=code,
                reason=error.reason if error else "",
                seconds=seconds,
                tenant=info.tenant if info else "",
                session_id=caller.session.id if caller else "",
                service=info.service.account.name if info and info.service else "",
                ip=ip,
            )

    def _admit(self, rule: Rule, headers: dict[str, list[str]], ip: str) -> CallInfo:
        tenant = self._tenant(headers.get("x-tenant-id"))
        caller: Caller | ServiceCaller | None = None
        if not rule.public:
            caller = self._authenticate(tenant, headers.get("authorization"), rule)
        return CallInfo(
            tenant=tenant,
            caller=caller if isinstance(caller, Caller) else None,
            service=caller if isinstance(caller, ServiceCaller) else None,
            # gRPC clients cannot set user-agent per call, so proxies and browsers' bridges send x-user-agent.
            user_agent=(headers.get("x-user-agent") or headers.get("user-agent") or [""])[0][:MAX_HEADER_CHARS],
            device_name=(headers.get("x-device-name") or [None])[0],
            ip_address=ip,
        )

    def _tenant(self, values: list[str] | None) -> str:
        if not values:
            return self._settings.default_tenant
        if len(values) > 1 or not TENANT_PATTERN.match(values[0]):
            raise AuthError(
                Code.INVALID_ARGUMENT, "TENANT_INVALID", "x-tenant-id must match ^[a-z0-9][a-z0-9_-]{0,62}$."
            )
        if values[0] not in self._settings.tenants:
            raise AuthError(Code.NOT_FOUND, "TENANT_NOT_FOUND", "Unknown tenant.")
        return values[0]

    def _authenticate(self, tenant: str, values: list[str] | None, rule: Rule) -> Caller | ServiceCaller:
        if not values:
            raise unauthenticated(*errors.TOKEN_MISSING)
        scheme, _, token = values[0].strip().partition(" ")
        if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated(*errors.TOKEN_INVALID)
        token = token.strip()
        # The kind of token decides which rule part applies; signature and claims are checked here,
        # once, before any store read.
        claims = self._services.verify_token(token) if self._services is not None else None
        if isinstance(claims, ServiceClaims):
            assert self._services is not None
            if rule.services is None:
                raise errors.caller_not_allowed("This method is for people; a service token cannot call it.")
            service = self._services.authenticate(tenant, claims)
            if "*" not in rule.services and service.account.name not in rule.services:
                raise errors.caller_not_allowed("This service account is not allowed to call this method.")
            return service
        if not rule.people:
            raise errors.caller_not_allowed("This method is for service accounts; a person's token cannot call it.")
        if not isinstance(claims, AccessClaims):
            claims = self._sessions.verify(token)  # a guard built without service accounts
        caller = self._sessions.caller_for(tenant, claims)
        if rule.roles is not None and caller.user.role not in rule.roles and caller.from_cache:
            # A refusal is decided on the stored role, not on the session cache's copy of the user.
            caller = self._sessions.caller_for(tenant, claims, fresh=True)
        if rule.roles is not None and caller.user.role not in rule.roles:
            raise AuthError(Code.PERMISSION_DENIED, "INSUFFICIENT_ROLE", "Your role does not allow this call.")
        return caller

    def _client_ip(self, ip: str, headers: dict[str, list[str]], own_bridge: bool = False) -> str:
        """The client's address: the peer's `ip`, or from x-forwarded-for when the peer is a proxy we trust
        (listed in AUTH_TRUSTED_PROXIES, or `serve`'s own bridge: in process (`own_bridge`), or over
        loopback proving itself with its secret)."""
        forwarded = headers.get("x-forwarded-for")
        if not forwarded or not (own_bridge or ip in self._proxies or self._is_own_bridge(headers.get(BRIDGE_HEADER))):
            return ip
        # Walk x-forwarded-for from the right: the first hop we do not trust is the client. Every hop
        # must be an IP address; anything else means the chain cannot be believed: use the peer.
        address = ip
        for hop in reversed(",".join(forwarded).split(",")):
            try:
                address = str(ipaddress.ip_address(hop.strip()))
            except ValueError:
                return ip
            if address not in self._proxies:
                return address
        return address  # every hop is a trusted proxy: the leftmost one made the call

    def _is_own_bridge(self, values: list[str] | None) -> bool:
        secret = self._bridge_secret
        return bool(secret and values and len(values) == 1 and hmac.compare_digest(values[0].encode(), secret))


def _text_headers(context: grpc.ServicerContext) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata():
        if isinstance(value, str):  # binary (-bin) headers are never ours to read
            headers.setdefault(key, []).append(value)
    return headers


def _deny_undeclared(request: Any, context: grpc.ServicerContext) -> Any:
    abort(context, AuthError(Code.PERMISSION_DENIED, "ACCESS_RULE_MISSING", "This method declares no access rule."))
