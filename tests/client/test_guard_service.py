"""An internal service protected by the client package's guard, against the REAL auth server.

`example.v1.Orders` is defined here without a .proto, so its rules take the dict form: ListOrders
(authenticated), CancelOrder (admin), Ping (public) and Unlisted (served, but not declared to the guard:
must be denied at call time). Callers send their token with the client package's metadata interceptor;
the guard asks the auth server's Introspect. Rules read from a service's own proto:
test_guard_proto_rules.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from auth_client import (
    DOMAIN,
    AsyncAuthClient,
    AsyncAuthMetadataInterceptor,
    AsyncGuard,
    AuthClient,
    AuthMetadataInterceptor,
    Guard,
    RetryPolicy,
    Unauthenticated,
    current_identity,
    from_rpc_error,
    optional_identity,
)
from auth_client.gen.auth.v1 import auth_pb2
from auth_client.guard import parse_rules
from tests.integration.conftest import PASSWORD, Client
from tests.support.mail import SmtpSink, free_port
from tests.support.rpc import Failure, failure

ORDERS = "example.v1.Orders"
RULES: dict[str, Any] = {
    f"/{ORDERS}/ListOrders": "authenticated",
    f"/{ORDERS}/CancelOrder": {"admin"},
    f"/{ORDERS}/Ping": "public",
    # Unlisted is served but has no rule on purpose.
}
# What the guard is told is served: the dict's keys are checked against it at start-up. Unlisted is left
# out on purpose, as a servicer someone forgot to declare: the guard cannot refuse to start over it, so
# it must be denied at call time.
SERVED = [f"/{ORDERS}/{name}" for name in ("ListOrders", "CancelOrder", "Ping")]
TTL = 5.0


class FakeClock:
    """The guard cache's clock, moved by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingAuthClient(AuthClient):
    """An AuthClient that counts Introspect calls, to see the guard's cache at work."""

    introspections = 0

    def introspect(self, access_token: str, **options: Any) -> auth_pb2.IntrospectResponse:
        self.introspections += 1
        return super().introspect(access_token, **options)


def _identity_json() -> bytes:
    me = current_identity()
    return json.dumps(
        {"user": me.user.username, "session": me.session_id, "tenant": me.tenant, "role": me.role}
    ).encode()


def orders_handler() -> grpc.GenericRpcHandler:
    """The example service: raw bytes in and out, so it needs no .proto of its own."""

    def list_orders(request: bytes, context: grpc.ServicerContext) -> bytes:
        return _identity_json()

    def cancel_order(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"cancelled " + request + b" by " + current_identity().user.username.encode()

    def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"pong" if optional_identity() is None else b"pong (with an identity?!)"

    def unlisted(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise AssertionError("a method without a rule must never run")

    behaviors = {"ListOrders": list_orders, "CancelOrder": cancel_order, "Ping": ping, "Unlisted": unlisted}
    return grpc.method_handlers_generic_handler(
        ORDERS, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in behaviors.items()}
    )


@dataclass
class Orders:
    """A running example service and what the tests need to drive it."""

    port: int
    guard: Guard
    clock: FakeClock
    auth: CountingAuthClient

    def call(self, method: str, token: str | None = None, tenant: str | None = None, payload: bytes = b"") -> bytes:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(f"127.0.0.1:{self.port}"), AuthMetadataInterceptor(token=token, tenant=tenant)
        )
        with channel:
            return channel.unary_unary(f"/{ORDERS}/{method}")(payload, timeout=5)  # type: ignore[no-any-return]

    def fails(self, method: str, token: str | None = None, tenant: str | None = None) -> Failure:
        try:
            self.call(method, token, tenant)
        except grpc.RpcError as error:
            return failure(error)
        raise AssertionError(f"{method} succeeded but should have failed")


@pytest.fixture
def make_orders() -> Iterator[Callable[..., Orders]]:
    servers: list[grpc.Server] = []
    clients: list[AuthClient] = []

    def make(auth_target: str, **guard_options: Any) -> Orders:
        auth = CountingAuthClient(auth_target, retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.02))
        clients.append(auth)
        clock = FakeClock()
        guard = Guard(RULES, auth, services=SERVED, clock=clock, **{"cache_ttl": TTL, **guard_options})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[guard])
        server.add_generic_rpc_handlers((orders_handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return Orders(port, guard, clock, auth)

    yield make
    for server in servers:
        server.stop(0).wait()
    for auth in clients:
        auth.close()


@pytest.fixture
def orders(client: Client, make_orders: Callable[..., Orders]) -> Orders:
    return make_orders(client.addr)


def sign_in(auth: AuthClient, smtp: SmtpSink, username: str, tenant: str | None = None) -> auth_pb2.VerifyOtpResponse:
    """Signup, its e-mailed code, VerifySignup, Login, the e-mailed code, VerifyOtp: all through the client
    package's AuthClient."""
    address = f"{username}@example.com"
    before = len(smtp.to(address))
    started = auth.signup(username, address, PASSWORD, tenant=tenant)
    auth.verify_signup(started.signup_id, smtp.last_code(address, count=before + 1), tenant=tenant)
    before = len(smtp.to(address))
    login = auth.login(username, PASSWORD, tenant=tenant)
    return auth.verify_otp(login.login_id, smtp.last_code(address, count=before + 1), tenant=tenant)


def test_signed_in_user_reaches_authenticated_method(client: Client, orders: Orders) -> None:
    tokens = sign_in(orders.auth, client.smtp, "alice")
    answer = json.loads(orders.call("ListOrders", tokens.access_token))
    assert answer == {"user": "alice", "session": tokens.session_id, "tenant": "default", "role": "user"}
    assert orders.call("Ping") == b"pong"  # public: no token needed, and no identity is made up


def test_calls_without_a_live_token_are_unauthenticated(client: Client, orders: Orders) -> None:
    missing = orders.fails("ListOrders")
    assert (missing.code, missing.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    garbage = orders.fails("ListOrders", token="not-a-token")
    assert (garbage.code, garbage.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


def test_errors_carry_error_info_in_the_auth_domain(client: Client, orders: Orders) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{orders.port}")
    with channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(f"/{ORDERS}/ListOrders")(b"", timeout=5)
    typed = from_rpc_error(raised.value)
    assert isinstance(typed, Unauthenticated)
    assert (typed.reason, typed.domain) == ("TOKEN_MISSING", DOMAIN)


def test_user_role_is_denied_an_admin_method_until_promoted(client: Client, orders: Orders) -> None:
    tokens = sign_in(orders.auth, client.smtp, "bob")
    denied = orders.fails("CancelOrder", tokens.access_token)
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_ROLE")
    me = orders.auth.with_token(tokens.access_token).get_me()
    client.store.update_user("default", me.user.id, set={"role": "admin"})
    # The cached answer still says "user" until the TTL passes: the documented delay.
    assert orders.fails("CancelOrder", tokens.access_token).code == grpc.StatusCode.PERMISSION_DENIED
    orders.clock.advance(TTL)
    assert orders.call("CancelOrder", tokens.access_token, payload=b"o-1") == b"cancelled o-1 by bob"


def test_method_without_a_rule_is_denied_even_with_a_valid_token(client: Client, orders: Orders) -> None:
    tokens = sign_in(orders.auth, client.smtp, "carol")
    for token in (tokens.access_token, None):
        denied = orders.fails("Unlisted", token)
        assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_RULE_MISSING")
    assert orders.fails("NoSuchMethod", tokens.access_token).code == grpc.StatusCode.UNIMPLEMENTED


def test_revocation_takes_effect_once_the_cache_ttl_passes(client: Client, orders: Orders) -> None:
    tokens = sign_in(orders.auth, client.smtp, "dave")
    orders.call("ListOrders", tokens.access_token)
    orders.call("ListOrders", tokens.access_token)
    assert orders.auth.introspections == 1  # the second call was answered from the cache

    revoked = orders.auth.with_token(tokens.access_token).logout_all()
    assert revoked.revoked_count == 1
    assert not orders.auth.introspect(tokens.access_token).active  # the auth server already says no
    orders.clock.advance(TTL - 0.1)
    orders.call("ListOrders", tokens.access_token)  # still within the revocation delay

    orders.clock.advance(0.1)
    rejected = orders.fails("ListOrders", tokens.access_token)
    # the auth service's reason is passed on, so a browser knows to log in again rather than refresh
    assert (rejected.code, rejected.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


def test_zero_ttl_means_no_revocation_delay(client: Client, make_orders: Callable[..., Orders]) -> None:
    orders = make_orders(client.addr, cache_ttl=0)
    tokens = sign_in(orders.auth, client.smtp, "erin")
    orders.call("ListOrders", tokens.access_token)
    orders.auth.with_token(tokens.access_token).logout_all()
    assert orders.fails("ListOrders", tokens.access_token).reason == "SESSION_REVOKED"


def test_tenant_is_passed_to_the_auth_service(client: Client, orders: Orders) -> None:
    tokens = sign_in(orders.auth, client.smtp, "frank", tenant="acme")
    answer = json.loads(orders.call("ListOrders", tokens.access_token, tenant="acme"))
    assert (answer["user"], answer["tenant"]) == ("frank", "acme")
    # The same token in another tenant names no session there.
    assert orders.fails("ListOrders", tokens.access_token).reason == "SESSION_NOT_FOUND"
    unknown = orders.fails("ListOrders", tokens.access_token, tenant="nope")
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "TENANT_NOT_FOUND")
    bad = orders.fails("ListOrders", tokens.access_token, tenant="Not A Tenant!")
    assert (bad.code, bad.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TENANT_INVALID")


def test_concurrent_callers_each_see_their_own_identity(client: Client, orders: Orders) -> None:
    tokens = {name: sign_in(orders.auth, client.smtp, name).access_token for name in ("gina", "hank")}
    names = ["gina", "hank"] * 8
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: json.loads(orders.call("ListOrders", tokens[n]))["user"], names))
    assert answers == names


def test_auth_service_down_is_unavailable_never_a_pass(make_orders: Callable[..., Orders]) -> None:
    orders = make_orders(f"127.0.0.1:{free_port()}", introspect_timeout=1.0)  # nothing listens there
    down = orders.fails("ListOrders", token="any-token")
    assert (down.code, down.reason) == (grpc.StatusCode.UNAVAILABLE, "AUTH_SERVICE_UNAVAILABLE")
    assert orders.call("Ping") == b"pong"  # public methods do not need the auth service
    assert len(orders.guard.cache) == 0  # an outage is never cached


@pytest.mark.parametrize(
    "rules",
    [
        {"ListOrders": "public"},  # not a full method name
        {f"/{ORDERS}/ListOrders": "admin"},  # a bare role name: ambiguous, refused
        {f"/{ORDERS}/ListOrders": set()},  # no role at all
        {f"/{ORDERS}/ListOrders": {"root"}},  # not a role of auth.v1
    ],
)
def test_bad_rules_fail_at_start_up(rules: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_rules(rules)


def test_service_wide_rules_and_role_values() -> None:
    table = parse_rules({"/grpc.health.v1.Health/*": "public", f"/{ORDERS}/CancelOrder": {3, "Manager"}})
    assert table["/grpc.health.v1.Health/*"].public
    assert table[f"/{ORDERS}/CancelOrder"].roles == frozenset({"admin", "manager"})


def test_async_client_against_the_real_server(client: Client) -> None:
    address = "ivy@example.com"

    async def scenario() -> None:
        async with AsyncAuthClient(client.addr) as auth:
            started = await auth.signup("ivy", address, PASSWORD, name="Ivy")
            assert started.delivery_hint == "i***@example.com"
            signup_code = await asyncio.to_thread(client.smtp.last_code, address)
            signed_up = await auth.verify_signup(started.signup_id, signup_code)
            assert signed_up.user.username == "ivy" and signed_up.user.role == 1  # ROLE_USER
            assert signed_up.user.email_verified
            login = await auth.login("ivy", PASSWORD)
            code = await asyncio.to_thread(client.smtp.last_code, address, 2)
            tokens = await auth.verify_otp(login.login_id, code, device_name="Laptop")
            me = await auth.with_token(tokens.access_token).get_me()
            assert (me.user.username, me.session_id) == ("ivy", tokens.session_id)
            sessions = (await auth.list_sessions(token=tokens.access_token)).sessions
            assert [(s.id, s.device_name, s.is_current) for s in sessions] == [(tokens.session_id, "Laptop", True)]
            with pytest.raises(Unauthenticated) as raised:
                await auth.get_me()
            assert raised.value.reason == "TOKEN_MISSING"

    asyncio.run(scenario())


def test_async_guard_with_async_interceptor(client: Client) -> None:
    tokens = sign_in(AuthClient(client.channel), client.smtp, "jack")

    async def scenario() -> None:
        auth = AsyncAuthClient(client.addr)
        guard = AsyncGuard(RULES, auth, services=SERVED, cache_ttl=TTL)
        server = grpc.aio.server(interceptors=[guard])
        server.add_generic_rpc_handlers((async_orders_handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:

            async def current_token() -> str:  # e.g. a refresher task's latest token
                return tokens.access_token

            interceptor = AsyncAuthMetadataInterceptor(token=current_token)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[interceptor]) as channel:
                answer = json.loads(await channel.unary_unary(f"/{ORDERS}/ListOrders")(b"", timeout=5))
                assert (answer["user"], answer["session"]) == ("jack", tokens.session_id)
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await channel.unary_unary(f"/{ORDERS}/CancelOrder")(b"", timeout=5)
                assert failure(denied.value).reason == "INSUFFICIENT_ROLE"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as anonymous:
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await anonymous.unary_unary(f"/{ORDERS}/ListOrders")(b"", timeout=5)
                assert (missing.value.code(), failure(missing.value).reason) == (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "TOKEN_MISSING",
                )
                assert await anonymous.unary_unary(f"/{ORDERS}/Ping")(b"", timeout=5) == b"pong"
        finally:
            await server.stop(0)
            await auth.close()

    asyncio.run(scenario())


def async_orders_handler() -> grpc.GenericRpcHandler:
    async def list_orders(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0)  # a real await between the guard and the read of the identity
        return _identity_json()

    async def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"pong" if optional_identity() is None else b"pong (with an identity?!)"

    async def cancel_order(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"cancelled"

    behaviors = {"ListOrders": list_orders, "CancelOrder": cancel_order, "Ping": ping}
    return grpc.method_handlers_generic_handler(
        ORDERS, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in behaviors.items()}
    )


def test_cache_never_outlives_the_token() -> None:
    """An answer whose token expires in 1 s is kept 1 s at most, whatever the configured TTL."""
    import time as _time

    from google.protobuf.timestamp_pb2 import Timestamp

    from auth_client.gen.auth.v1 import auth_pb2
    from auth_client.guard import IntrospectionCache

    now = [0.0]
    cache = IntrospectionCache(ttl=60, max_entries=10, clock=lambda: now[0])
    soon = Timestamp()
    soon.FromSeconds(int(_time.time()) + 2)
    cache.put("t", "token", auth_pb2.IntrospectResponse(active=True, expires_at=soon))
    assert cache.get("t", "token") is not None
    now[0] = 2.5
    assert cache.get("t", "token") is None
