"""The session cache (domain/session_cache.py) as an attacker meets it, on both stores.

Two servers on one store stand for two replicas. The attack on any cache of verified sessions is to keep
using a token after it was revoked somewhere else: each test first proves the token is served from the
cache of replica `one`, then revokes through replica `other`, and checks that `one` refuses it as soon
as its tail has read the log (`cache.follow()`, what the tail thread does every 25 ms, called here so no
test waits on a clock), and at once when the revocation was made on `one` itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from auth_client.gen.auth.v1 import access_pb2, admin_pb2, auth_pb2
from auth_server.domain.session_cache import STALE_AFTER, SessionCache
from auth_server.infra.clock import utcnow
from tests.integration.conftest import PASSWORD, Client, md
from tests.support.rpc import fails

TENANT = "default"


def get_me(client: Client, token: str) -> auth_pb2.GetMeResponse:
    return client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token))


def cached(client: Client, session_id: str) -> bool:
    assert client.app is not None and client.app.cache is not None
    return client.app.cache.get(TENANT, session_id) is not None


def follow(client: Client) -> None:
    assert client.app is not None and client.app.cache is not None
    client.app.cache.follow()


@pytest.fixture
def replicas(make_client: Any) -> tuple[Client, Client]:
    return make_client(), make_client()


def signed_in(one: Client, other: Client, username: str) -> tuple[auth_pb2.VerifyOtpResponse, str]:
    """A user signed in through `other` whose token `one` has just served from its cache."""
    one.signup(username)
    tokens = other.sign_in(username)
    get_me(one, tokens.access_token)
    assert cached(one, tokens.session_id)
    get_me(one, tokens.access_token)  # served from the cache
    return tokens, one.store.find_user(TENANT, username).id


def test_a_logout_through_another_replica_ends_the_token_once_the_log_is_read(replicas: tuple[Client, Client]) -> None:
    one, other = replicas
    tokens, _ = signed_in(one, other, "ann")
    other.auth.LogoutSession(
        auth_pb2.LogoutSessionRequest(session_id=tokens.session_id), metadata=md(tokens.access_token)
    )
    follow(one)
    assert not cached(one, tokens.session_id)
    assert fails(get_me, one, tokens.access_token).reason == "SESSION_REVOKED"


def test_a_logout_here_ends_the_token_here_before_the_call_returns(client: Client) -> None:
    client.signup("bea")
    tokens = client.sign_in("bea")
    get_me(client, tokens.access_token)
    assert cached(client, tokens.session_id)
    client.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    # No follow(): the revocation log's listener dropped the entry inside LogoutAll.
    assert fails(get_me, client, tokens.access_token).reason == "SESSION_REVOKED"


def test_a_password_change_elsewhere_ends_every_cached_session_of_the_user(replicas: tuple[Client, Client]) -> None:
    one, other = replicas
    laptop, _ = signed_in(one, other, "cid")
    phone = other.sign_in("cid")
    get_me(one, phone.access_token)
    other.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="another long passphrase"),
        metadata=md(phone.access_token),
    )
    follow(one)
    for tokens in (laptop, phone):
        assert fails(get_me, one, tokens.access_token).reason == "SESSION_REVOKED"


def test_an_admin_lock_and_a_demotion_elsewhere_reach_the_cached_caller(replicas: tuple[Client, Client]) -> None:
    one, other = replicas
    admin_token = other.sign_in_admin("root")
    # A second admin, cached on `one` while it may list users.
    deputy, deputy_id = signed_in(one, other, "deputy")
    other.admin.SetUserRole(
        admin_pb2.SetUserRoleRequest(user_id=deputy_id, role=access_pb2.ROLE_ADMIN), metadata=md(admin_token)
    )
    follow(one)
    one.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=md(deputy.access_token))
    assert cached(one, deputy.session_id)

    other.admin.SetUserRole(
        admin_pb2.SetUserRoleRequest(user_id=deputy_id, role=access_pb2.ROLE_USER), metadata=md(admin_token)
    )
    follow(one)
    denied = fails(one.admin.ListUsers, admin_pb2.ListUsersRequest(), metadata=md(deputy.access_token))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_ROLE")

    get_me(one, deputy.access_token)
    assert cached(one, deputy.session_id)
    other.admin.LockUser(admin_pb2.LockUserRequest(user_id=deputy_id, reason="test"), metadata=md(admin_token))
    follow(one)
    assert fails(get_me, one, deputy.access_token).code == grpc.StatusCode.UNAUTHENTICATED


def test_the_tail_thread_reads_the_log_by_itself(make_client: Any) -> None:
    # Entries that would outlive the wait below: only the tail can drop this one.
    one, other = make_client(AUTH_SESSION_CACHE_TTL="300"), make_client()
    tokens, _ = signed_in(one, other, "dee")
    other.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=md(tokens.access_token))
    # The tail runs every 25 ms; waiting is bounded by a generous deadline and ends at the first refusal.
    deadline = utcnow() + timedelta(seconds=20)
    while cached(one, tokens.session_id) and utcnow() < deadline:
        time.sleep(0.005)
    assert fails(get_me, one, tokens.access_token).reason == "SESSION_REVOKED"


def test_a_refusal_is_never_taken_from_the_cache(replicas: tuple[Client, Client]) -> None:
    """A cached pair that would refuse (here: its session looks expired) is checked against the store."""
    one, other = replicas
    tokens, _ = signed_in(one, other, "eve")
    assert one.app is not None and one.app.cache is not None
    session, user = one.app.cache.get(TENANT, tokens.session_id)  # type: ignore[misc]
    stale = dataclasses.replace(session, expires_at=utcnow() - timedelta(seconds=1))
    one.app.cache.put(TENANT, stale, user, one.app.cache.epoch(TENANT))
    assert get_me(one, tokens.access_token).session_id == tokens.session_id


def test_a_profile_change_here_shows_on_the_next_call(client: Client) -> None:
    client.signup("gus")
    tokens = client.sign_in("gus")
    assert get_me(client, tokens.access_token).user.name != "Gus Renamed"
    client.auth.UpdateMe(auth_pb2.UpdateMeRequest(name="Gus Renamed"), metadata=md(tokens.access_token))
    assert get_me(client, tokens.access_token).user.name == "Gus Renamed"


def test_the_cache_reports_its_reads_entries_and_tail_in_the_metrics(client: Client) -> None:
    assert client.app is not None
    registry = client.app.metrics.registry

    def reads(result: str) -> float:
        return registry.get_sample_value("auth_session_cache_reads_total", {"result": result}) or 0.0

    client.signup("ida")
    tokens = client.sign_in("ida")
    before = reads("hit"), reads("miss")
    for _ in range(3):
        get_me(client, tokens.access_token)
    assert (reads("hit") - before[0], reads("miss") - before[1]) == (2, 1)
    assert registry.get_sample_value("auth_session_cache_entries") == 1
    follow(client)
    assert 0 <= registry.get_sample_value("auth_session_cache_tail_age_seconds") < 1  # type: ignore[operator]


def test_without_the_cache_every_call_reads_the_store(make_client: Any) -> None:
    client = make_client(AUTH_SESSION_CACHE_TTL="0")
    assert client.app is not None and client.app.cache is None
    client.signup("hal")
    tokens = client.sign_in("hal")
    get_me(client, tokens.access_token)
    client.store.update_session(TENANT, tokens.session_id, set={"revoked_at": utcnow()})  # no log entry
    assert fails(get_me, client, tokens.access_token).reason == "SESSION_REVOKED"


# --- the cache alone, on both stores (a clock of our own: no waiting)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache_and_pair(client: Client) -> Iterator[tuple[SessionCache, Clock, Any, Any]]:
    client.signup("ivy")
    tokens = client.sign_in("ivy")
    session, user = client.store.get_session_and_user(TENANT, tokens.session_id)
    clock = Clock()
    cache = SessionCache(client.store, [TENANT], ttl=10, max_entries=2, clock=clock)
    cache.follow()
    yield cache, clock, session, user
    cache.close()


def test_an_entry_lives_no_longer_than_the_ttl(cache_and_pair: tuple[SessionCache, Clock, Any, Any]) -> None:
    cache, clock, session, user = cache_and_pair
    cache.put(TENANT, session, user, cache.epoch(TENANT))
    clock.now += 9.9
    cache.follow()
    assert cache.get(TENANT, session.id) is not None
    clock.now += 0.2
    cache.follow()
    assert cache.get(TENANT, session.id) is None


def test_nothing_is_served_while_the_log_goes_unread(cache_and_pair: tuple[SessionCache, Clock, Any, Any]) -> None:
    """A stuck tail or a store it cannot read must not stretch a revoked token's life."""
    cache, clock, session, user = cache_and_pair
    cache.put(TENANT, session, user, cache.epoch(TENANT))
    clock.now += STALE_AFTER + 0.1  # no follow() meanwhile
    assert cache.get(TENANT, session.id) is None
    cache.follow()
    assert cache.get(TENANT, session.id) is not None


def test_a_read_that_raced_a_revocation_is_not_kept(cache_and_pair: tuple[SessionCache, Clock, Any, Any]) -> None:
    cache, _, session, user = cache_and_pair
    epoch = cache.epoch(TENANT)  # taken before the store read...
    cache.forget_session(TENANT, session.id)  # ...a revocation lands meanwhile...
    cache.put(TENANT, session, user, epoch)  # ...so what was read is stale
    assert cache.get(TENANT, session.id) is None


def test_the_cache_keeps_at_most_its_bound(cache_and_pair: tuple[SessionCache, Clock, Any, Any]) -> None:
    cache, _, session, user = cache_and_pair
    ids = ["s1", "s2", "s3"]
    for session_id in ids:
        cache.put(TENANT, dataclasses.replace(session, id=session_id), user, cache.epoch(TENANT))
    assert [cache.get(TENANT, i) is not None for i in ids] == [False, True, True]
    cache.forget_user(TENANT, user.id)
    assert all(cache.get(TENANT, i) is None for i in ids)
