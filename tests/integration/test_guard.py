"""The guard as a caller sees it: every rejection reason, roles, tenants, and fail-closed rules."""

from __future__ import annotations

import base64
import json
import time

import grpc
import jwt
import pytest
from google.protobuf import descriptor_pool

from auth_client.gen.auth.v1 import admin_pb2, auth_pb2
from auth_server.api.guard import AccessRuleError, load_rules
from auth_server.infra.keys import KeyRing
from tests.integration.conftest import SECRET, Client, md
from tests.support.rpc import fails


def _payload(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _forge(claims: dict, key: bytes, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"typ": "at+jwt"})


def test_access_token_carries_only_session_claims(client: Client) -> None:
    client.signup("alice")
    tokens = client.sign_in("alice")
    payload = _payload(tokens.access_token)
    assert set(payload) <= {"session_id", "type", "iat", "exp", "iss", "aud", "jti", "nbf"}
    assert payload["type"] == "access" and payload["session_id"] == tokens.session_id
    header = jwt.get_unverified_header(tokens.access_token)
    assert header["alg"] == "HS256" and header["typ"] == "at+jwt"
    me = client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))
    assert me.user.username == "alice" and me.session_id == tokens.session_id


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "TOKEN_MISSING"),
        ([("authorization", "Bearer")], "TOKEN_INVALID"),
        ([("authorization", "Basic abc")], "TOKEN_INVALID"),
        ([("authorization", "Bearer not.a.jwt")], "TOKEN_INVALID"),
    ],
)
def test_malformed_credentials_are_rejected(client: Client, metadata: list, reason: str) -> None:
    failure = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=metadata)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


def test_forged_tokens_are_rejected(client: Client) -> None:
    client.signup("bob")
    sid = client.sign_in("bob").session_id
    now = int(time.time())
    claims = {"session_id": sid, "type": "access", "iat": now, "exp": now + 600}
    right_key = KeyRing.from_secret(SECRET.encode()).jwt
    none_token = (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        + "."
    )
    cases = {
        "other key": _forge(claims, b"k" * 32),
        "alg none": none_token,
        "HS512 with the right key": _forge(claims, right_key, "HS512"),
        "refresh type": _forge({**claims, "type": "refresh"}, right_key),
        "no exp": _forge({k: v for k, v in claims.items() if k != "exp"}, right_key),
        "no session": _forge({k: v for k, v in claims.items() if k != "session_id"}, right_key),
    }
    for name, token in cases.items():
        failure = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(token))
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"), name
    expired = _forge({**claims, "iat": now - 4000, "exp": now - 3600}, right_key)
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(expired)).reason == "TOKEN_EXPIRED"
    unknown = _forge({**claims, "session_id": "0" * 32}, right_key)
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(unknown)).reason == "SESSION_NOT_FOUND"


def test_refresh_token_is_not_an_access_token_and_vice_versa(client: Client) -> None:
    client.signup("carol")
    tokens = client.sign_in("carol")
    failure = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(tokens.refresh_token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    failure = fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=tokens.access_token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")


def test_token_of_one_tenant_is_unknown_in_another(client: Client) -> None:
    client.signup("dave", tenant="acme")
    tokens = client.sign_in("dave", tenant="acme")
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token, "acme")).user.tenant_id == "acme"
    failure = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(tokens.access_token, "default"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_NOT_FOUND")
    failure = fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token))
    assert failure.reason == "REFRESH_TOKEN_INVALID"
    # the user itself does not exist in the default tenant: same answer as a wrong password
    failure = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="dave", password="x" * 12))
    assert failure.reason == "INVALID_CREDENTIALS"


@pytest.mark.parametrize(
    ("tenant", "code", "reason"),
    [
        ("../x", grpc.StatusCode.INVALID_ARGUMENT, "TENANT_INVALID"),
        ("$where", grpc.StatusCode.INVALID_ARGUMENT, "TENANT_INVALID"),
        ("a" * 300, grpc.StatusCode.INVALID_ARGUMENT, "TENANT_INVALID"),
        ("Acme", grpc.StatusCode.INVALID_ARGUMENT, "TENANT_INVALID"),
        ("globex", grpc.StatusCode.NOT_FOUND, "TENANT_NOT_FOUND"),
    ],
)
def test_bad_tenants_are_refused_before_anything_happens(
    client: Client, tenant: str, code: grpc.StatusCode, reason: str
) -> None:
    request = auth_pb2.SignupRequest(username="eve", email="eve@example.com", password="long enough pw")
    failure = fails(client.auth.Signup, request, metadata=md(tenant=tenant))
    assert (failure.code, failure.reason) == (code, reason)
    assert client.store.find_user("default", "eve") is None


def test_roles_are_checked_on_every_call(client: Client) -> None:
    client.signup("frank")
    token = client.sign_in("frank").access_token
    failure = fails(client.admin.ListUsers, admin_pb2.ListUsersRequest(), metadata=md(token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_ROLE")
    user = client.store.find_user("default", "frank")
    client.store.update_user("default", user.id, set={"role": "manager"})
    # the role change acts on the very next call, with the same token
    assert len(client.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=md(token)).users) == 1
    failure = fails(client.admin.LockUser, admin_pb2.LockUserRequest(user_id=user.id), metadata=md(token))
    assert failure.reason == "INSUFFICIENT_ROLE"


def test_every_rpc_of_both_services_declares_an_access_rule() -> None:
    pool = descriptor_pool.Default()
    files = [pool.FindFileByName("auth/v1/auth.proto"), pool.FindFileByName("auth/v1/admin.proto")]
    rules = load_rules(files)
    methods = {f"/{s.full_name}/{m.name}" for f in files for s in f.services_by_name.values() for m in s.methods}
    assert methods and set(rules) == methods
    assert rules["/auth.v1.AuthService/Login"].public
    assert rules["/auth.v1.AuthService/GetMe"].roles is None and not rules["/auth.v1.AuthService/GetMe"].public
    assert rules["/auth.v1.AdminService/LockUser"].roles == frozenset({"admin"})


def test_a_service_without_rules_makes_the_server_refuse_to_start() -> None:
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import descriptor_pb2

    file = descriptor_pb2.FileDescriptorProto(name="x/v1/x.proto", package="x.v1")
    file.message_type.add(name="Empty")
    service = file.service.add(name="OpenService")
    service.method.add(name="Leak", input_type=".x.v1.Empty", output_type=".x.v1.Empty")
    with pytest.raises(AccessRuleError, match=r"/x\.v1\.OpenService/Leak declares no"):
        load_rules([pool.Add(file) or pool.FindFileByName("x/v1/x.proto")])


def test_an_undeclared_method_is_denied_to_anonymous_callers() -> None:
    """A method served without a rule in the table is denied, not run (unlike Zitadel's gap)."""
    from concurrent import futures

    from auth_server.api.guard import Guard
    from auth_server.infra.config import load_settings
    from auth_server.infra.metrics import Metrics

    ran: list[bytes] = []

    def leak(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append(request)
        return b"secret"

    rules = load_rules([descriptor_pool.Default().FindFileByName("auth/v1/auth.proto")])
    settings = load_settings({"AUTH_JWT_SECRET": SECRET, "AUTH_STORE": "sqlite:///unused.db"})
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[Guard(rules, None, settings, Metrics())])  # type: ignore[arg-type]
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("x.v1.OpenService", {"Leak": grpc.unary_unary_rpc_method_handler(leak)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/x.v1.OpenService/Leak")
            failure = fails(call, b"hello")
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_RULE_MISSING")
        assert ran == []
    finally:
        server.stop(0)


def test_asymmetric_signing_pins_the_algorithm(make_client, tmp_path) -> None:
    """ES256 with a kid; an HS256 token whose HMAC key is the public key (alg confusion) is refused."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "jwt.pem").write_bytes(pem)
    client = make_client(
        AUTH_JWT_ALGORITHM="ES256", AUTH_JWT_PRIVATE_KEY_FILE=str(tmp_path / "jwt.pem"), AUTH_JWT_KEY_ID="k1"
    )
    client.signup("asym")
    tokens = client.sign_in("asym")
    assert jwt.get_unverified_header(tokens.access_token) == {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}
    assert client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token)).user.username == "asym"

    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(b'{"alg":"HS256","typ":"at+jwt"}') + "." + b64(json.dumps(_payload(tokens.access_token)).encode())
    )
    forged = signing_input + "." + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    failure = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(forged))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
