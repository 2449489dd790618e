"""Hostile input: every request message of both services fuzzed with hypothesis, hostile tokens and
metadata, oversized requests. Each must get a clear status and reason, never INTERNAL/UNKNOWN or a
traceback, and a rejected input (INVALID_ARGUMENT) must leave the store exactly as it was.

Requirements covered: OWASP ASVS 5.0 V1.2/V1.3 (input handling), V9.1/V9.2 (self-contained tokens),
RFC 8725 sections 2.1, 3.1, 3.11 (algorithm pinning, explicit typing), NIST SP 800-63B 3.1.1.2
(password length in bytes, no silent truncation).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth_client.gen.auth.v1 import admin_pb2, auth_pb2
from auth_server.infra.keys import KeyRing
from tests.integration.conftest import PASSWORD, SECRET, Client, md
from tests.support.rpc import fails, failure

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["\x00", "a\x00b", "../../etc/passwd", "$where", '{"$gt": ""}', "' OR 1=1 --", "😀" * 40]),
    st.just("x" * 60_000),  # near the 64 KiB message limit
)


@pytest.fixture
def store_uri(tmp_path: Any) -> str:  # the fuzzing checks the store file directly: SQLite only
    return f"sqlite:///{tmp_path}/auth.db"


def snapshot(client: Client) -> dict[str, list[tuple]]:
    """Every row the service keeps, but the health heartbeat (the health check's own write, every 0.2 s)."""
    path = client.store_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'") if r[0] != "heartbeat"]
        return {t: sorted(db.execute(f'select * from "{t}"').fetchall(), key=repr) for t in tables}  # noqa: S608


def messages(request_type: type[Message]) -> st.SearchStrategy[Message]:
    """Arbitrary instances of a request message, field by field from its descriptor."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in request_type.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            fields[field.name] = HOSTILE_TEXT
        elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):
            fields[field.name] = st.integers(-(2**31), 2**31 - 1)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            fields[field.name] = st.booleans()
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: request_type(**values))


def _all_methods() -> list[tuple[str, str, type[Message]]]:
    found = []
    for service, module in (("AuthService", auth_pb2), ("AdminService", admin_pb2)):
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            found.append((service, method.name, getattr(module, method.input_type.name)))
    return found


@pytest.mark.parametrize(("service", "method", "request_type"), _all_methods(), ids=lambda v: getattr(v, "__name__", v))
def test_fuzzed_requests_get_clear_answers(client: Client, service: str, method: str, request_type: type) -> None:
    token = client.sign_in_admin("fuzzadmin")
    stub = client.admin if service == "AdminService" else client.auth
    call = getattr(stub, method)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=messages(request_type), authenticated=st.booleans())
    def probe(request: Message, authenticated: bool) -> None:
        before = snapshot(client)
        try:
            call(request, metadata=md(token if authenticated else None), timeout=10)
        except grpc.RpcError as error:
            seen = failure(error)
            assert seen.code in ALLOWED, (method, seen.code, seen.message[:200])
            # every rejection carries an ErrorInfo reason, but for grpc's own message-size limit
            assert seen.reason or "larger than max" in seen.message, (method, seen.code, seen.message[:200])
            assert "Traceback" not in seen.message and "sqlite" not in seen.message.lower()
            if seen.code == grpc.StatusCode.INVALID_ARGUMENT:
                assert snapshot(client) == before, method

    probe()
    assert client.health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hostile_token_headers_and_claims(client: Client) -> None:
    """kid/jku/jwk headers are ignored (the key is ours, not the token's); nbf in the future; truncation."""
    client.signup("tok")
    tokens = client.sign_in("tok")
    key = KeyRing.from_secret(SECRET.encode()).jwt
    now = int(time.time())
    claims = {"session_id": tokens.session_id, "type": "access", "iat": now, "exp": now + 600}
    attacker = b"attacker-key-attacker-key-attacker-key"
    cases = {
        "jwk header with attacker key": jwt.encode(
            claims, attacker, headers={"jwk": {"kty": "oct", "k": _b64(attacker)}}
        ),
        "jku header": jwt.encode(claims, attacker, headers={"jku": "https://evil.example/keys"}),
        "kid pointing elsewhere": jwt.encode(claims, attacker, headers={"kid": "../../dev/null"}),
        "nbf in the future": jwt.encode({**claims, "nbf": now + 3600}, key),
        "no iat": jwt.encode({k: v for k, v in claims.items() if k != "iat"}, key),
        "no type": jwt.encode({k: v for k, v in claims.items() if k != "type"}, key),
        "truncated": tokens.access_token[:-5],
        "tampered payload": tokens.access_token.split(".")[0]
        + "."
        + _b64(json.dumps({**claims, "session_id": "x"}).encode())
        + "."
        + tokens.access_token.split(".")[2],
    }
    for name, token in cases.items():
        seen = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=md(token))
        assert (seen.code, seen.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"), name
    duplicate = [("authorization", f"Bearer {tokens.access_token}"), ("authorization", f"Bearer {tokens.access_token}")]
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=duplicate).reason == "TOKEN_INVALID"
    binary = [("authorization-bin", b"\x00\xff"), ("x-tenant-id-bin", b"\x01")]
    assert fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=binary).reason == "TOKEN_MISSING"


def test_oversized_metadata_and_messages_are_refused(client: Client) -> None:
    seen = fails(client.auth.GetMe, auth_pb2.GetMeRequest(), metadata=[("x-pad", "a" * 17_000)])
    assert seen.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    big = auth_pb2.SignupRequest(username="big", email="big@example.com", password="p" * 70_000)
    assert fails(client.auth.Signup, big).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.store.find_user("default", "big") is None


def test_long_passwords_are_refused_by_a_stated_rule_never_truncated(client: Client) -> None:
    """NIST SP 800-63B: no silent truncation. 64 characters (64 bytes) fit bcrypt; 64 emoji (256 bytes) do not."""
    # Strong enough for the guessability rule (zxcvbn); "Ab3$" repeated no longer is.
    near = "Tr0ub4dor&3 plus correct horse battery staple, and a purple dishwasher!!"
    ascii64 = near[:64]
    assert len(ascii64.encode()) == 64 and len(near.encode()) == 72
    client.signup("long", password=ascii64)
    emoji = fails(
        client.auth.Signup, auth_pb2.SignupRequest(username="emo", email="emo@example.com", password="😀" * 64)
    )
    assert (emoji.reason, emoji.fields) == ("VALIDATION_FAILED", ("password",))
    # near: exactly 72 bytes: accepted, and one more character is a different password
    client.signup("edge", password=near)
    wrong = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="edge", password=near + "x"))
    assert wrong.reason == "INVALID_CREDENTIALS"
    wrong = fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="long", password=ascii64 + "x"))
    assert wrong.reason == "INVALID_CREDENTIALS"
    assert client.login("long", password=ascii64)
    assert PASSWORD  # the shared fixture password is untouched by these users
