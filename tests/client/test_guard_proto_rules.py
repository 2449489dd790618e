"""The guard reading access rules from the protected service's OWN proto, against the REAL auth server.

`shop.v1` (below) is what another team writes: `import "auth/v1/access.proto";` and an
`option (auth.v1.access)` on each RPC. It is generated at test time with `python -m auth_client.protoc`
(grpcio-tools' protoc plus the include directory the client package ships), imported, served behind a
guard that reads its rules from the descriptors, and called with tokens of the real auth server.
ReportsService forgets one rule: a guard serving it must refuse to start, as the auth service refuses
for itself. The dict form is checked against what is served, so a misspelt method refuses to start too.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pb2 import MethodOptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from auth_client import (
    AccessRuleError,
    AsyncAuthClient,
    AsyncGuard,
    AuthClient,
    AuthMetadataInterceptor,
    Guard,
    current_identity,
    optional_identity,
    proto_include,
)
from auth_client.gen.auth.v1 import access_pb2, auth_pb2
from auth_client.guard import Rule, _Denied, _Gate, parse_rules, read_access_rule
from auth_client.protoc import main as protoc_main
from auth_client.protoc import rewrite_imports
from tests.integration.conftest import Client, md
from tests.support.process import REPO
from tests.support.rpc import failure

ORDERS_PROTO = """\
syntax = "proto3";

package shop.v1;

import "auth/v1/access.proto";

// OrdersService: every RPC carries its access rule, as the auth service's own RPCs do.
service OrdersService {
  rpc PingOrders(PingOrdersRequest) returns (PingOrdersResponse) {
    option (auth.v1.access) = {public: true};
  }
  rpc ListOrders(ListOrdersRequest) returns (ListOrdersResponse) {
    option (auth.v1.access) = {authenticated: true};
  }
  rpc CancelOrder(CancelOrderRequest) returns (CancelOrderResponse) {
    option (auth.v1.access) = {roles: [ROLE_ADMIN]};
  }
}

// ReportsService forgot the rule of ExportReport.
service ReportsService {
  rpc GetReport(GetReportRequest) returns (GetReportResponse) {
    option (auth.v1.access) = {roles: [ROLE_MANAGER, ROLE_ADMIN]};
  }
  rpc ExportReport(ExportReportRequest) returns (ExportReportResponse);
}

message PingOrdersRequest {}
message PingOrdersResponse {
  bool identified = 1;
}
message ListOrdersRequest {}
message ListOrdersResponse {
  string owner = 1;
  string caller_kind = 2;
  string session_id = 3;
}
message CancelOrderRequest {
  string order_id = 1;
}
message CancelOrderResponse {
  string cancelled_by = 1;
}
message GetReportRequest {}
message GetReportResponse {}
message ExportReportRequest {}
message ExportReportResponse {}
"""
ORDERS = "shop.v1.OrdersService"
REPORTS = "shop.v1.ReportsService"
HEALTH = "grpc.health.v1.Health"


@dataclass(frozen=True)
class Shop:
    """The generated modules of shop/v1/orders.proto and where they were written."""

    pb2: ModuleType
    grpc: ModuleType
    out: Path


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """orders.proto generated as the client README says, then imported (once: the descriptor pool is global)."""
    root = tmp_path_factory.mktemp("shop")
    (root / "protos" / "shop" / "v1").mkdir(parents=True)
    (root / "protos" / "shop" / "v1" / "orders.proto").write_text(ORDERS_PROTO)
    out = root / "gen"
    out.mkdir()
    args = [f"-I{root / 'protos'}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    assert protoc_main([*args, str(root / "protos" / "shop" / "v1" / "orders.proto")]) == 0
    # The test's stand-in for the service's own package layout: its generated code on the path.
    sys.path.insert(0, str(out))
    try:
        from shop.v1 import orders_pb2, orders_pb2_grpc  # type: ignore[import-not-found]

        yield Shop(orders_pb2, orders_pb2_grpc, out)
    finally:
        sys.path.remove(str(out))


# ---------------------------------------------------------------------------------------------- shipping


def test_the_package_ships_the_contracts_access_proto() -> None:
    shipped = Path(proto_include()) / "auth" / "v1" / "access.proto"
    assert shipped.read_bytes() == (REPO / "protos" / "auth" / "v1" / "access.proto").read_bytes(), (
        "the shipped access.proto differs from protos/: run scripts/gen-protos"
    )


def test_generated_code_imports_the_module_the_package_ships(shop: Shop) -> None:
    for name in ("orders_pb2.py", "orders_pb2.pyi"):
        source = (shop.out / "shop" / "v1" / name).read_text()
        assert "from auth_client.gen.auth.v1 import access_pb2" in source
        assert "from auth.v1 " not in source  # nobody installs a top-level `auth` package
    assert [d.name for d in shop.pb2.DESCRIPTOR.dependencies] == ["auth/v1/access.proto"]
    assert shop.pb2.DESCRIPTOR.dependencies[0] is access_pb2.DESCRIPTOR  # the one registered extension
    ping = shop.pb2.DESCRIPTOR.services_by_name["OrdersService"].methods_by_name["PingOrders"]
    assert ping.GetOptions().Extensions[access_pb2.access].public


def test_rewrite_imports_touches_only_auth_v1() -> None:
    source = (
        "from auth.v1 import access_pb2 as auth_dot_v1_dot_access__pb2\n"
        "from auth.v1.access_pb2 import *\n"
        "import auth.v1.access_pb2\n"
        "from authz.v1 import x_pb2\n"
        "from shop.v1 import orders_pb2\n"
    )
    assert rewrite_imports(source).splitlines() == [
        "from auth_client.gen.auth.v1 import access_pb2 as auth_dot_v1_dot_access__pb2",
        "from auth_client.gen.auth.v1.access_pb2 import *",
        "import auth_client.gen.auth.v1.access_pb2",
        "from authz.v1 import x_pb2",
        "from shop.v1 import orders_pb2",
    ]


def test_protoc_refuses_an_output_directory_that_does_not_exist(tmp_path: Path, capsys: Any) -> None:
    assert protoc_main([f"--python_out={tmp_path / 'missing'}", "x.proto"]) == 2
    assert "no such directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the service, guarded


def _orders_servicer(shop: Shop) -> Any:
    pb2 = shop.pb2

    class Orders(shop.grpc.OrdersServiceServicer):  # type: ignore[name-defined, misc]
        def PingOrders(self, request: Any, context: grpc.ServicerContext) -> Any:
            return pb2.PingOrdersResponse(identified=optional_identity() is not None)

        def ListOrders(self, request: Any, context: grpc.ServicerContext) -> Any:
            me = current_identity()
            return pb2.ListOrdersResponse(owner=me.user.username, caller_kind=me.kind, session_id=me.session_id)

        def CancelOrder(self, request: Any, context: grpc.ServicerContext) -> Any:
            return pb2.CancelOrderResponse(cancelled_by=current_identity().user.username)

    return Orders()


@pytest.fixture
def serve(shop: Shop) -> Iterator[Callable[[Guard], int]]:
    """Serve OrdersService and health behind `guard`; the port."""
    servers: list[grpc.Server] = []

    def start(guard: Guard) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[guard])
        shop.grpc.add_OrdersServiceServicer_to_server(_orders_servicer(shop), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(0).wait()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    # The guard here introspects without credentials of its own, which the auth service allows only
    # with its migration setting; a guard holding service credentials is issue 12's other part.
    return make_client(AUTH_INTROSPECT_ACCESS="public")


@pytest.fixture
def auth(client: Client) -> Iterator[AuthClient]:
    with AuthClient(client.addr) as auth_client:
        yield auth_client


def test_rules_from_the_services_own_proto(client: Client, shop: Shop, auth: AuthClient, serve: Any) -> None:
    # cache_ttl=0: each call asks the auth server, so a logout shows on the very next call.
    guard = Guard(auth=auth, services=[ORDERS, HEALTH], rules={f"/{HEALTH}/*": "public"}, cache_ttl=0)
    rules = guard._gate.rules  # one rule per served method, read from the protos, checked at start-up
    assert {name for name in rules if name.startswith(f"/{ORDERS}/")} == {
        f"/{ORDERS}/CancelOrder",
        f"/{ORDERS}/ListOrders",
        f"/{ORDERS}/PingOrders",
    }
    assert f"/{HEALTH}/Check" in rules and all(r.public for n, r in rules.items() if n.startswith(f"/{HEALTH}/"))
    port = serve(guard)
    pb2 = shop.pb2

    def orders(token: str | None = None) -> Any:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(f"127.0.0.1:{port}"), AuthMetadataInterceptor(token=token)
        )
        return shop.grpc.OrdersServiceStub(channel)

    # public: answers without a token, and no identity is made up
    assert orders().PingOrders(pb2.PingOrdersRequest(), timeout=5).identified is False
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # the dict rule of a service without options
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING

    # authenticated: a token of a live session is needed
    with pytest.raises(grpc.RpcError) as missing:
        orders().ListOrders(pb2.ListOrdersRequest(), timeout=5)
    assert (failure(missing.value).code, failure(missing.value).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    client.signup("olive")
    tokens = client.sign_in("olive")
    mine = orders(tokens.access_token).ListOrders(pb2.ListOrdersRequest(), timeout=5)
    assert (mine.owner, mine.caller_kind, mine.session_id) == ("olive", "user", tokens.session_id)

    # roles: a user is refused an admin method, an admin passes
    with pytest.raises(grpc.RpcError) as refused:
        orders(tokens.access_token).CancelOrder(pb2.CancelOrderRequest(order_id="o-1"), timeout=5)
    assert (failure(refused.value).code, failure(refused.value).reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_ROLE",
    )
    admin = client.sign_in_admin("adam")
    cancelled = orders(admin).CancelOrder(pb2.CancelOrderRequest(order_id="o-1"), timeout=5)
    assert cancelled.cancelled_by == "adam"

    # the session ends: its token no longer opens the authenticated method
    client.auth.LogoutSession(
        auth_pb2.LogoutSessionRequest(session_id=tokens.session_id), metadata=md(tokens.access_token)
    )
    with pytest.raises(grpc.RpcError) as revoked:
        orders(tokens.access_token).ListOrders(pb2.ListOrdersRequest(), timeout=5)
    assert (failure(revoked.value).code, failure(revoked.value).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_REVOKED",
    )


def test_a_descriptor_works_as_well_as_its_name(shop: Shop) -> None:
    service = shop.pb2.DESCRIPTOR.services_by_name["OrdersService"]
    with AuthClient("127.0.0.1:1") as auth:
        guard = Guard(auth=auth, services=[service])
    assert guard._gate.rules[f"/{ORDERS}/CancelOrder"].roles == frozenset({"admin"})
    assert guard._gate.rules[f"/{ORDERS}/PingOrders"].public


# ------------------------------------------------------------------------------ refusing to start


@pytest.fixture(params=["sync", "asyncio"])
def make_guard(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Guard or AsyncGuard: both must refuse the same configurations at construction."""

    def make(**options: Any) -> Any:
        if request.param == "sync":
            with AuthClient("127.0.0.1:1") as auth:  # never called: the guard fails or is dropped first
                return Guard(auth=auth, **options)

        async def make_async() -> AsyncGuard:
            auth = AsyncAuthClient("127.0.0.1:1")  # an aio channel belongs inside a running loop
            try:
                return AsyncGuard(auth=auth, **options)
            finally:
                await auth.close()

        return asyncio.run(make_async())

    return make


def test_a_served_method_without_a_rule_refuses_to_start(shop: Shop, make_guard: Callable[..., Any]) -> None:
    with pytest.raises(AccessRuleError) as refused:
        make_guard(services=[ORDERS, REPORTS])
    assert str(refused.value) == (
        f"/{REPORTS}/ExportReport declares no (auth.v1.access) rule and the rules dict has none"
    )
    # The dict form fills in what a proto lacks, but never overrides what it declares.
    make_guard(services=[ORDERS, REPORTS], rules={f"/{REPORTS}/ExportReport": {"manager"}})
    with pytest.raises(
        AccessRuleError, match=re.escape(f"/{REPORTS}/GetReport has a rule in its proto and in the rules dict")
    ):
        make_guard(services=[REPORTS], rules={f"/{REPORTS}/*": "authenticated"})


def test_a_misspelt_method_in_the_dict_refuses_to_start(shop: Shop, make_guard: Callable[..., Any]) -> None:
    served = ["/billing.v1.Billing/Charge", "/billing.v1.Billing/Refund"]
    make_guard(
        services=served, rules={"/billing.v1.Billing/Charge": "authenticated", "/billing.v1.Billing/Refund": {"admin"}}
    )
    with pytest.raises(AccessRuleError) as refused:
        make_guard(
            services=served,
            rules={"/billing.v1.Billing/Charge": "authenticated", "/billing.v1.Billing/Refnud": {"admin"}},
        )
    message = str(refused.value)
    assert (
        "rules: /billing.v1.Billing/Refnud is not a served method (did you mean /billing.v1.Billing/Refund?)" in message
    )
    assert "/billing.v1.Billing/Refund declares no (auth.v1.access) rule" in message  # and the real one has none
    with pytest.raises(AccessRuleError, match=re.escape("rules: /billing.v1.Biling/* names no served service")):
        make_guard(services=served, rules={"/billing.v1.Biling/*": "public", "/billing.v1.Billing/Charge": "public"})
    with pytest.raises(
        AccessRuleError, match=re.escape("service 'shop.v1.OrderService' is not in protobuf's default pool")
    ):
        make_guard(services=["shop.v1.OrderService"])


def test_the_old_dict_only_form_still_works_but_warns() -> None:
    with AuthClient("127.0.0.1:1") as auth, pytest.warns(DeprecationWarning, match="services="):
        guard = Guard({"/billing.v1.Billing/Charge": "public"}, auth)
    assert guard._gate.rules["/billing.v1.Billing/Charge"].public
    with pytest.raises(TypeError, match="auth="):
        Guard(services=["/billing.v1.Billing/Charge"])


# ------------------------------------------------------------------------------ reading one rule


def _options(rule: bytes) -> MethodOptions:
    """Method options whose (auth.v1.access) holds exactly these wire bytes."""
    options = MethodOptions()
    options.Extensions[access_pb2.access].SetInParent()  # present even when empty
    options.Extensions[access_pb2.access].MergeFromString(rule)
    return MethodOptions.FromString(options.SerializeToString())


AUTHENTICATED = b"\x10\x01"  # field 2, true
SERVICES = b"\x22\x07billing"  # field 4: services: ["billing"]
FIELD_99 = b"\x9a\x06\x05later"  # field 99: a field no access.proto of this version has


def test_services_are_read_beside_people_or_alone() -> None:
    beside = read_access_rule("/x.v1.S/M", _options(AUTHENTICATED + SERVICES))
    assert beside == Rule(public=False, roles=None, people=True, services=frozenset({"billing"}))
    alone = read_access_rule("/x.v1.S/M", _options(SERVICES))
    assert alone == Rule(public=False, roles=None, people=False, services=frozenset({"billing"}))
    with pytest.raises(AccessRuleError, match="names"):
        read_access_rule("/x.v1.S/M", _options(b"\x22\x03Bad"))  # not a service account name


def test_unknown_rule_fields_do_not_stop_the_start() -> None:
    beside = read_access_rule("/x.v1.S/M", _options(AUTHENTICATED + FIELD_99))
    assert beside is not None and (beside.public, beside.roles, beside.people) == (False, None, True)
    alone = read_access_rule("/x.v1.S/M", _options(FIELD_99))
    assert alone == Rule(public=False, roles=None, people=False, services=None)  # admits nobody


def test_rules_the_auth_service_would_refuse_are_refused() -> None:
    assert read_access_rule("/x.v1.S/M", MethodOptions()) is None
    for bad in (b"", b"\x08\x01\x10\x01", b"\x18\x00", b"\x18\x09"):  # empty, public+authenticated, roles 0 / 9
        with pytest.raises(AccessRuleError, match=re.escape("/x.v1.S/M")):
            read_access_rule("/x.v1.S/M", _options(bad))


def _refused(rule: Rule, answer: auth_pb2.IntrospectResponse) -> tuple[grpc.StatusCode, bytes]:
    with pytest.raises(_Denied) as denied:
        _Gate.judge(rule, answer)
    return denied.value.status.code, dict(denied.value.status.trailing_metadata)["grpc-status-details-bin"]


def test_people_and_services_are_kept_apart() -> None:
    """A person's token never satisfies `services`, a service token never `authenticated` or roles."""
    person = auth_pb2.IntrospectResponse(active=True, user=auth_pb2.User(id="u-1", role=access_pb2.ROLE_ADMIN))
    billing = auth_pb2.IntrospectResponse(
        active=True, service_account=auth_pb2.ServiceAccountInfo(id="svc_1", name="billing")
    )
    people = Rule(public=False, roles=None)
    admins = Rule(public=False, roles=frozenset({"admin"}))
    services_only = Rule(public=False, roles=None, people=False, services=frozenset({"billing"}))
    mixed = Rule(public=False, roles=None, people=True, services=frozenset({"billing"}))
    anyone = Rule(public=False, roles=None, people=False, services=frozenset({"*"}))
    assert _Gate.judge(people, person).kind == "user"
    assert _Gate.judge(mixed, person).kind == "user"
    me = _Gate.judge(mixed, billing, "acme")
    assert (me.kind, me.service_account_id, me.service_name, me.tenant, me.user_id) == (
        "service",
        "svc_1",
        "billing",
        "acme",
        "",
    )
    assert _Gate.judge(anyone, billing).service_name == "billing"
    reports = auth_pb2.IntrospectResponse(
        active=True, service_account=auth_pb2.ServiceAccountInfo(id="svc_2", name="reports")
    )
    for rule, answer in (
        (services_only, person),
        (people, billing),
        (admins, billing),
        (services_only, reports),  # a rule naming another service
        (Rule(public=False, roles=None, people=False), person),  # a rule of fields this guard does not know
        (people, auth_pb2.IntrospectResponse(active=True)),  # live, yet neither kind
        (mixed, auth_pb2.IntrospectResponse(active=False, inactive_reason="CALLER_NOT_ALLOWED")),  # wrong tenant
    ):
        code, details = _refused(rule, answer)
        assert code == grpc.StatusCode.PERMISSION_DENIED and b"CALLER_NOT_ALLOWED" in details and b"auth.v1" in details
    code, details = _refused(mixed, auth_pb2.IntrospectResponse(inactive_reason="SERVICE_ACCOUNT_REVOKED"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and b"SERVICE_ACCOUNT_REVOKED" in details


def test_the_dict_form_names_services() -> None:
    rules = parse_rules(
        {
            "/x.v1.S/A": {"services": ["billing"]},
            "/x.v1.S/B": {"authenticated": True, "services": ["*"]},
            "/x.v1.S/C": {"roles": ["admin"], "services": ["billing", "reports"]},
        }
    )
    assert rules["/x.v1.S/A"] == Rule(public=False, roles=None, people=False, services=frozenset({"billing"}))
    assert rules["/x.v1.S/B"] == Rule(public=False, roles=None, people=True, services=frozenset({"*"}))
    assert rules["/x.v1.S/C"].roles == frozenset({"admin"}) and rules["/x.v1.S/C"].people
    for bad in (
        {"services": []},
        {"services": "billing"},  # a string, not a list
        {"services": ["Billing!"]},
        {"authenticated": True},
        {"authenticated": True, "roles": ["admin"], "services": ["*"]},
        {"public": True, "services": ["*"]},
    ):
        with pytest.raises(ValueError, match=re.escape("/x.v1.S/M")):
            parse_rules({"/x.v1.S/M": bad})
