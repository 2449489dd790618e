"""A server interceptor other Python gRPC services mount to protect their methods with auth.v1 tokens.

    // orders.proto (generated with `python -m auth_client.protoc`, see auth_client.protoc)
    import "auth/v1/access.proto";
    rpc ListOrders(ListOrdersRequest) returns (ListOrdersResponse) {
      option (auth.v1.access) = {authenticated: true};
    }

    guard = Guard(
        auth=AuthClient("auth:50051"),
        services=["example.v1.Orders", "grpc.health.v1.Health"],  # what this server serves
        rules={"/grpc.health.v1.Health/*": "public"},  # for services whose protos carry no rule
    )
    server = grpc.server(pool, interceptors=[guard])
    ...
    def ListOrders(self, request, context):
        me = current_identity()  # user, session_id, tenant of the caller

This module owns the decision for each call:
- Rules, read once at construction, with the same fail-closed check the auth service makes for itself:
  the guard refuses to start (AccessRuleError, a ValueError naming every problem) when a served method
  has no rule, a rule is ambiguous, or a rules-dict key names no served method.
  `services` lists what the server serves: service descriptors or full service names (found in
  protobuf's default pool once the _pb2 module is imported), whose rules are their methods'
  `(auth.v1.access)` options; or "/pkg.Service/Method" names of methods without a descriptor.
  `rules` is the dict form, for services whose protos carry no option: per full method name
  ("/pkg.Service/Method"; "/pkg.Service/*" covers a whole service, an exact name wins) "public",
  "authenticated", a non-empty collection of role names ("user", "manager", "admin"), or for service
  accounts a mapping like the proto option: {"services": ["billing"]} (or ["*"]), optionally with
  "authenticated": True or "roles": [...] beside it. A method gets its rule from its proto or from the
  dict, never both.
  A person's token never satisfies `services`, and a service token never `authenticated` or `roles`:
  PERMISSION_DENIED / CALLER_NOT_ALLOWED, as the auth service's own guard answers.
  At run time a method without a rule (served, but not among `services`) is denied with
  PERMISSION_DENIED / ACCESS_RULE_MISSING, even to callers with a valid token. Unknown methods stay
  UNIMPLEMENTED. The old form `Guard(rules, auth)`, without `services`, still works but cannot check the
  dict's keys, so it warns (DeprecationWarning).
- Credentials: `authorization: Bearer <token>` and `x-tenant-id` from the call's metadata, checked by
  this service's `Introspect` through an `AuthClient` / `AsyncAuthClient` (the x-tenant-id is passed
  on; when the caller sends none, the client's bound tenant or the auth service's default applies).
- Cache: Introspect answers (live or not) are kept in a bounded LRU keyed by (tenant, SHA-256 of the
  token) for `cache_ttl` seconds (DEFAULT_CACHE_TTL = 5 s). That TTL is the revocation delay: a token
  revoked, expired, locked out or whose role changed on the auth service keeps its cached answer here
  for at most `cache_ttl` seconds. `cache_ttl=0` turns caching off (every call introspects).
- Answers: no token -> UNAUTHENTICATED / TOKEN_MISSING; a token that is not even shaped like one ->
  UNAUTHENTICATED / TOKEN_INVALID; an inactive token -> UNAUTHENTICATED with the auth service's reason
  (TOKEN_INVALID, TOKEN_EXPIRED, SESSION_REVOKED, ACCOUNT_LOCKED, SERVICE_ACCOUNT_REVOKED); wrong role ->
  PERMISSION_DENIED / INSUFFICIENT_ROLE; the wrong kind of caller, a service the rule does not name or a
  service account kept out of the call's tenant -> PERMISSION_DENIED / CALLER_NOT_ALLOWED; a bad tenant
  -> the auth service's own INVALID_ARGUMENT / NOT_FOUND answer; auth service unreachable or failing ->
  UNAVAILABLE / AUTH_SERVICE_UNAVAILABLE (never a pass). All with google.rpc.ErrorInfo, domain "auth.v1".
- Identity: handlers of protected methods read the caller with `current_identity()` (a ContextVar set
  for the duration of the call, so concurrent calls never see each other's caller); its `kind` is
  "user" (a person's session) or "service" (a service account: `service_account_id`, `service_name`).

`Guard` is for grpcio's sync server, `AsyncGuard` for grpc.aio servers; they share everything but the
transport calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import hashlib
import inspect
import logging
import random
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from google.protobuf import descriptor_pool, unknown_fields
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from auth_client.client import AsyncAuthClient, AuthClient
from auth_client.errors import AuthServiceError, rich_status
from auth_client.gen.auth.v1 import access_pb2, auth_pb2
from auth_client.interceptors import AUTHORIZATION, TENANT

log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL = 5.0  # seconds: also the longest a revoked token is still accepted here
DEFAULT_CACHE_SIZE = 10_000  # entries (tenant, token hash): bounds memory under a flood of tokens
DEFAULT_INTROSPECT_TIMEOUT = 2.0  # seconds: a slow auth service must not hold our handlers for long

ROLE_NAMES = {access_pb2.ROLE_USER: "user", access_pb2.ROLE_MANAGER: "manager", access_pb2.ROLE_ADMIN: "admin"}
# "public", "authenticated", a collection of roles, or a mapping of AccessRule's fields with `services`:
# {"services": ["billing"]}, {"authenticated": True, "services": ["*"]}, {"roles": ["admin"], "services": [...]}.
RuleSpec = Literal["public", "authenticated"] | Collection[str | int] | Mapping[str, Any]
# What a server serves: a service descriptor, a full service name ("pkg.Service", looked up in the
# default descriptor pool) or the full name of one method without a descriptor ("/pkg.Service/Method").
Served = ServiceDescriptor | str
_METHOD_NAME = re.compile(r"^/[A-Za-z_][\w.]*/(?:[A-Za-z_]\w*|\*)$")
# A service account's name, as the auth service accepts it (auth_server.domain.services.NAME_PATTERN).
_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# The fields of AccessRule this guard enforces. A rule may carry others (a newer access.proto): those
# parts admit nobody here, and must not stop the service from starting.
_KNOWN_FIELDS = frozenset({"public", "authenticated", "roles", "services"})


class AccessRuleError(ValueError):
    """The guard's rules do not cover what the server serves, or cannot be read: the service must not start."""


@dataclass(frozen=True)
class Rule:
    public: bool
    roles: frozenset[str] | None  # None: any person with a live session (when `people`)
    people: bool = True  # a person's token is admitted (`authenticated` or `roles`)
    services: frozenset[str] | None = None  # service account names admitted ("*": any); None: no service


def _service_names(where: str, names: Iterable[str]) -> frozenset[str] | None:
    listed = list(names)
    bad = [n for n in listed if not isinstance(n, str) or (n != "*" and not _SERVICE_NAME.match(n))]
    if bad:
        raise AccessRuleError(f'{where}: services must be "*" or service account names, got {bad!r}')
    return frozenset(listed) if listed else None


def _parse_mapping(method: str, spec: Mapping[str, Any]) -> Rule:
    """The dict form of a rule that names services: AccessRule's fields, `services` required."""
    unknown = set(spec) - {"authenticated", "roles", "services"}
    if unknown or not spec.get("services") or isinstance(spec["services"], str):
        raise ValueError(
            f"{method}: a mapping rule is {{'services': [names or '*']}}, optionally with 'authenticated': True "
            f"or 'roles': [...], got {dict(spec)!r}"
        )
    services = _service_names(method, spec["services"])
    authenticated = spec.get("authenticated", False) is True
    if authenticated and spec.get("roles"):
        raise ValueError(f"{method}: set authenticated or roles beside services, not both")
    if spec.get("roles"):
        return Rule(public=False, roles=_parse_roles(method, spec["roles"]), services=services)
    return Rule(public=False, roles=None, people=authenticated, services=services)


def _parse_roles(method: str, spec: Collection[str | int]) -> frozenset[str]:
    if isinstance(spec, str):  # a bare "admin" would be a one-letter-typo away from "public"
        raise ValueError(f"{method}: rule must be 'public', 'authenticated' or a collection of roles, got {spec!r}")
    roles = frozenset(ROLE_NAMES.get(r, "") if isinstance(r, int) else r.lower() for r in spec)
    if not roles or not roles <= set(ROLE_NAMES.values()):
        raise ValueError(f"{method}: roles must be a non-empty subset of {sorted(ROLE_NAMES.values())}")
    return roles


def parse_rules(rules: Mapping[str, RuleSpec]) -> dict[str, Rule]:
    """Validate the rules once, at start-up, so a typo fails the service's start rather than a call."""
    table: dict[str, Rule] = {}
    for method, spec in rules.items():
        if not _METHOD_NAME.match(method):
            raise ValueError(f"{method!r}: rule keys are full method names like '/pkg.Service/Method'")
        if spec == "public" or spec == "authenticated":
            table[method] = Rule(public=spec == "public", roles=None)
        elif isinstance(spec, Mapping):
            table[method] = _parse_mapping(method, spec)
        else:
            table[method] = Rule(public=False, roles=_parse_roles(method, spec))
    return table


def read_access_rule(method: str, options: MethodOptions) -> Rule | None:
    """The `(auth.v1.access)` rule in one method's options; None when it declares none.

    Same reading as the auth service's own start-up check: `public` alone, or `authenticated` or `roles`
    (not both), `services`, or both (AccessRuleError otherwise). Fields this guard does not know (a newer
    access.proto) are tolerated: a rule made only of those admits nobody, so it is denied.
    """
    if not options.HasExtension(access_pb2.access):
        return None
    rule = options.Extensions[access_pb2.access]
    present = {field.name for field, _ in rule.ListFields()}
    others = bool(present - _KNOWN_FIELDS) or len(unknown_fields.UnknownFieldSet(rule)) > 0
    people = int(rule.authenticated) + int(bool(rule.roles))
    services = list(rule.services)
    if rule.public:
        valid = not people and not services
    else:
        valid = people <= 1 and (people == 1 or bool(services) or others)
    if not valid:
        raise AccessRuleError(
            f"{method} must set public alone, or authenticated or roles (not both), services, or both "
            "in (auth.v1.access)"
        )
    if not people and not services and not rule.public:
        log.warning("%s: its (auth.v1.access) rule admits no caller this guard knows; it refuses everyone", method)
        return Rule(public=False, roles=None, people=False)
    unknown_roles = [r for r in rule.roles if r not in ROLE_NAMES]  # ROLE_UNSPECIFIED, or newer than us
    if unknown_roles:
        raise AccessRuleError(f"{method}: (auth.v1.access) names roles {unknown_roles} this guard does not know")
    roles = frozenset(ROLE_NAMES[r] for r in rule.roles) if rule.roles else None
    return Rule(public=rule.public, roles=roles, people=people == 1, services=_service_names(method, services))


def _served_methods(services: Iterable[Served]) -> tuple[dict[str, Rule | None], list[str]]:
    """Every served method with the rule its proto declares (None: none), and the problems found."""
    served: dict[str, Rule | None] = {}
    problems: list[str] = []
    for item in services:
        if isinstance(item, str) and item.startswith("/"):
            if not _METHOD_NAME.match(item) or item.endswith("/*"):
                problems.append(f"{item!r}: a served method is named like '/pkg.Service/Method'")
            else:
                served.setdefault(item, None)
            continue
        if isinstance(item, str):
            try:
                item = descriptor_pool.Default().FindServiceByName(item)
            except KeyError:
                problems.append(
                    f"service {item!r} is not in protobuf's default pool: import its _pb2 module first, "
                    "or list its methods as '/pkg.Service/Method'"
                )
                continue
        if not isinstance(item, ServiceDescriptor):
            raise TypeError(f"services: expected service descriptors or names, got {item!r}")
        for method in item.methods:
            name = f"/{item.full_name}/{method.name}"
            try:
                served[name] = read_access_rule(name, method.GetOptions())
            except AccessRuleError as error:
                problems.append(str(error))
    return served, problems


def build_rules(services: Iterable[Served], rules: Mapping[str, RuleSpec] | None = None) -> dict[str, Rule]:
    """The guard's table, one rule per served method, checked the way the auth service checks its own.

    Raises AccessRuleError naming every served method without a rule (or with two: its proto's and the
    dict's), every ambiguous rule and every dict key that names no served method or service.
    """
    if isinstance(services, str):  # a lone name would be read one character at a time
        raise TypeError(f"services: a list of services, e.g. [{services!r}]")
    given = parse_rules(rules or {})
    served, problems = _served_methods(services)
    served_services = {name.rpartition("/")[0] for name in served}
    for key in given:
        if key.endswith("/*"):
            if key[:-2] not in served_services:
                problems.append(f"rules: {key} names no served service{_did_you_mean(key[:-2], served_services)}")
        elif key not in served:
            problems.append(f"rules: {key} is not a served method{_did_you_mean(key, served)}")
    table: dict[str, Rule] = {}
    for name, declared in served.items():
        listed = given.get(name) or given.get(name.rpartition("/")[0] + "/*")
        rule = declared if declared is not None else listed
        if declared is not None and listed is not None:
            problems.append(f"{name} has a rule in its proto and in the rules dict: keep one")
        elif rule is None:
            problems.append(f"{name} declares no (auth.v1.access) rule and the rules dict has none")
        else:
            table[name] = rule
    if problems:
        raise AccessRuleError("; ".join(problems))
    return table


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class Identity:
    """The caller of a protected method, as the auth service knows them right now (within the cache TTL).

    `kind` tells a person ("user": `user`, `session_id`, `tenant`) from a service account ("service":
    `service_account_id` and `service_name`; `user` is then an empty User and `session_id` empty).
    """

    user: auth_pb2.User
    session_id: str
    tenant: str
    kind: Literal["user", "service"] = "user"
    service_account_id: str = ""
    service_name: str = ""  # the account's name, as rules name it (`services: ["billing"]`)

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
        # Bumped by every eviction: an Introspect answer fetched across one is used but not kept, since
        # the revocation it raced with may be newer than the answer.
        self.epoch = 0

    @staticmethod
    def key(tenant: str | None, token: str) -> tuple[str, bytes]:
        # Hash the token: the cache then never holds a usable credential (heap dumps, debuggers).
        return (tenant or "", hashlib.sha256(token.encode()).digest())

    def get(self, tenant: str | None, token: str) -> auth_pb2.IntrospectResponse | None:
        return self.get_key(self.key(tenant, token))

    def get_key(self, key: tuple[str, bytes]) -> auth_pb2.IntrospectResponse | None:
        """`get` by a key from `key()` (the guard hashes the token once per call)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(
        self, tenant: str | None, token: str, answer: auth_pb2.IntrospectResponse, epoch: int | None = None
    ) -> None:
        """Keep an answer; with `epoch` (self.epoch read before the Introspect call), only if no eviction
        happened meanwhile."""
        self.put_key(self.key(tenant, token), answer, epoch)

    def put_key(self, key: tuple[str, bytes], answer: auth_pb2.IntrospectResponse, epoch: int | None = None) -> None:
        """`put` by a key from `key()`."""
        ttl = self.ttl
        if answer.active and answer.HasField("expires_at"):
            # Never keep an answer past the token's own expiry (wall clock, as the token's exp is).
            ttl = min(ttl, answer.expires_at.ToSeconds() - time.time())
        if ttl <= 0:
            return
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            self._entries[key] = (self._clock() + ttl, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._entries.clear()

    def evict(self, *, session_id: str = "", user_id: str = "", service_account_id: str = "") -> int:
        """Drop the answers about this session, every session of this user, or this service account's
        tokens; how many."""
        with self._lock:
            self.epoch += 1
            doomed = [
                key
                for key, (_, answer) in self._entries.items()
                if (session_id and answer.session_id == session_id)
                or (user_id and answer.user.id == user_id)
                or (service_account_id and answer.service_account.id == service_account_id)
            ]
            for key in doomed:
                del self._entries[key]
            return len(doomed)

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
# The auth service's own messages for CALLER_NOT_ALLOWED (auth_server/api/guard.py).
_FOR_PEOPLE = "This method is for people; a service token cannot call it."
_FOR_SERVICES = "This method is for service accounts; a person's token cannot call it."
_OTHER_SERVICE = "This service account is not allowed to call this method."
_NOT_IN_TENANT = "This service account may not call in this tenant."


class _Gate:
    """The decision logic both guards share; only the Introspect call differs between them."""

    def __init__(
        self,
        rules: Mapping[str, RuleSpec] | None,
        services: Iterable[Served] | None,
        cache_ttl: float,
        cache_size: int,
        clock: Callable[[], float],
        introspect_timeout: float,
    ) -> None:
        if services is not None:
            self.rules = build_rules(services, rules)
        elif rules is not None:
            warnings.warn(
                "Guard(rules, auth) without services= cannot check the rules against the served methods "
                "(a misspelt method would be denied at call time): pass services=[...]",
                DeprecationWarning,
                stacklevel=3,
            )
            self.rules = parse_rules(rules)
        else:
            raise AccessRuleError("the guard needs services=[...] (rules from their protos) or rules={...}")
        self.cache = IntrospectionCache(cache_ttl, cache_size, clock)
        self.introspect_timeout = introspect_timeout

    def find(self, method: str) -> Rule | None:
        """The method's rule (an exact name wins over its service's `/*`), or None if it has none."""
        return self.rules.get(method) or self.rules.get(method.rpartition("/")[0] + "/*")

    def rule(self, method: str) -> Rule:
        rule = self.find(method)
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
    def judge(rule: Rule, answer: auth_pb2.IntrospectResponse, tenant: str | None = None) -> Identity:
        """The caller, if `rule` admits them; `tenant`: the call's x-tenant-id (a service's identity's)."""
        if not answer.active:
            if answer.inactive_reason == "CALLER_NOT_ALLOWED":  # a service account kept out of this tenant
                raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", _NOT_IN_TENANT)
            # The auth service says why (TOKEN_EXPIRED: refresh; SESSION_REVOKED: log in again;
            # SERVICE_ACCOUNT_REVOKED: the service account was deleted or its secret rotated).
            code, reason, message = _TOKEN_INVALID
            raise _Denied(code, answer.inactive_reason or reason, message)
        if answer.service_account.id:
            # A service token: only `services` admits it, by name or "*", never `authenticated` or roles.
            if rule.services is None:
                raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", _FOR_PEOPLE)
            if "*" not in rule.services and answer.service_account.name not in rule.services:
                raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", _OTHER_SERVICE)
            return Identity(
                user=auth_pb2.User(),
                session_id="",
                tenant=answer.tenant_id or tenant or "",
                kind="service",
                service_account_id=answer.service_account.id,
                service_name=answer.service_account.name,
            )
        if not answer.user.id:  # live, yet neither a person nor a service account: never guessed at
            raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", "This method does not admit you.")
        if not rule.people:
            raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", _FOR_SERVICES)
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


RECONNECT_BACKOFF = (0.05, 5.0)  # seconds: first wait after the stream drops, and the longest


class RevocationPush:
    """The guard's subscription to AuthService.WatchRevocations and what it reports.

    `up` says whether the stream is connected; while it is not, cached answers live out their TTL (the
    guard falls back to it) and `fallbacks` counts the times that began. With `registry` (a
    prometheus_client CollectorRegistry) the same is exported: gauge `auth_guard_revocation_stream_up`,
    counters `auth_guard_revocation_fallbacks_total` and `auth_guard_revocation_events_total`.
    """

    def __init__(self, cache: IntrospectionCache, registry: Any = None) -> None:
        self.cache = cache
        self.up = False
        self.events = 0
        self.fallbacks = 0
        self.cursor = ""
        self._gauge: Any = None
        self._fallback_counter: Any = None
        self._event_counter: Any = None
        if registry is not None:
            from prometheus_client import Counter, Gauge  # optional: only when a registry is given

            self._gauge = Gauge(
                "auth_guard_revocation_stream_up",
                "1 while the guard receives revocations pushed by the auth service; 0: cache TTL only.",
                registry=registry,
            )
            self._fallback_counter = Counter(
                "auth_guard_revocation_fallbacks",
                "Times the revocation stream went down and the guard fell back to its cache TTL.",
                registry=registry,
            )
            self._event_counter = Counter(
                "auth_guard_revocation_events", "Revocation events received from the auth service.", registry=registry
            )

    def connected(self) -> None:
        if not self.cursor:
            # No cursor: events of the time before are unknown, so nothing cached then can be trusted.
            self.cache.clear()
        if not self.up:
            log.info("revocation stream connected: cached answers are dropped as revocations happen")
        self.up = True
        if self._gauge is not None:
            self._gauge.set(1)

    def down(self, error: object) -> None:
        if self.up or self.fallbacks == 0:
            log.warning(
                "revocation stream down (%s): cached answers live out their TTL (%.1f s) until it is back",
                error,
                self.cache.ttl,
            )
            self.fallbacks += 1
            if self._fallback_counter is not None:
                self._fallback_counter.inc()
        self.up = False
        if self._gauge is not None:
            self._gauge.set(0)

    def apply(self, event: auth_pb2.RevocationEvent) -> None:
        kinds = auth_pb2.RevocationKind
        if event.kind == kinds.REVOCATION_KIND_SESSION_REVOKED:
            self.cache.evict(session_id=event.session_id)
        elif event.user_id:
            self.cache.evict(user_id=event.user_id)  # user-wide: every cached session of the user
        elif event.service_account_id:
            # Deleted or rotated: every cached answer about that account's tokens (after a rotation the
            # ones still in their overlap are simply introspected again).
            self.cache.evict(service_account_id=event.service_account_id)
        else:
            self.cache.evict()  # a kind this guard does not know: at least no answer in flight is kept
        self.cursor = event.cursor
        self.events += 1
        if self._event_counter is not None:
            self._event_counter.inc()


class _SyncWatcher:
    """A daemon thread holding the stream open, reconnecting after the last cursor with backoff."""

    def __init__(self, auth: AuthClient, push: RevocationPush) -> None:
        self._auth = auth
        self._push = push
        self._stop = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name="auth-guard-revocations", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait = RECONNECT_BACKOFF[0]
        while not self._stop.is_set():
            try:
                self._call = call = self._auth.watch_revocations(self._push.cursor)
                if self._stop.is_set():
                    call.cancel()
                call.initial_metadata()  # the server sends headers once the stream is in place
                if not call.done():  # done already: refused (the loop below ends at once)
                    self._push.connected()
                    wait = RECONNECT_BACKOFF[0]
                for response in call:
                    self._push.apply(response.event)
                error: object = call.code()
            except (grpc.RpcError, AuthServiceError) as failed:
                error = failed
            except Exception as failed:  # never let the thread die: the TTL still protects
                log.exception("revocation stream failed")
                error = failed
            if self._stop.is_set():
                return
            self._push.down(error)
            self._stop.wait(wait * (0.5 + random.random()))  # noqa: S311 (jitter)
            wait = min(wait * 2, RECONNECT_BACKOFF[1])

    def close(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(5)


class _AsyncWatcher:
    """The same as an asyncio task of the running loop."""

    def __init__(self, auth: AsyncAuthClient, push: RevocationPush) -> None:
        self._auth = auth
        self._push = push
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="auth-guard-revocations")

    async def _run(self) -> None:
        wait = RECONNECT_BACKOFF[0]
        while True:
            call: Any = None
            try:
                call = await self._auth.watch_revocations(self._push.cursor)
                await call.initial_metadata()
                if not call.done():
                    self._push.connected()
                    wait = RECONNECT_BACKOFF[0]
                async for response in call:
                    self._push.apply(response.event)
                error: object = await call.code()
            except asyncio.CancelledError:
                if call is not None:
                    call.cancel()
                raise
            except (grpc.RpcError, AuthServiceError) as failed:
                error = failed
            except Exception as failed:
                log.exception("revocation stream failed")
                error = failed
            self._push.down(error)
            await asyncio.sleep(wait * (0.5 + random.random()))  # noqa: S311 (jitter)
            wait = min(wait * 2, RECONNECT_BACKOFF[1])

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Guard(grpc.ServerInterceptor):
    """The guard for grpcio's sync server (`grpc.server(..., interceptors=[Guard(...)])`)."""

    def __init__(
        self,
        rules: Mapping[str, RuleSpec] | None = None,
        auth: AuthClient | None = None,
        *,
        services: Iterable[Served] | None = None,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        introspect_timeout: float = DEFAULT_INTROSPECT_TIMEOUT,
        watch_revocations: bool | None = None,
        metrics_registry: Any = None,
    ) -> None:
        """`Guard(auth=..., services=[...], rules={...})`; see the module docstring. Raises AccessRuleError.

        `watch_revocations` (default: when `auth` has service credentials) subscribes to the auth service's
        revocation stream in a background thread; `close()` ends it. `metrics_registry`: see RevocationPush.
        """
        if auth is None:  # optional only so that `rules` may be left out by keyword
            raise TypeError("Guard() needs auth=, the AuthClient that introspects tokens")
        self._gate = _Gate(rules, services, cache_ttl, cache_size, clock, introspect_timeout)
        self._auth = auth
        self.revocations = RevocationPush(self._gate.cache, metrics_registry)
        if watch_revocations is None:
            watch_revocations = auth.has_service_credentials
        self._watcher = _SyncWatcher(auth, self.revocations) if watch_revocations else None

    def close(self) -> None:
        """Stop the revocation stream (if any). The guard still works after, on its TTL alone."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

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
        rule = self._gate.find(method)
        if rule is not None and rule.public:
            return handler  # nothing to check, and current_identity() is None there already
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
        key = self._gate.cache.key(tenant, token)
        answer = self._gate.cache.get_key(key)
        if answer is None:
            epoch = self._gate.cache.epoch
            try:
                answer = self._auth.introspect(token, tenant=tenant, timeout=self._gate.introspect_timeout)
            except AuthServiceError as error:
                raise self._gate.unreachable(method, error) from error
            self._gate.cache.put_key(key, answer, epoch)
        return self._gate.judge(rule, answer, tenant)


class AsyncGuard(grpc.aio.ServerInterceptor):
    """The guard for grpc.aio servers (`grpc.aio.server(interceptors=[AsyncGuard(...)])`)."""

    def __init__(
        self,
        rules: Mapping[str, RuleSpec] | None = None,
        auth: AsyncAuthClient | None = None,
        *,
        services: Iterable[Served] | None = None,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        introspect_timeout: float = DEFAULT_INTROSPECT_TIMEOUT,
        watch_revocations: bool | None = None,
        metrics_registry: Any = None,
    ) -> None:
        """`AsyncGuard(auth=..., services=[...], rules={...})`; see the module docstring. Raises AccessRuleError.

        `watch_revocations` (default: when `auth` has service credentials) subscribes to the revocation
        stream in a task of the server's loop, started by `start()` or by the first call; `await close()`
        ends it. `metrics_registry`: see RevocationPush.
        """
        if auth is None:  # optional only so that `rules` may be left out by keyword
            raise TypeError("AsyncGuard() needs auth=, the AsyncAuthClient that introspects tokens")
        self._gate = _Gate(rules, services, cache_ttl, cache_size, clock, introspect_timeout)
        self._auth = auth
        self.revocations = RevocationPush(self._gate.cache, metrics_registry)
        if watch_revocations is None:
            watch_revocations = auth.has_service_credentials
        self._watcher = _AsyncWatcher(auth, self.revocations) if watch_revocations else None

    def start(self) -> None:
        """Open the revocation stream now (inside the running loop) rather than at the first call."""
        if self._watcher is not None:
            self._watcher.ensure_started()

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None

    @property
    def cache(self) -> IntrospectionCache:
        return self._gate.cache

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.start()
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]  # not served here: grpc answers UNIMPLEMENTED
        details: Any = handler_call_details
        method: str = details.method
        rule = self._gate.find(method)
        if rule is not None and rule.public:
            return handler  # nothing to check, and current_identity() is None there already
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
        key = self._gate.cache.key(tenant, token)
        answer = self._gate.cache.get_key(key)
        if answer is None:
            epoch = self._gate.cache.epoch
            try:
                answer = await self._auth.introspect(token, tenant=tenant, timeout=self._gate.introspect_timeout)
            except AuthServiceError as error:
                raise self._gate.unreachable(method, error) from error
            self._gate.cache.put_key(key, answer, epoch)
        return self._gate.judge(rule, answer, tenant)
