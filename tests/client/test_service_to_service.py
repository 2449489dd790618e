"""Service-to-service through the client guard, against the REAL auth server (default: Introspect for
service callers only).

`depot.v1.OrdersService` is another team's service with its own proto rules: ListOrders admits people
and the "billing" service, SettleOrders the "billing" service only. Orders mounts the guard with its
own service account ("orders": it introspects and watches revocations as itself). Callers: a person,
Billing with the token its AuthClient(service_credentials=...) gets, and a "reports" service the rules
do not name. Billing's account is then rotated and deleted; with a long cache TTL the revocation push
is what makes the guard see it, on the next call.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auth_client import AsyncAuthClient, AsyncGuard, AuthClient, AuthMetadataInterceptor, Guard, current_identity
from auth_client.protoc import main as protoc_main
from auth_server.domain.audit import Audit
from auth_server.domain.services import ServiceAccounts
from auth_server.infra.keys import KeyRing
from tests.integration.conftest import SECRET, TENANTS, Client
from tests.support.rpc import failure

DEPOT_PROTO = """\
syntax = "proto3";

package depot.v1;

import "auth/v1/access.proto";

service OrdersService {
  // People, and the billing service.
  rpc ListOrders(ListOrdersRequest) returns (ListOrdersResponse) {
    option (auth.v1.access) = {authenticated: true, services: ["billing"]};
  }
  // The billing service only.
  rpc SettleOrders(SettleOrdersRequest) returns (SettleOrdersResponse) {
    option (auth.v1.access) = {services: ["billing"]};
  }
}

message ListOrdersRequest {}
message ListOrdersResponse {
  string caller_kind = 1;
  string caller = 2;
}
message SettleOrdersRequest {}
message SettleOrdersResponse {
  string settled_by = 1;
}
"""
ORDERS = "depot.v1.OrdersService"
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@dataclass(frozen=True)
class Depot:
    pb2: ModuleType
    grpc: ModuleType


@pytest.fixture(scope="module")
def depot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Depot]:
    """depot/v1/orders.proto generated with `python -m auth_client.protoc`, imported once."""
    root = tmp_path_factory.mktemp("depot")
    (root / "protos" / "depot" / "v1").mkdir(parents=True)
    (root / "protos" / "depot" / "v1" / "orders.proto").write_text(DEPOT_PROTO)
    out = root / "gen"
    out.mkdir()
    args = [f"-I{root / 'protos'}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc_main([*args, str(root / "protos" / "depot" / "v1" / "orders.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        from depot.v1 import orders_pb2, orders_pb2_grpc  # type: ignore[import-not-found]

        yield Depot(orders_pb2, orders_pb2_grpc)
    finally:
        sys.path.remove(str(out))


def _servicer(depot: Depot) -> Any:
    pb2 = depot.pb2

    class Orders(depot.grpc.OrdersServiceServicer):  # type: ignore[name-defined, misc]
        def ListOrders(self, request: Any, context: Any) -> Any:
            me = current_identity()
            return pb2.ListOrdersResponse(
                caller_kind=me.kind, caller=me.service_name if me.kind == "service" else me.user.username
            )

        def SettleOrders(self, request: Any, context: Any) -> Any:
            return pb2.SettleOrdersResponse(settled_by=current_identity().service_name)

    return Orders()


@pytest.fixture
def server(make_client: Callable[..., Client]) -> Client:
    return make_client()  # the default: Introspect for service callers only


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "auth.v1"
    return refused.value.code(), info.reason  # type: ignore[attr-defined]


def test_billing_calls_orders_with_its_service_token(server: Client, depot: Depot) -> None:
    pb2 = depot.pb2
    orders_auth = AuthClient(server.addr, service_credentials=server.create_service("orders"))
    # A long TTL: only the revocation push can make the guard see the deletion before a minute is out.
    guard = Guard(auth=orders_auth, services=[ORDERS], cache_ttl=60)
    orders_server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[guard])
    depot.grpc.add_OrdersServiceServicer_to_server(_servicer(depot), orders_server)
    port = orders_server.add_insecure_port("127.0.0.1:0")
    orders_server.start()
    channels: list[grpc.Channel] = []

    def orders(token: Any) -> Any:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(f"127.0.0.1:{port}"), AuthMetadataInterceptor(token=token)
        )
        channels.append(channel)
        return depot.grpc.OrdersServiceStub(channel)

    billing_auth = AuthClient(server.addr, service_credentials=server.create_service("billing"))
    try:
        _wait_for(lambda: guard.revocations.up)

        # A person: the mixed rule admits them, the services-only one does not.
        server.signup("paula")
        paula = orders(server.sign_in("paula").access_token)
        listed = paula.ListOrders(pb2.ListOrdersRequest(), timeout=5)
        assert (listed.caller_kind, listed.caller) == ("user", "paula")
        assert _code(lambda: paula.SettleOrders(pb2.SettleOrdersRequest(), timeout=5)) == (DENIED, "CALLER_NOT_ALLOWED")

        # Billing, with the token its own client gets and renews (a callable: always the current one).
        billing = orders(billing_auth.service_token)
        listed = billing.ListOrders(pb2.ListOrdersRequest(), timeout=5)
        assert (listed.caller_kind, listed.caller) == ("service", "billing")
        assert billing.SettleOrders(pb2.SettleOrdersRequest(), timeout=5).settled_by == "billing"

        # A service the rules do not name: refused on both, whether beside people or alone.
        reports = orders(server.service_token("reports"))
        assert _code(lambda: reports.ListOrders(pb2.ListOrdersRequest(), timeout=5)) == (DENIED, "CALLER_NOT_ALLOWED")
        assert _code(lambda: reports.SettleOrders(pb2.SettleOrdersRequest(), timeout=5)) == (
            DENIED,
            "CALLER_NOT_ALLOWED",
        )

        accounts = ServiceAccounts(server.store, KeyRing.from_secret(SECRET.encode()), Audit(server.store), TENANTS)
        token = billing_auth.service_token()
        assert guard.cache.get(None, token) is not None  # Billing's answer is cached, for a minute

        # Rotated (with an overlap): its cached answer is dropped; the token still works during the overlap.
        events = guard.revocations.events
        accounts.rotate("billing", overlap_seconds=3600)
        _wait_for(lambda: guard.revocations.events > events)
        assert guard.cache.get(None, token) is None
        assert billing.SettleOrders(pb2.SettleOrdersRequest(), timeout=5).settled_by == "billing"
        assert guard.cache.get(None, token) is not None

        # Deleted: the push drops the cached answer, and the next call is refused.
        events = guard.revocations.events
        accounts.delete("billing")
        _wait_for(lambda: guard.revocations.events > events)
        assert _code(lambda: billing.SettleOrders(pb2.SettleOrdersRequest(), timeout=5)) == (
            UNAUTHENTICATED,
            "SERVICE_ACCOUNT_REVOKED",
        )
        assert _code(lambda: billing.ListOrders(pb2.ListOrdersRequest(), timeout=5)) == (
            UNAUTHENTICATED,
            "SERVICE_ACCOUNT_REVOKED",
        )
    finally:
        for channel in channels:
            channel.close()
        orders_server.stop(0).wait()
        guard.close()
        billing_auth.close()
        orders_auth.close()


def test_the_asyncio_guard_applies_services_rules_too(server: Client, depot: Depot) -> None:
    pb2 = depot.pb2
    orders_creds = server.create_service("orders")
    billing_token = server.service_token("billing")
    reports_token = server.service_token("reports")
    acme_only = server.service_token("acme-billing", tenants="acme", tenant="acme")
    server.signup("quinn")
    person = server.sign_in("quinn").access_token

    async def main() -> list[Any]:
        auth = AsyncAuthClient(server.addr, service_credentials=orders_creds)
        guard = AsyncGuard(auth=auth, services=[ORDERS], cache_ttl=0, watch_revocations=False)
        orders_server = grpc.aio.server(interceptors=[guard])
        depot.grpc.add_OrdersServiceServicer_to_server(_servicer(depot), orders_server)
        port = orders_server.add_insecure_port("127.0.0.1:0")
        await orders_server.start()
        seen: list[Any] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = depot.grpc.OrdersServiceStub(channel)
                for token, method in (
                    (billing_token, "SettleOrders"),
                    (billing_token, "ListOrders"),
                    (person, "SettleOrders"),
                    (reports_token, "SettleOrders"),
                    (acme_only, "SettleOrders"),  # default tenant: not one this account may call in
                ):
                    request = getattr(pb2, f"{method}Request")()
                    try:
                        answer = await getattr(stub, method)(
                            request, metadata=[("authorization", f"Bearer {token}")], timeout=5
                        )
                        seen.append(answer.settled_by if method == "SettleOrders" else answer.caller_kind)
                    except grpc.aio.AioRpcError as error:
                        seen.append((error.code(), failure(error).reason))
        finally:
            await orders_server.stop(0)
            await guard.close()
            await auth.close()
        return seen

    assert asyncio.run(main()) == [
        "billing",
        "service",
        (DENIED, "CALLER_NOT_ALLOWED"),
        (DENIED, "CALLER_NOT_ALLOWED"),
        (DENIED, "CALLER_NOT_ALLOWED"),
    ]
