"""`auth-server user set-role`, the operator's command, as a newcomer meets it (issue 10 point 7, issue 11
point 7): it names the store it opened, refuses a store that does not exist instead of creating an empty
one, and keeps the tenant's last active admin unless told `--force`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc

from auth_client.gen.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support.mail import SmtpSink
from tests.support.process import AUTH_SERVER, running

PASSWORD = "correct horse battery"


def set_role(cwd: Path, store: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    if store:
        env["AUTH_STORE"] = store
    return subprocess.run(
        [str(AUTH_SERVER), "user", "set-role", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_set_role_from_another_directory_refuses_to_create_an_empty_store(tmp_path: Path) -> None:
    result = set_role(tmp_path, None, "jane", "admin")  # the default store: ./var/auth.db, absent here
    assert result.returncode == 2
    assert f"no database at {tmp_path / 'var' / 'auth.db'}" in result.stderr
    assert not (tmp_path / "var").exists()  # nothing was created


def test_set_role_names_its_store_and_keeps_the_last_active_admin(tmp_path: Path) -> None:
    db = tmp_path / "auth.db"
    store = f"sqlite:///{db}"
    smtp = SmtpSink().start()
    env = {"AUTH_STORE": store, "AUTH_BCRYPT_ROUNDS": "4", "AUTH_SMTP_URL": smtp.url}
    with running(env) as server, grpc.insecure_channel(server.addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        started = stub.Signup(auth_pb2.SignupRequest(username="jane", email="jane@example.com", password=PASSWORD))
        code = smtp.last_code("jane@example.com")
        smtp.stop()
        stub.VerifySignup(auth_pb2.VerifySignupRequest(signup_id=started.signup_id, code=code))
        promoted = set_role(tmp_path, store, "jane", "admin")
        assert promoted.returncode == 0, promoted.stderr
        assert promoted.stdout.strip() == f"auth-server: jane is now admin in tenant default of {db}"
        unknown = set_role(tmp_path, store, "nobody", "admin")
        assert unknown.returncode == 1 and f"no user 'nobody' in tenant 'default' of {db}" in unknown.stderr

        refused = set_role(tmp_path, store, "jane", "user")  # the only admin: the API refuses it too
        assert refused.returncode == 2
        assert "LAST_ADMIN" in refused.stderr and "--force" in refused.stderr
        forced = set_role(tmp_path, store, "jane", "user", "--force")
        assert forced.returncode == 0, forced.stderr
