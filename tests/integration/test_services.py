"""Service accounts against the real server, on both stores: attacks first, then the lifecycle.

Accounts are made as the CLI makes them (`Client.create_service`, the domain over the server's store);
time is moved by editing the stored record, never by sleeping.
"""

from __future__ import annotations

from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from auth_client.gen.auth.v1 import access_pb2, admin_pb2, auth_pb2
from auth_server.api.guard import AccessRuleError, Guard, current_call, load_rules
from auth_server.domain.audit import Audit
from auth_server.domain.services import ServiceAccounts
from auth_server.domain.sessions import Sessions
from auth_server.domain.throttle import Throttle
from auth_server.domain.tokens import AccessTokens, RefreshTokens
from auth_server.infra.clock import utcnow
from auth_server.infra.config import load_settings
from auth_server.infra.keys import KeyRing
from auth_server.infra.metrics import Metrics
from tests.integration.conftest import SECRET, TENANTS, Client, md
from tests.support.rpc import fails, failure

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
KEYS = KeyRing.from_secret(SECRET.encode())


def issue(client: Client, client_id: str, secret: str, tenant: str | None = None) -> auth_pb2.IssueServiceTokenResponse:
    request = auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
    return client.auth.IssueServiceToken(request, metadata=md(tenant=tenant))


def issue_fails(client: Client, client_id: str, secret: str, tenant: str | None = None) -> Any:
    request = auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
    return fails(client.auth.IssueServiceToken, request, metadata=md(tenant=tenant))


def introspect(client: Client, token: str | None, tenant: str | None = None, probe: str = "x") -> Any:
    return client.auth.Introspect(auth_pb2.IntrospectRequest(access_token=probe), metadata=md(token, tenant))


def introspect_fails(client: Client, token: str | None, tenant: str | None = None) -> Any:
    return fails(client.auth.Introspect, auth_pb2.IntrospectRequest(access_token="x"), metadata=md(token, tenant))


def forge(**claims: Any) -> str:
    """A token signed with the server's real key (what a leaked key or a confused kind would give)."""
    now = int(utcnow().timestamp())
    payload = {"iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, KEYS.jwt, algorithm="HS256", headers={"typ": "at+jwt"})


# -- attacks -------------------------------------------------------------------------------------


def test_introspect_is_refused_to_anonymous_callers_and_to_people_by_default(client: Client) -> None:
    client.signup("alice")
    person = client.sign_in("alice").access_token
    anonymous = introspect_fails(client, None)
    assert (anonymous.code, anonymous.reason) == (UNAUTHENTICATED, "TOKEN_MISSING")
    as_person = introspect_fails(client, person)
    assert (as_person.code, as_person.reason) == (DENIED, "CALLER_NOT_ALLOWED")
    answer = introspect(client, client.service_token(), probe=person)
    assert answer.active and answer.user.username == "alice"


def test_a_service_token_never_passes_for_a_person(client: Client) -> None:
    token = client.service_token()
    for call, request in (
        (client.auth.GetMe, auth_pb2.GetMeRequest()),
        (client.auth.ListSessions, auth_pb2.ListSessionsRequest()),
        (client.admin.ListUsers, admin_pb2.ListUsersRequest()),
    ):
        seen = fails(call, request, metadata=md(token))
        assert (seen.code, seen.reason) == (DENIED, "CALLER_NOT_ALLOWED")
    # Introspect calls it live, as a service account's token: no user, no session.
    answer = introspect(client, client.service_token("other"), probe=token)
    assert answer.active and answer.service_account.name == "probe" and not answer.HasField("user")


def test_introspect_answers_for_a_service_token(client: Client) -> None:
    """Live: the account (id, name), its expiry, and nothing of a person's; then each way it dies."""
    caller = client.service_token("orders")
    billing_id, billing_secret = client.create_service("billing")
    billing = issue(client, billing_id, billing_secret)
    live = introspect(client, caller, probe=billing.access_token)
    assert live.active and not live.inactive_reason
    assert (live.service_account.id, live.service_account.name) == (billing_id, "billing")
    assert not live.HasField("user") and not live.session_id and not live.tenant_id
    assert live.expires_at == billing.expires_at  # a cache must not outlive the token
    in_acme = introspect(client, caller, tenant="acme", probe=billing.access_token)  # platform-wide: any tenant
    assert in_acme.active and in_acme.service_account.name == "billing"

    # An account restricted to acme: live there, CALLER_NOT_ALLOWED elsewhere (an answer, not an error).
    acme_id, acme_secret = client.create_service("acme-billing", tenants="acme")
    acme_only = issue(client, acme_id, acme_secret, tenant="acme").access_token
    assert introspect(client, caller, tenant="acme", probe=acme_only).service_account.id == acme_id
    elsewhere = introspect(client, caller, tenant="default", probe=acme_only)
    assert (elsewhere.active, elsewhere.inactive_reason) == (False, "CALLER_NOT_ALLOWED")
    assert not elsewhere.HasField("service_account")

    # Deleted: inactive on the very next Introspect.
    ServiceAccounts(client.store, KEYS, Audit(client.store), TENANTS).delete("billing")
    gone = introspect(client, caller, probe=billing.access_token)
    assert (gone.active, gone.inactive_reason) == (False, "SERVICE_ACCOUNT_REVOKED")
    assert not gone.HasField("service_account") and not gone.HasField("expires_at")


def test_tokens_mixing_both_kinds_are_invalid_everywhere(client: Client) -> None:
    client.signup("mallory")
    session_id = client.sign_in("mallory").session_id
    client_id, _ = client.create_service("orders")
    for token in (
        forge(type="service", session_id=session_id),  # a service type carrying a person's session
        forge(type="access", service_account_id=client_id),  # a person's type carrying a service id
        forge(type="service", service_account_id=client_id, session_id=session_id),  # both
        forge(type="admin", service_account_id=client_id),
    ):
        assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(token)).reason == "TOKEN_INVALID"
        assert introspect_fails(client, token).reason == "TOKEN_INVALID"


def test_a_wrong_secret_and_an_unknown_client_id_answer_the_same(client: Client) -> None:
    client_id, secret = client.create_service("orders")
    wrong = issue_fails(client, client_id, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    unknown = issue_fails(client, "svc_" + "0" * 32, secret)
    other_id = issue_fails(client, client.create_service("billing")[0], secret)  # another account's id
    for seen in (wrong, unknown, other_id):
        assert (seen.code, seen.reason, seen.message) == (UNAUTHENTICATED, "INVALID_CREDENTIALS", wrong.message)
    missing = issue_fails(client, "", "")
    assert missing.reason == "VALIDATION_FAILED" and set(missing.fields) == {"client_id", "client_secret"}
    assert issue(client, client_id, secret).access_token


def test_issue_service_token_is_throttled_per_source_and_per_client(make_client: Any) -> None:
    client = make_client(AUTH_LOCKOUT_THRESHOLD="3")
    client_id, secret = client.create_service("orders")
    for _ in range(3):
        assert issue_fails(client, client_id, "sk_wrong").reason == "INVALID_CREDENTIALS"
    locked = issue_fails(client, client_id, secret)  # even the right secret, from this source, for a while
    assert (locked.code, locked.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert locked.retry_after and locked.retry_after > 0
    other_id, other_secret = client.create_service("billing")
    assert issue(client, other_id, other_secret).access_token  # another client id is not locked

    # Per source, across client ids (counted per tenant: "acme" is fresh, "default" was used above).
    limited = make_client(AUTH_SOURCE_LOGIN_RATE="2")  # the same store: the accounts are platform-wide
    client_id, secret = limited.create_service("shipping")
    assert issue(limited, client_id, secret, tenant="acme").access_token
    assert issue_fails(limited, "svc_unknown", "sk_x", tenant="acme").reason == "INVALID_CREDENTIALS"
    assert issue_fails(limited, client_id, secret, tenant="acme").reason == "RATE_LIMITED"  # 2 a minute


def test_a_service_restricted_to_other_tenants_is_refused(client: Client) -> None:
    client_id, secret = client.create_service("acme-only", tenants="acme")
    refused = issue_fails(client, client_id, secret)  # default tenant
    assert (refused.code, refused.reason) == (DENIED, "CALLER_NOT_ALLOWED")
    token = issue(client, client_id, secret, tenant="acme").access_token
    client.signup("bob", tenant="acme")
    person = client.sign_in("bob", tenant="acme").access_token
    assert introspect(client, token, tenant="acme", probe=person).active
    elsewhere = introspect_fails(client, token, tenant="default")  # the same token, another tenant
    assert (elsewhere.code, elsewhere.reason) == (DENIED, "CALLER_NOT_ALLOWED")
    anywhere = client.service_token("anywhere")
    assert not introspect(client, anywhere, tenant="default").active  # an answer, not a refusal
    assert introspect(client, anywhere, tenant="acme", probe=person).active


def test_deleting_a_service_account_ends_its_tokens_on_the_next_call(client: Client) -> None:
    client_id, secret = client.create_service("orders")
    token = issue(client, client_id, secret).access_token
    assert not introspect(client, token).active
    accounts = ServiceAccounts(client.store, KEYS, Audit(client.store), TENANTS)
    accounts.delete("orders")
    gone = introspect_fails(client, token)
    assert (gone.code, gone.reason) == (UNAUTHENTICATED, "SERVICE_ACCOUNT_REVOKED")
    assert issue_fails(client, client_id, secret).reason == "INVALID_CREDENTIALS"
    assert client.store.get_service_account(client_id) is None


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_keeps_the_old_secret_for_the_overlap_then_ends_it(client: Client) -> None:
    client_id, old = client.create_service("orders")
    accounts = ServiceAccounts(client.store, KEYS, Audit(client.store), TENANTS)
    # A token got a minute before the rotation (minted as the server mints them).
    minted = AccessTokens(KEYS.jwt, KEYS.jwt, 900).issue_service(client_id, utcnow() - timedelta(minutes=1))[0]
    account, new = accounts.rotate("orders", overlap_seconds=3600)
    assert new != old and account.previous_secret_hash is not None
    stored = client.store.get_service_account(client_id)
    assert old not in repr(stored) and new not in repr(stored)  # hashes only

    during_old = issue(client, client_id, old)  # the overlap: both secrets work
    during_new = issue(client, client_id, new)
    assert during_old.expires_at.seconds <= int(stored.previous_valid_until.timestamp())  # dies with the old one
    for token in (minted, during_old.access_token, during_new.access_token):
        assert not introspect(client, token).active  # accepted (an answer about the probe)

    # The overlap ends: move it into the past in the store.
    client.store.update_service_account(client_id, set={"previous_valid_until": utcnow() - timedelta(seconds=1)})
    assert issue_fails(client, client_id, old).reason == "INVALID_CREDENTIALS"
    assert introspect_fails(client, minted).reason == "SERVICE_ACCOUNT_REVOKED"  # minted before the rotation
    assert not introspect(client, during_new.access_token).active  # the new secret's token lives on
    assert not introspect(client, issue(client, client_id, new).access_token).active


def test_rotation_without_overlap_ends_the_old_secret_at_once(client: Client) -> None:
    client_id, old = client.create_service("orders")
    accounts = ServiceAccounts(client.store, KEYS, Audit(client.store), TENANTS)
    _, new = accounts.rotate("orders", overlap_seconds=0)
    assert issue_fails(client, client_id, old).reason == "INVALID_CREDENTIALS"
    assert issue(client, client_id, new).access_token


# -- rules that name services --------------------------------------------------------------------


def _service_file(package: str, rules: dict[str, tuple[bool, bool, list[str]]]) -> Any:
    """A service x.<package>.Billing whose methods carry these (public, authenticated, services) rules,
    loaded into the default pool (where the access extension lives) under a name of its own."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"x/{package}/billing.proto", package=f"x.{package}", dependency=["auth/v1/access.proto"]
    )
    file.message_type.add(name="Empty")
    service = file.service.add(name="Billing")
    for name, (public, people, services) in rules.items():
        method = service.method.add(name=name, input_type=f".x.{package}.Empty", output_type=f".x.{package}.Empty")
        rule = method.options.Extensions[access_pb2.access]
        rule.public, rule.authenticated = public, people
        rule.services.extend(services)
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindFileByName(file.name)


BILLING = _service_file(
    "v1", {"Charge": (False, False, ["orders"]), "Quote": (False, True, ["*"]), "Mine": (False, True, [])}
)


def test_rules_name_services_and_keep_people_and_services_apart(client: Client) -> None:
    settings = load_settings(
        {"AUTH_JWT_SECRET": SECRET, "AUTH_STORE": client.store_uri, "AUTH_TENANTS": "default,acme"}
    )
    audit = Audit(client.store)
    tokens = AccessTokens(KEYS.jwt, KEYS.jwt, 900)
    sessions = Sessions(client.store, settings, KEYS, tokens, RefreshTokens(KEYS.refresh), audit)
    services = ServiceAccounts(
        client.store, KEYS, audit, TENANTS, access_tokens=tokens, throttle=Throttle(client.store, settings, KEYS)
    )
    rules = load_rules([BILLING])
    assert rules["/x.v1.Billing/Charge"].services == frozenset({"orders"}) and not rules["/x.v1.Billing/Charge"].people

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        call = current_call()
        return (
            f"service:{call.service.account.name}" if call.service else f"person:{call.caller.user.username}"
        ).encode()

    server = grpc.server(
        futures.ThreadPoolExecutor(2), interceptors=[Guard(rules, sessions, settings, Metrics(), services)]
    )
    handlers = {name: grpc.unary_unary_rpc_method_handler(who) for name in ("Charge", "Quote", "Mine")}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("x.v1.Billing", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client.signup("carol")
    person = client.sign_in("carol").access_token
    orders, reports = client.service_token("orders"), client.service_token("reports")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:

            def call(method: str, token: str) -> Any:
                stub = channel.unary_unary(f"/x.v1.Billing/{method}")
                try:
                    return stub(b"", metadata=md(token), timeout=5)
                except grpc.RpcError as error:
                    return failure(error)

            assert call("Charge", orders) == b"service:orders"
            for method, token in (("Charge", reports), ("Charge", person), ("Mine", orders)):
                seen = call(method, token)
                assert (seen.code, seen.reason) == (DENIED, "CALLER_NOT_ALLOWED"), (method, seen)
            assert call("Quote", person) == b"person:carol"
            assert call("Quote", reports) == b"service:reports"
            assert call("Mine", person) == b"person:carol"
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("number", "public", "people", "services", "problem"),
    [
        (1, True, False, ["orders"], "must be public alone"),
        (2, False, False, [], "must be public alone"),
        (3, False, False, ["Not A Name"], "names a service"),
        (4, False, True, [""], "names a service"),
    ],
)
def test_bad_service_rules_stop_the_server(
    number: int, public: bool, people: bool, services: list[str], problem: str
) -> None:
    file = _service_file(f"bad{number}", {"Charge": (public, people, services)})
    with pytest.raises(AccessRuleError, match=problem):
        load_rules([file])


# -- configuration and audit ---------------------------------------------------------------------


def test_introspect_access_public_restores_anonymous_introspection(make_client: Any) -> None:
    client = make_client(AUTH_INTROSPECT_ACCESS="public")
    client.signup("dave")
    person = client.sign_in("dave").access_token
    assert introspect(client, None, probe=person).active
    assert introspect(client, person, probe=person).active  # any token, or none


def test_service_account_events_are_audited(client: Client) -> None:
    client_id, secret = client.create_service("orders", tenants="acme")
    issue(client, client_id, secret, tenant="acme")
    issue_fails(client, client_id, "sk_wrong", tenant="acme")
    accounts = ServiceAccounts(client.store, KEYS, Audit(client.store), TENANTS)
    accounts.rotate("orders", 60)
    accounts.delete("orders")
    acme = [e.type for e in client.store.list_events("acme", None, 50)]
    for kind in (
        "service_account.created",
        "service_token.issued",
        "service_token.failed",
        "service_account.rotated",
        "service_account.deleted",
    ):
        assert kind in acme
    # Recorded in the tenants the account may call in only; never a secret.
    assert not [e for e in client.store.list_events("default", None, 50) if e.type.startswith("service_account.")]
    assert all(secret not in e.details for e in client.store.list_events("acme", None, 50))
