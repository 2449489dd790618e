"""`auth-server service create|list|rotate|delete`, the real command against a real `auth-server serve`
on a SQLite store with the generated development secret (the CLI must hash as the server checks)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support.process import AUTH_SERVER, REPO, running
from tests.support.rpc import fails


def cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    return subprocess.run(
        [str(AUTH_SERVER), "service", *args],
        env={**env, "AUTH_STORE": store, "AUTH_TENANTS": "default,acme"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def issue(stub: auth_pb2_grpc.AuthServiceStub, client_id: str, secret: str, tenant: str = "default") -> str:
    request = auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=secret)
    return stub.IssueServiceToken(request, metadata=[("x-tenant-id", tenant)]).access_token


def introspect(stub: auth_pb2_grpc.AuthServiceStub, token: str) -> auth_pb2.IntrospectResponse:
    request = auth_pb2.IntrospectRequest(access_token="probe")
    return stub.Introspect(request, metadata=[("authorization", f"Bearer {token}")])


def test_the_service_commands_against_a_running_server(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/auth.db"  # no AUTH_JWT_SECRET: the dev secret file beside it
    env = {"AUTH_STORE": store, "AUTH_TENANTS": "default,acme", "AUTH_BCRYPT_ROUNDS": "4"}
    with running(env) as server, grpc.insecure_channel(server.addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        created = cli(store, "create", "orders", "--json")
        assert created.returncode == 0, created.stderr
        orders = json.loads(created.stdout)
        assert set(orders) == {"name", "client_id", "client_secret"} and orders["name"] == "orders"
        text = cli(store, "create", "reports", "--tenants", "acme")
        assert text.returncode == 0 and "client_secret: sk_" in text.stdout, text.stderr

        token = issue(stub, orders["client_id"], orders["client_secret"])
        assert not introspect(stub, token).active  # admitted: an answer about the probe

        listed = cli(store, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        assert rows["reports"]["tenants"] == ["acme"] and rows["orders"]["tenants"] == []
        assert "sk_" not in listed.stdout and "sk_" not in cli(store, "list").stdout  # never a secret

        rotated = cli(store, "rotate", "orders", "--overlap", "0", "--json")
        assert rotated.returncode == 0, rotated.stderr
        new_secret = json.loads(rotated.stdout)["client_secret"]
        old = fails(
            stub.IssueServiceToken,
            auth_pb2.IssueServiceTokenRequest(client_id=orders["client_id"], client_secret=orders["client_secret"]),
        )
        assert old.reason == "INVALID_CREDENTIALS"
        token = issue(stub, orders["client_id"], new_secret)

        deleted = cli(store, "delete", "orders")
        assert deleted.returncode == 0 and "deleted service account orders" in deleted.stdout, deleted.stderr
        gone = fails(
            stub.Introspect,
            auth_pb2.IntrospectRequest(access_token="probe"),
            metadata=[("authorization", f"Bearer {token}")],
        )
        assert (gone.code, gone.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SERVICE_ACCOUNT_REVOKED")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("delete", "nobody"), 1, "SERVICE_ACCOUNT_NOT_FOUND"),
        (("rotate", "nobody"), 1, "SERVICE_ACCOUNT_NOT_FOUND"),
        (("create", "Bad Name!"), 2, "VALIDATION_FAILED"),
        (("create", "x", "--tenants", "nowhere"), 2, "Unknown tenant(s): nowhere"),
        (("create", "dup"), 2, "SERVICE_ACCOUNT_EXISTS"),
        (("rotate", "dup", "--overlap", "-5"), 2, "expected a whole number"),
    ],
)
def test_errors_are_one_line_with_set_role_exit_codes(
    tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    store = f"sqlite:///{tmp_path}/auth.db"
    missing = cli(store, "list")
    assert missing.returncode == 2 and f"no database at {tmp_path}/auth.db" in missing.stderr
    assert not (tmp_path / "auth.db").exists()  # refused, not created empty
    with running({"AUTH_STORE": store, "AUTH_BCRYPT_ROUNDS": "4"}):
        pass  # the server creates the database and its secret, as in real use
    assert cli(store, "create", "dup").returncode == 0
    result = cli(store, *args)
    assert result.returncode == code and says in result.stderr, result.stderr
    if code != 2 or "whole number" not in says:
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
