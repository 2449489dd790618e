"""The purge (issue 14, part 7) through the real server on both stores: the periodic job of every
replica deletes what ended and keeps the rest, a revoked session keeps answering SESSION_REVOKED for
its grace, a WatchRevocations cursor older than the pruned log still resumes correctly, and
`auth-server purge` does one run. Ends are moved back in the store rather than waited for."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import auth_pb2
from auth_server.domain.purge import Purge
from auth_server.runtime import cli
from auth_server.store.base import AuditEvent, Counter, Revocation
from tests.integration.conftest import SECRET, md
from tests.support.records import new_challenge, new_id, utcnow
from tests.support.rpc import fails

TENANT = "default"
ACCESS_TTL = 60  # seconds; the purge's grace is twice this


def _eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    """Until the periodic job (its own thread, nothing to block on) has done what `check` looks for."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the purge job did not run in time"
        time.sleep(0.1)


def _get_me(client: Any, token: str) -> Any:
    return client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token))


def _old_event(days: int) -> AuditEvent:
    at = utcnow() - timedelta(days=days)
    return AuditEvent(id=new_id(), type="old", user_id="", actor_user_id="", ip_address="", created_at=at, details="{}")


def test_every_replica_purges_what_ended_and_keeps_the_rest(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="auth_server.domain.purge")
    env = {"AUTH_PURGE_INTERVAL": "1", "AUTH_ACCESS_TTL": str(ACCESS_TTL), "AUTH_AUDIT_RETENTION": str(30 * 86400)}
    client = make_client(**env)
    make_client(**env)  # a second replica on the same store, purging too
    user = client.signup("tidy")
    ended, revoked_lately, live = (client.sign_in("tidy") for _ in range(3))
    for tokens in (ended, revoked_lately):
        client.auth.LogoutSession(
            auth_pb2.LogoutSessionRequest(session_id=tokens.session_id), metadata=md(live.access_token)
        )
    grace = timedelta(seconds=2 * ACCESS_TTL)
    long_ago = utcnow() - grace - timedelta(minutes=1)
    client.store.update_session(TENANT, ended.session_id, set={"revoked_at": long_ago})
    expired_code = new_challenge(user.id, kind="reset", expires_at=long_ago)
    open_code = new_challenge(user.id, kind="reset")
    for challenge in (expired_code, open_code):
        client.store.create_challenge(TENANT, challenge)
    client.store.create_counter(TENANT, Counter(id="pair:old", version=1, expires_at=long_ago))
    client.store.update_user(TENANT, user.id, set={"unlock_token_hash": b"x" * 32, "unlock_token_expires_at": long_ago})
    old_event, recent_event = _old_event(31), _old_event(29)
    for event in (old_event, recent_event):
        client.store.record_event(TENANT, event)

    _eventually(lambda: client.store.get_session(TENANT, ended.session_id) is None)
    _eventually(lambda: client.store.get_user(TENANT, user.id).unlock_token_hash is None)
    assert client.store.get_challenge(TENANT, expired_code.id) is None
    assert client.store.get_challenge(TENANT, open_code.id) == open_code
    assert client.store.get_counter(TENANT, "pair:old") is None
    events = {e.id for e in client.store.list_events(TENANT, None, 500)}
    assert old_event.id not in events and recent_event.id in events
    # What has not ended, or ended within the grace, is there and answers as before.
    assert _get_me(client, live.access_token).user.id == user.id
    refused = fails(_get_me, client, revoked_lately.access_token)
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    assert client.store.get_user(TENANT, user.id).username == "tidy"
    assert any("purged ended records" in r.getMessage() for r in caplog.records)


def test_a_revoked_session_answers_session_revoked_until_its_grace_is_over(make_client: Any) -> None:
    client = make_client(AUTH_PURGE_INTERVAL="0", AUTH_ACCESS_TTL=str(ACCESS_TTL))
    client.signup("graceful")
    tokens = client.sign_in("graceful")
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    purge = Purge(client.store, client.app.settings)
    # Revoked a TTL ago: the access token would still be unexpired, so the session stays.
    revoked_at = utcnow() - timedelta(seconds=ACCESS_TTL)
    client.store.update_session(TENANT, tokens.session_id, set={"revoked_at": revoked_at})
    assert purge.run()[TENANT]["sessions"] == 0
    assert fails(_get_me, client, tokens.access_token).reason == "SESSION_REVOKED"
    # Past twice the TTL it goes.
    client.store.update_session(TENANT, tokens.session_id, set={"revoked_at": revoked_at - timedelta(seconds=61)})
    assert purge.run()[TENANT]["sessions"] == 1
    assert client.store.get_session(TENANT, tokens.session_id) is None


def test_a_watch_resuming_before_the_pruned_log_gets_every_entry_left(make_client: Any) -> None:
    client = make_client(AUTH_PURGE_INTERVAL="0")
    watcher = client.service_token("watcher")
    old = utcnow() - timedelta(days=3)
    pruned = [
        client.store.append_revocation(TENANT, Revocation(seq=0, kind="session_revoked", at=old, session_id=f"old{i}"))
        for i in range(3)
    ]
    client.signup("resumer")
    tokens = client.sign_in("resumer")
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    counts = Purge(client.store, client.app.settings).run()
    assert counts[TENANT]["revocations"] == 3
    # A guard that last saw the first pruned entry resumes: it gets what is left, in order, and on.
    stream = client.auth.WatchRevocations(
        auth_pb2.WatchRevocationsRequest(after=str(pruned[0].seq)), metadata=md(watcher), timeout=30
    )
    first = next(stream).event
    assert first.kind == auth_pb2.RevocationKind.REVOCATION_KIND_USER_SESSIONS_REVOKED
    assert int(first.cursor) > pruned[-1].seq
    client.signup("latecomer")
    later = client.sign_in("latecomer")
    client.auth.LogoutSession(
        auth_pb2.LogoutSessionRequest(session_id=later.session_id), metadata=md(later.access_token)
    )
    following = next(stream).event
    assert (following.kind, following.session_id) == (
        auth_pb2.RevocationKind.REVOCATION_KIND_SESSION_REVOKED,
        later.session_id,
    )
    assert int(following.cursor) > int(first.cursor)
    stream.cancel()


def test_the_purge_command_runs_once(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(AUTH_PURGE_INTERVAL="0")
    user = client.signup("oneshot")
    client.store.create_challenge(TENANT, new_challenge(user.id, expires_at=utcnow() - timedelta(days=1)))
    for name, value in {"AUTH_JWT_SECRET": SECRET, "AUTH_TENANTS": "default,acme"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["purge", "--store", client.store_uri, "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"default", "acme"}
    assert counts["default"]["challenges"] == 1
    assert cli.main(["purge", "--store", client.store_uri]) == 0
    out = capsys.readouterr().out
    assert "purged tenant default" in out and "0 challenges" in out
