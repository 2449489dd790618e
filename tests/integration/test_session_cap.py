"""AUTH_MAX_SESSIONS_PER_USER (issue 14, part 6): a session beyond the cap ends the user's idlest one,
and parallel sign-ins of one user never leave more live sessions than the cap. Both stores."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import grpc

from auth_client.gen.auth.v1 import auth_pb2
from auth_server.domain import otp
from auth_server.infra.keys import KeyRing
from auth_server.store.base import LoginChallenge
from tests.integration.conftest import SECRET, md
from tests.support.records import new_id, utcnow
from tests.support.rpc import fails, failure

TENANT = "default"


def _get_me(client: Any, token: str) -> auth_pb2.GetMeResponse:
    return client.auth.GetMe(auth_pb2.GetMeRequest(), metadata=md(token))


def _evictions(client: Any, user_id: str) -> list[str]:
    events = client.store.list_events(TENANT, None, 200, user_id=user_id)
    return [json.loads(e.details)["session_id"] for e in events if e.type == "session.evicted"]


def test_a_session_beyond_the_cap_ends_the_idlest_one(make_client: Any) -> None:
    client = make_client(AUTH_MAX_SESSIONS_PER_USER="3")
    user = client.signup("capped")
    first, second, third = (client.sign_in("capped", device=f"device {i}") for i in range(3))
    # The second session has been idle for an hour, the first was used a minute ago: the second is the
    # least recently active, though the first is the oldest.
    now = utcnow()
    client.store.update_session(TENANT, second.session_id, set={"last_activity": now - timedelta(hours=1)})
    client.store.update_session(TENANT, first.session_id, set={"last_activity": now - timedelta(minutes=1)})

    fourth = client.sign_in("capped", device="device 3")

    refused = fails(_get_me, client, second.access_token)
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    for tokens in (first, third, fourth):
        assert _get_me(client, tokens.access_token).user.id == user.id
    listed = client.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=md(fourth.access_token)).sessions
    assert {s.id for s in listed} == {first.session_id, third.session_id, fourth.session_id}
    # Its refresh token is dead too, as for any revoked session.
    refused = fails(client.auth.Refresh, auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    assert refused.reason == "SESSION_REVOKED"

    evicted = client.store.get_session(TENANT, second.session_id)
    assert evicted is not None and evicted.revoked_at is not None and evicted.revoke_reason == "evicted"
    assert _evictions(client, user.id) == [second.session_id]
    log = client.store.list_revocations(TENANT, 0, 100)
    assert [(r.kind, r.user_id) for r in log if r.session_id == second.session_id] == [("session_revoked", user.id)]


def test_a_lowered_cap_ends_every_session_beyond_it_at_the_next_sign_in(make_client: Any) -> None:
    client = make_client(AUTH_MAX_SESSIONS_PER_USER="0")  # no cap: four sessions live side by side
    user = client.signup("lowered")
    before = [client.sign_in("lowered") for _ in range(4)]
    assert len(client.store.list_active_sessions(TENANT, user.id, utcnow())) == 4

    capped = make_client(AUTH_MAX_SESSIONS_PER_USER="2")  # a restart with a cap of 2, on the same store
    newest = capped.sign_in("lowered")
    live = {s.id for s in capped.store.list_active_sessions(TENANT, user.id, utcnow())}
    assert live == {before[-1].session_id, newest.session_id}
    assert sorted(_evictions(capped, user.id)) == sorted(t.session_id for t in before[:3])


def test_parallel_sign_ins_never_exceed_the_cap(make_client: Any) -> None:
    cap, logins = 3, 8
    client = make_client(AUTH_MAX_SESSIONS_PER_USER=str(cap))
    user = client.signup("racer")
    # Eight pending logins, each with its own code (Login itself keeps only the newest code of a user,
    # so they are written as Login writes them), redeemed by eight VerifyOtp calls released together.
    keys = KeyRing.from_secret(SECRET.encode())
    codes: list[tuple[str, str]] = []
    for _ in range(logins):
        challenge_id, code, now = new_id(), otp.new_code(), utcnow()
        client.store.create_challenge(
            TENANT,
            LoginChallenge(
                id=challenge_id,
                user_id=user.id,
                otp_hash=otp.hash_code(keys, challenge_id, code),
                created_at=now,
                expires_at=now + timedelta(minutes=5),
            ),
        )
        codes.append((challenge_id, code))

    most_seen = 0
    done = threading.Event()

    def watch() -> None:  # samples the live sessions while the sign-ins run
        nonlocal most_seen
        while not done.is_set():
            most_seen = max(most_seen, len(client.store.list_active_sessions(TENANT, user.id, utcnow())))

    barrier = threading.Barrier(logins, timeout=30)

    def verify(login: tuple[str, str]) -> auth_pb2.VerifyOtpResponse:
        barrier.wait()
        request = auth_pb2.VerifyOtpRequest(login_id=login[0], otp=login[1])
        return client.auth.VerifyOtp(request, metadata=md())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=logins) as pool:
            signed_in = list(pool.map(verify, codes))
    finally:
        done.set()
        watcher.join()

    live = client.store.list_active_sessions(TENANT, user.id, utcnow())
    assert len(live) == cap
    assert most_seen <= cap
    issued = {t.session_id for t in signed_in}
    assert len(issued) == logins and {s.id for s in live} <= issued
    assert sorted(_evictions(client, user.id)) == sorted(issued - {s.id for s in live})
    answers: dict[str, str] = {}
    for tokens in signed_in:
        try:
            _get_me(client, tokens.access_token)
            answers[tokens.session_id] = "OK"
        except grpc.RpcError as error:
            answers[tokens.session_id] = failure(error).reason
    assert sorted(answers.values()) == ["OK"] * cap + ["SESSION_REVOKED"] * (logins - cap)


def test_far_below_the_cap_a_sign_in_takes_no_lease_and_near_it_one_does(make_client: Any) -> None:
    from auth_server.domain.sessions import LEASE_MARGIN

    far = make_client(AUTH_MAX_SESSIONS_PER_USER=str(LEASE_MARGIN + 3))
    user = far.signup("roomy")
    for _ in range(3):  # each opens with fewer than 3 live sessions: more than the margin below the cap
        far.sign_in("roomy")
    assert far.store.get_counter(TENANT, f"lease:sessions:{user.id}") is None
    far.sign_in("roomy")  # with 3 live this one is within the margin, so it takes the lease
    assert far.store.get_counter(TENANT, f"lease:sessions:{user.id}") is not None
