"""Operations: the audit trail an admin reads, call metrics, and structured access logs.

Requirements covered: OWASP ASVS 5.0 V16.2/V16.3 (security events logged with who, what, when,
where; no secrets in logs).
"""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from auth_client.gen.auth.v1 import admin_pb2, auth_pb2
from auth_server.runtime.logs import JsonFormatter
from tests.integration.conftest import PASSWORD, Client, md
from tests.support.rpc import fails


def test_admins_read_the_audit_trail(client: Client) -> None:
    admin = client.sign_in_admin("auditor")
    client.signup("subject")
    fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="subject", password="wrong password"))
    fails(client.auth.Login, auth_pb2.LoginRequest(username_or_email="ghost", password="wrong password"))
    tokens = client.sign_in("subject")
    subject = client.store.find_user("default", "subject")
    client.admin.LockUser(admin_pb2.LockUserRequest(user_id=subject.id, reason="fraud review"), metadata=md(admin))

    events = client.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(user_id=subject.id), metadata=md(admin)
    ).events
    assert [e.type for e in events] == [
        "account.locked",
        "login.succeeded",
        "login.code_sent",
        "login.failed",
        "user.created",
    ]
    locked = events[0]
    assert (
        locked.actor_user_id
        and locked.details["reason"] == "fraud review"
        and locked.details["revoked_sessions"] == "1"
    )
    assert events[1].details["session_id"] == tokens.session_id and events[1].ip_address == "127.0.0.1"
    assert events[3].details["reason"] == "wrong_password"
    everything = json.dumps([dict(e.details) for e in events])
    assert PASSWORD not in everything and tokens.refresh_token not in everything

    page = client.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(page_size=2), metadata=md(admin))
    assert len(page.events) == 2 and page.next_page_token
    following = client.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(page_size=2, page_token=page.next_page_token), metadata=md(admin)
    )
    assert following.events[0].id < page.events[-1].id  # newest first, no overlap
    unknown = [
        e
        for e in client.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(), metadata=md(admin)).events
        if e.type == "login.failed" and not e.user_id
    ]
    assert unknown and unknown[0].details["reason"] == "unknown_user"


def test_audit_trail_is_for_admins_only(client: Client) -> None:
    client.signup("nosy")
    token = client.sign_in("nosy").access_token
    seen = fails(client.admin.ListAuditEvents, admin_pb2.ListAuditEventsRequest(), metadata=md(token))
    assert (seen.code, seen.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_ROLE")


def test_metrics_count_calls_and_security_events(client: Client) -> None:
    client.signup("counted")
    token = client.sign_in("counted").access_token
    client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token))
    fails(client.auth.GetMe, auth_pb2.GetMeRequest())
    assert client.app is not None
    registry = client.app.metrics.registry
    value = registry.get_sample_value
    assert value("auth_rpc_calls_total", {"method": "/auth.v1.AuthService/GetMe", "code": "OK"}) == 1
    assert value("auth_rpc_calls_total", {"method": "/auth.v1.AuthService/GetMe", "code": "UNAUTHENTICATED"}) == 1
    assert value("auth_security_events_total", {"type": "login.succeeded"}) == 1
    assert value("auth_rpc_latency_seconds_count", {"method": "/auth.v1.AuthService/GetMe"}) == 2


def test_access_log_is_one_json_line_per_call_without_secrets(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    client.signup("logged")
    tokens = client.sign_in("logged")
    caplog.set_level(logging.INFO, logger="auth.access")
    caplog.clear()
    client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(tokens.access_token))
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "auth.access"]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["method"] == "/auth.v1.AuthService/GetMe" and entry["code"] == "OK" and entry["tenant"] == "default"
    assert entry["session"] and entry["session"] not in tokens.session_id and entry["latency_ms"] >= 0
    assert tokens.access_token not in lines[0] and tokens.session_id not in lines[0]
