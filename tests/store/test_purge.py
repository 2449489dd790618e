"""Store.purge (issue 14) over both adapters: what is deleted, what is kept, and purges at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from auth_server.store import Store
from auth_server.store.base import AuditEvent, Counter, Revocation
from tests.support.parallel import in_parallel
from tests.support.records import new_challenge, new_id, new_session, new_user, utcnow

KINDS = {"sessions", "challenges", "counters", "unlock_tokens", "audit_events", "revocations"}
EXPECTED = {"sessions": 2, "challenges": 6, "counters": 1, "unlock_tokens": 1, "audit_events": 3, "revocations": 2}


def _event(created_at: datetime) -> AuditEvent:
    return AuditEvent(
        id=new_id(), type="t", user_id="u", actor_user_id="", ip_address="", created_at=created_at, details="{}"
    )


def _counter(key: str, expires_at: datetime | None) -> Counter:
    return Counter(id=key, version=1, count=1, expires_at=expires_at)


class World:
    """One tenant's records on both sides of the cut-offs: `gone` ids must go, `kept` ids must stay."""

    def __init__(self, store: Store, tenant: str, now: datetime) -> None:
        self.now = now
        self.cut = now - timedelta(minutes=30)  # ended_before
        self.events_cut = now - timedelta(days=90)  # events_before
        self.revocations_cut = now - timedelta(days=1)  # revocations_before
        before, after = self.cut - timedelta(seconds=1), self.cut + timedelta(seconds=1)
        future = now + timedelta(days=1)
        user = new_user()
        store.create_user(tenant, user)
        self.user_id = user.id
        self.sessions_gone = [
            new_session(user.id, expires_at=before),
            new_session(user.id, revoked_at=before, revoke_reason="logout"),
        ]
        self.sessions_kept = [
            new_session(user.id, expires_at=future),  # live
            new_session(user.id, expires_at=after),  # expired, but within the grace
            new_session(user.id, revoked_at=after, revoke_reason="logout"),  # revoked within the grace
        ]
        for session in self.sessions_gone + self.sessions_kept:
            store.create_session(tenant, session)
        self.challenges_gone = [
            new_challenge(user.id, kind=kind, expires_at=before)
            for kind in ("login", "signup", "reset", "email_change", "signin_report")
        ] + [new_challenge(user.id, consumed_at=before, expires_at=future)]
        self.challenges_kept = [
            new_challenge(user.id, expires_at=future),
            new_challenge(user.id, kind="reset", expires_at=after),
            new_challenge(user.id, consumed_at=after, expires_at=future),
        ]
        for challenge in self.challenges_gone + self.challenges_kept:
            store.create_challenge(tenant, challenge)
        store.create_counter(tenant, _counter("pair:gone", before))
        store.create_counter(tenant, _counter("pair:kept", after))
        store.create_counter(tenant, _counter("lease:admins", None))  # no expiry: never purged
        self.dead_unlock = new_user(unlock_token_hash=b"h" * 32, unlock_token_expires_at=before)
        self.live_unlock = new_user(unlock_token_hash=b"k" * 32, unlock_token_expires_at=future)
        for u in (self.dead_unlock, self.live_unlock):
            store.create_user(tenant, u)
        self.events_gone = [_event(self.events_cut - timedelta(seconds=1)) for _ in range(3)]
        self.events_kept = [_event(self.events_cut + timedelta(seconds=1)), _event(now)]
        for event in self.events_gone + self.events_kept:
            store.record_event(tenant, event)
        old = self.revocations_cut - timedelta(hours=1)
        self.revocations = [
            store.append_revocation(tenant, Revocation(seq=0, kind="session_revoked", at=at, session_id=f"s{i}"))
            for i, at in enumerate((old, old, now, now))
        ]

    def purge(self, store: Store, tenant: str) -> dict[str, int]:
        return store.purge(
            tenant,
            ended_before=self.cut,
            events_before=self.events_cut,
            revocations_before=self.revocations_cut,
        )

    def check_after(self, store: Store, tenant: str) -> None:
        for session in self.sessions_gone:
            assert store.get_session(tenant, session.id) is None
        for session in self.sessions_kept:
            assert store.get_session(tenant, session.id) == session
        for challenge in self.challenges_gone:
            assert store.get_challenge(tenant, challenge.id) is None, challenge.kind
        for challenge in self.challenges_kept:
            assert store.get_challenge(tenant, challenge.id) == challenge
        assert store.get_counter(tenant, "pair:gone") is None
        assert store.get_counter(tenant, "pair:kept") is not None
        assert store.get_counter(tenant, "lease:admins") is not None
        dead = store.get_user(tenant, self.dead_unlock.id)
        assert dead is not None and dead.unlock_token_hash is None and dead.unlock_token_expires_at is None
        assert dead.username == self.dead_unlock.username  # the user stays, only the token goes
        assert store.get_user(tenant, self.live_unlock.id) == self.live_unlock
        assert store.get_user(tenant, self.user_id) is not None
        assert {e.id for e in store.list_events(tenant, None, 100)} == {e.id for e in self.events_kept}
        assert [r.seq for r in store.list_revocations(tenant, 0, 100)] == [r.seq for r in self.revocations[2:]]


def test_purge_deletes_what_ended_and_keeps_the_rest(store: Store, tenant: str, other_tenant: str) -> None:
    world = World(store, tenant, utcnow())
    bystander = World(store, other_tenant, utcnow())
    assert world.purge(store, tenant) == EXPECTED
    world.check_after(store, tenant)
    # Another tenant's records are untouched.
    assert store.get_session(other_tenant, bystander.sessions_gone[0].id) is not None
    assert len(store.list_revocations(other_tenant, 0, 100)) == 4
    # A second purge finds nothing more.
    assert world.purge(store, tenant) == dict.fromkeys(KINDS, 0)
    world.check_after(store, tenant)


def test_purge_keeps_the_newest_revocation_so_seqs_go_on(store: Store, tenant: str) -> None:
    old = utcnow() - timedelta(days=3)
    first = store.append_revocation(tenant, Revocation(seq=0, kind="session_revoked", at=old, session_id="a"))
    last = store.append_revocation(tenant, Revocation(seq=0, kind="session_revoked", at=old, session_id="b"))
    now = utcnow()
    counts = store.purge(tenant, ended_before=now, events_before=now, revocations_before=now)
    assert counts["revocations"] == 1
    assert store.list_revocations(tenant, 0, 10) == [last]
    assert store.last_revocation_seq(tenant) == last.seq
    following = store.append_revocation(tenant, Revocation(seq=0, kind="session_revoked", at=now, session_id="c"))
    assert following.seq > last.seq > first.seq
    # A reader resuming from a cursor older than what was pruned gets what is left, in order.
    assert [r.session_id for r in store.list_revocations(tenant, first.seq - 1, 10)] == ["b", "c"]


def test_purge_without_a_revocation_cutoff_keeps_the_log(store: Store, tenant: str) -> None:
    old = utcnow() - timedelta(days=3)
    for sid in ("a", "b"):
        store.append_revocation(tenant, Revocation(seq=0, kind="session_revoked", at=old, session_id=sid))
    now = utcnow()
    assert store.purge(tenant, ended_before=now, events_before=now)["revocations"] == 0
    assert len(store.list_revocations(tenant, 0, 10)) == 2


def test_purge_deletes_more_than_one_batch(store: Store, tenant: str) -> None:
    old = utcnow() - timedelta(days=1)
    user = new_user()
    store.create_user(tenant, user)
    for _ in range(2100):  # more than SQLite's batch of 1000 rows per statement
        store.create_challenge(tenant, new_challenge(user.id, expires_at=old))
    keep = new_challenge(user.id)
    store.create_challenge(tenant, keep)
    now = utcnow()
    assert store.purge(tenant, ended_before=now, events_before=old)["challenges"] == 2100
    assert store.get_challenge(tenant, keep.id) == keep


def test_purges_at_once_delete_each_record_once(store: Store, tenant: str) -> None:
    world = World(store, tenant, utcnow())
    results = in_parallel(4, lambda: world.purge(store, tenant))
    totals = {kind: sum(r[kind] for r in results) for kind in KINDS}
    # Each record goes once, whoever deletes it, and no purge fails for another's deletes.
    assert totals == EXPECTED
    world.check_after(store, tenant)
