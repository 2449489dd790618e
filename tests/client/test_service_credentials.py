"""`AuthClient(..., service_credentials=(client_id, secret))` against the real server under the default
AUTH_INTROSPECT_ACCESS=service: it gets its own service token, sends it with Introspect, renews it
before expiry, and a guard built on it works where an anonymous one is refused."""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any

import grpc
import pytest

from auth_client import AsyncAuthClient, AuthClient, AuthMetadataInterceptor, Guard, PermissionDenied, Unauthenticated
from tests.integration.conftest import Client


@pytest.fixture
def server(make_client: Any) -> Client:
    return make_client()  # the default: Introspect for service callers only


def test_the_sync_client_introspects_with_its_own_service_token(server: Client) -> None:
    server.signup("alice")
    person = server.sign_in("alice").access_token
    client_id, secret = server.create_service("orders")
    with AuthClient(server.addr, service_credentials=(client_id, secret)) as auth:
        assert auth.introspect(person).user.username == "alice"
        first = auth.service_token()
        assert auth.introspect(person).active and auth.service_token() == first  # reused, not re-issued
        auth._service.renew_at = 0.0  # type: ignore[union-attr]  # as if it were about to expire
        assert auth.introspect(person).active and auth.service_token() != first
        with pytest.raises(PermissionDenied) as as_person:
            auth.introspect(person, token=person)  # a per-call token wins, and a person may not introspect
        assert as_person.value.reason == "CALLER_NOT_ALLOWED"
    with AuthClient(server.addr) as anonymous, pytest.raises(Unauthenticated) as refused:
        anonymous.introspect(person)
    assert refused.value.reason == "TOKEN_MISSING"
    with AuthClient(server.addr, service_credentials=(client_id, "sk_wrong")) as wrong:
        with pytest.raises(Unauthenticated) as bad:
            wrong.introspect(person)
        assert bad.value.reason == "INVALID_CREDENTIALS"


def test_the_client_gets_a_new_token_when_the_server_refuses_the_old_one(server: Client) -> None:
    server.signup("bob")
    person = server.sign_in("bob").access_token
    client_id, secret = server.create_service("orders")
    with AuthClient(server.addr, service_credentials=(client_id, secret)) as auth:
        auth._service.token = "not-a-token"  # type: ignore[union-attr]  # e.g. the server's keys changed
        auth._service.renew_at = float("inf")  # type: ignore[union-attr]
        assert auth.introspect(person).active


def test_the_asyncio_client_introspects_with_its_own_service_token(server: Client) -> None:
    server.signup("carol")
    person = server.sign_in("carol").access_token
    client_id, secret = server.create_service("orders")

    async def main() -> tuple[bool, bool]:
        async with AsyncAuthClient(server.addr, service_credentials=(client_id, secret)) as auth:
            answers = await asyncio.gather(*(auth.introspect(person) for _ in range(5)))
            return all(a.active for a in answers), bool(await auth.service_token())

    assert asyncio.run(main()) == (True, True)


def test_a_guard_on_a_client_with_service_credentials_works_under_the_default(server: Client) -> None:
    server.signup("dave")
    person = server.sign_in("dave").access_token
    client_id, secret = server.create_service("orders")

    def list_orders(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"orders"

    handler = grpc.method_handlers_generic_handler(
        "example.v1.Orders", {"ListOrders": grpc.unary_unary_rpc_method_handler(list_orders)}
    )
    for credentials, expected in (((client_id, secret), b"orders"), (None, None)):
        auth = AuthClient(server.addr, service_credentials=credentials)
        guard = Guard({"/example.v1.Orders/ListOrders": "authenticated"}, auth, cache_ttl=0)
        orders = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[guard])
        orders.add_generic_rpc_handlers([handler])
        port = orders.add_insecure_port("127.0.0.1:0")
        orders.start()
        try:
            channel = grpc.intercept_channel(
                grpc.insecure_channel(f"127.0.0.1:{port}"), AuthMetadataInterceptor(token=person)
            )
            with channel:
                call = channel.unary_unary("/example.v1.Orders/ListOrders")
                if expected is not None:
                    assert call(b"", timeout=5) == expected
                else:  # without credentials the guard cannot introspect: it fails closed
                    with pytest.raises(grpc.RpcError) as failed:
                        call(b"", timeout=5)
                    assert failed.value.code() != grpc.StatusCode.OK
        finally:
            orders.stop(0)
            auth.close()
