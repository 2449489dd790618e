"""Revocations pushed to the guard (WatchRevocations), against the REAL auth server: with service
credentials the guard evicts a revoked session's cached answer at once, although its cache TTL is 60 s
(only the push can explain the refusal); when the stream is down it falls back to the TTL and says so.
Waiting is polling with a generous deadline, never a sleep that the result depends on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from auth_client import AsyncAuthClient, AsyncGuard, AuthClient, AuthMetadataInterceptor, Guard
from auth_client.gen.auth.v1 import auth_pb2
from tests.integration.conftest import Client, md

TTL = 60.0  # far longer than any test: only a pushed revocation evicts within it
DEADLINE = 20.0
LIST = "/example.v1.Orders/ListOrders"


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval only: the deadline decides


def handler() -> grpc.GenericRpcHandler:
    def list_orders(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"orders"

    return grpc.method_handlers_generic_handler(
        "example.v1.Orders", {"ListOrders": grpc.unary_unary_rpc_method_handler(list_orders)}
    )


@pytest.fixture
def server(make_client: Any) -> Client:
    return make_client()  # the default: Introspect and WatchRevocations for service callers only


@pytest.fixture
def guarded(server: Client) -> Iterator[Callable[..., tuple[Guard, Callable[[str], grpc.StatusCode]]]]:
    closers: list[Callable[[], Any]] = []

    def make(**guard_options: Any) -> tuple[Guard, Callable[[str], grpc.StatusCode]]:
        client_id, secret = server.create_service(f"orders{len(closers)}")
        auth = AuthClient(server.addr, service_credentials=(client_id, secret))
        guard = Guard(auth=auth, services=[LIST], rules={LIST: "authenticated"}, cache_ttl=TTL, **guard_options)
        orders = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[guard])
        orders.add_generic_rpc_handlers([handler()])
        port = orders.add_insecure_port("127.0.0.1:0")
        orders.start()
        closers.extend([auth.close, guard.close, lambda: orders.stop(0)])

        def call(token: str) -> grpc.StatusCode:
            channel = grpc.intercept_channel(
                grpc.insecure_channel(f"127.0.0.1:{port}"), AuthMetadataInterceptor(token=token)
            )
            with channel:
                try:
                    channel.unary_unary(LIST)(b"", timeout=5)
                except grpc.RpcError as error:
                    return error.code()  # type: ignore[attr-defined,no-any-return]
                return grpc.StatusCode.OK

        return guard, call

    yield make
    for close in reversed(closers):
        close()


def test_a_revoked_session_is_refused_long_before_the_cache_ttl(server: Client, guarded: Any) -> None:
    registry = CollectorRegistry()
    guard, call = guarded(metrics_registry=registry)
    until(lambda: guard.revocations.up, "the revocation stream")
    server.signup("alice")
    laptop, phone = server.sign_in("alice"), server.sign_in("alice")
    assert call(laptop.access_token) == grpc.StatusCode.OK and call(phone.access_token) == grpc.StatusCode.OK
    assert len(guard.cache) == 2

    revoke = auth_pb2.LogoutSessionRequest(session_id=phone.session_id)
    server.auth.LogoutSession(revoke, metadata=md(laptop.access_token))
    started = time.monotonic()
    until(lambda: call(phone.access_token) == grpc.StatusCode.UNAUTHENTICATED, "the revoked session refused")
    assert time.monotonic() - started < TTL / 10
    assert call(laptop.access_token) == grpc.StatusCode.OK  # only that session's answer was dropped

    # A user-wide event (logout everywhere) drops every cached answer of the user.
    server.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(laptop.access_token))
    until(lambda: call(laptop.access_token) == grpc.StatusCode.UNAUTHENTICATED, "every session refused")
    assert registry.get_sample_value("auth_guard_revocation_stream_up") == 1
    assert registry.get_sample_value("auth_guard_revocation_events_total") == 2


def test_without_the_stream_the_guard_falls_back_to_the_ttl_and_says_so(
    server: Client, guarded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    guard, call = guarded(metrics_registry=registry)
    until(lambda: guard.revocations.up, "the revocation stream")
    server.signup("bob")
    laptop, phone = server.sign_in("bob"), server.sign_in("bob")
    assert call(phone.access_token) == grpc.StatusCode.OK

    assert server.app is not None
    server.app.revocations.close()  # type: ignore[union-attr]  # the auth service stops streaming
    until(lambda: not guard.revocations.up, "the guard to notice")
    assert registry.get_sample_value("auth_guard_revocation_stream_up") == 0
    assert registry.get_sample_value("auth_guard_revocation_fallbacks_total") == 1
    assert any("revocation stream down" in r.getMessage() for r in caplog.records)

    revoke = auth_pb2.LogoutSessionRequest(session_id=phone.session_id)
    server.auth.LogoutSession(revoke, metadata=md(laptop.access_token))
    # Nothing pushes now: the cached answer stands until its TTL (60 s), as before push existed.
    assert call(phone.access_token) == grpc.StatusCode.OK


def test_the_async_guard_evicts_on_a_pushed_revocation(server: Client) -> None:
    server.signup("carol")
    laptop, phone = server.sign_in("carol"), server.sign_in("carol")
    client_id, secret = server.create_service("billing")

    async def main() -> tuple[grpc.StatusCode, grpc.StatusCode]:
        async with AsyncAuthClient(server.addr, service_credentials=(client_id, secret)) as auth:
            guard = AsyncGuard(auth=auth, services=[LIST], rules={LIST: "authenticated"}, cache_ttl=TTL)

            async def list_orders(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return b"orders"

            orders = grpc.aio.server(interceptors=[guard])
            orders.add_generic_rpc_handlers(
                [
                    grpc.method_handlers_generic_handler(
                        "example.v1.Orders", {"ListOrders": grpc.unary_unary_rpc_method_handler(list_orders)}
                    )
                ]
            )
            port = orders.add_insecure_port("127.0.0.1:0")
            await orders.start()
            guard.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    list_call = channel.unary_unary(LIST)

                    async def status(token: str) -> grpc.StatusCode:
                        try:
                            await list_call(b"", metadata=[("authorization", f"Bearer {token}")], timeout=5)
                        except grpc.aio.AioRpcError as error:
                            return error.code()
                        return grpc.StatusCode.OK

                    deadline = time.monotonic() + DEADLINE
                    while not guard.revocations.up:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.01)
                    before = await status(phone.access_token)
                    revoke = auth_pb2.LogoutSessionRequest(session_id=phone.session_id)
                    await asyncio.to_thread(server.auth.LogoutSession, revoke, metadata=md(laptop.access_token))
                    while (after := await status(phone.access_token)) == grpc.StatusCode.OK:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.01)
                    return before, after
            finally:
                await guard.close()
                await orders.stop(0)

    assert asyncio.run(main()) == (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
