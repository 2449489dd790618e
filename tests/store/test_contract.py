"""The storage contract (auth_server/store/base.py), run against every adapter.

Each test gets a fresh database: a new SQLite file, or new random tenant ids on the MongoDB server
(each tenant is its own database there). Both adapters must behave identically.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from auth_server.store import DuplicateKey, Store, StoreUnavailable, open_store
from auth_server.store.base import Counter, replace
from auth_server.store.mongo import MongoStore
from auth_server.store.sqlite import SqliteStore
from tests.support.ferretdb import free_port
from tests.support.parallel import in_parallel
from tests.support.records import new_challenge, new_id, new_session, new_user, utcnow

# -- users ---------------------------------------------------------------------------------------


def test_user_round_trips_every_field(store: Store, tenant: str) -> None:
    now = utcnow()
    user = new_user(
        role="admin",
        admin_locked=True,
        locked_until=now + timedelta(minutes=15),
        failed_logins=3,
        lockouts=2,
        last_otp_sent_at=now,
        unlock_token_hash=b"\x00\xffhash",
        unlock_token_expires_at=now + timedelta(hours=1),
        password_changed_at=now - timedelta(days=1),
    )
    store.create_user(tenant, user)
    assert store.get_user(tenant, user.id) == user
    plain = new_user()  # every optional field left at its default
    store.create_user(tenant, plain)
    assert store.get_user(tenant, plain.id) == plain


def test_datetimes_come_back_aware_utc_and_truncated_to_milliseconds(store: Store, tenant: str) -> None:
    precise = datetime(2030, 5, 17, 13, 45, 12, 345678, tzinfo=UTC)
    elsewhere = datetime(2030, 5, 17, 15, 45, 12, 345000, tzinfo=timezone(timedelta(hours=2)))
    user = new_user(created_at=precise, locked_until=elsewhere)
    store.create_user(tenant, user)
    got = store.get_user(tenant, user.id)
    assert got is not None
    assert got.created_at == datetime(2030, 5, 17, 13, 45, 12, 345000, tzinfo=UTC)
    assert got.locked_until == elsewhere
    for value in (got.created_at, got.locked_until):
        assert value is not None and value.utcoffset() == timedelta(0)
    now = utcnow()  # the clock's values survive a round trip unchanged
    assert now.microsecond % 1000 == 0
    updated = store.update_user(tenant, user.id, set={"last_otp_sent_at": now})
    assert updated is not None and updated.last_otp_sent_at == now


def test_get_user_of_unknown_id_is_none(store: Store, tenant: str) -> None:
    assert store.get_user(tenant, new_id()) is None


def test_find_user_by_username_or_email(store: Store, tenant: str) -> None:
    user = new_user(username="alice", email="alice@example.test")
    store.create_user(tenant, new_user())
    store.create_user(tenant, user)
    assert store.find_user(tenant, "alice") == user
    assert store.find_user(tenant, "alice@example.test") == user
    assert store.find_user(tenant, "bob") is None
    assert store.find_user(tenant, "ALICE") is None  # arguments arrive normalised; no folding here


@pytest.mark.parametrize("field", ["username", "email"])
def test_duplicate_username_or_email_is_refused_and_writes_nothing(store: Store, tenant: str, field: str) -> None:
    first = new_user(role="manager")
    store.create_user(tenant, first)
    clash = new_user(role="manager", **{field: getattr(first, field)})
    with pytest.raises(DuplicateKey) as caught:
        store.create_user(tenant, clash)
    assert caught.value.field == field
    assert store.get_user(tenant, clash.id) is None
    assert store.count_users(tenant, "manager") == 1
    assert store.list_users(tenant, None, 10) == [first]
    other_field = "email" if field == "username" else "username"
    assert store.find_user(tenant, getattr(clash, other_field)) is None


def test_list_users_pages_in_id_order(store: Store, tenant: str) -> None:
    users = [new_user() for _ in range(5)]
    for user in reversed(users):  # insertion order must not matter
        store.create_user(tenant, user)
    expected = sorted(users, key=lambda u: u.id)
    first = store.list_users(tenant, None, 2)
    second = store.list_users(tenant, first[-1].id, 2)
    third = store.list_users(tenant, second[-1].id, 2)
    assert first + second + third == expected
    assert len(third) == 1
    assert store.list_users(tenant, third[-1].id, 2) == []
    assert store.list_users(tenant, None, 100) == expected
    assert store.list_users(tenant, None, 0) == []


def test_count_users_by_role(store: Store, tenant: str) -> None:
    for role in ("user", "user", "admin", "manager", "user"):
        store.create_user(tenant, new_user(role=role))
    assert store.count_users(tenant, "user") == 3
    assert store.count_users(tenant, "admin") == 1
    assert store.count_users(tenant, "nobody") == 0


def test_update_user_sets_and_increments(store: Store, tenant: str) -> None:
    user = new_user(failed_logins=1)
    store.create_user(tenant, user)
    until = utcnow() + timedelta(minutes=5)
    updated = store.update_user(
        tenant,
        user.id,
        set={"locked_until": until, "admin_locked": True, "name": "N"},
        inc={"failed_logins": 2},
    )
    assert updated == replace(user, locked_until=until, admin_locked=True, name="N", failed_logins=3)
    assert store.get_user(tenant, user.id) == updated
    cleared = store.update_user(tenant, user.id, set={"locked_until": None}, inc={"failed_logins": -3})
    assert cleared == replace(updated, locked_until=None, failed_logins=0)


def test_update_with_failed_expectation_returns_none_and_changes_nothing(store: Store, tenant: str) -> None:
    user = new_user(failed_logins=2)
    store.create_user(tenant, user)
    assert store.update_user(tenant, user.id, set={"role": "admin"}, expect={"failed_logins": 1}) is None
    assert store.update_user(tenant, user.id, inc={"lockouts": 1}, expect={"role": "manager"}) is None
    assert store.get_user(tenant, user.id) == user
    done = store.update_user(tenant, user.id, set={"role": "admin"}, expect={"failed_logins": 2, "role": "user"})
    assert done == replace(user, role="admin")


def test_expect_none_matches_only_an_unset_field(store: Store, tenant: str) -> None:
    user = new_user()
    store.create_user(tenant, user)
    token = b"unlock-hash"
    first = store.update_user(tenant, user.id, set={"unlock_token_hash": token}, expect={"unlock_token_hash": None})
    assert first is not None and first.unlock_token_hash == token
    again = store.update_user(tenant, user.id, set={"unlock_token_hash": b"x"}, expect={"unlock_token_hash": None})
    assert again is None
    redeemed = store.update_user(tenant, user.id, set={"unlock_token_hash": None}, expect={"unlock_token_hash": token})
    assert redeemed is not None and redeemed.unlock_token_hash is None


def test_update_without_changes_is_a_conditional_read(store: Store, tenant: str) -> None:
    user = new_user()
    store.create_user(tenant, user)
    assert store.update_user(tenant, user.id, expect={"role": "user"}) == user
    assert store.update_user(tenant, user.id, expect={"role": "admin"}) is None


def test_update_of_unknown_record_is_none(store: Store, tenant: str) -> None:
    assert store.update_user(tenant, new_id(), set={"name": "x"}) is None
    assert store.update_session(tenant, new_id(), inc={"refresh_generation": 1}) is None
    assert store.update_challenge(tenant, new_id(), set={"consumed_at": utcnow()}) is None


@pytest.mark.parametrize(
    "change",
    [
        {"set": {"no_such_field": 1}},
        {"set": {"name = 'x', role": "admin"}},  # a name that would be SQL if interpolated unchecked
        {"expect": {"role = role OR 1": 1}},
        {"set": {"id": "other"}},
        {"expect": {"id": "other"}},
        {"inc": {"name": 1}},  # not an integer field
        {"inc": {"admin_locked": 1}},  # bool is not a counter
        {"set": {"failed_logins": "3"}},  # wrong kind of value
        {"set": {"created_at": datetime(2030, 1, 1)}},  # naive datetime
        {"set": {"username": None}},  # not nullable
        {"set": {"failed_logins": 1}, "inc": {"failed_logins": 1}},
    ],
)
def test_bad_updates_are_refused_and_change_nothing(store: Store, tenant: str, change: dict[str, Any]) -> None:
    user = new_user()
    store.create_user(tenant, user)
    with pytest.raises(ValueError):
        store.update_user(tenant, user.id, **change)
    assert store.get_user(tenant, user.id) == user


# -- sessions ------------------------------------------------------------------------------------


def test_session_round_trip_and_get_session_and_user(store: Store, tenant: str) -> None:
    user = new_user()
    store.create_user(tenant, user)
    session = new_session(user.id, rotated_at=utcnow(), refresh_generation=4, revoke_reason="")
    store.create_session(tenant, session)
    assert store.get_session(tenant, session.id) == session
    assert store.get_session_and_user(tenant, session.id) == (session, user)
    assert store.get_session(tenant, new_id()) is None
    assert store.get_session_and_user(tenant, new_id()) is None


def test_session_of_a_missing_user_has_no_session_and_user(store: Store, tenant: str) -> None:
    orphan = new_session(new_id())
    store.create_session(tenant, orphan)
    assert store.get_session_and_user(tenant, orphan.id) is None


def test_update_session_compare_and_set(store: Store, tenant: str) -> None:
    session = new_session(new_id())
    store.create_session(tenant, session)
    later = utcnow() + timedelta(seconds=1)
    rotated = store.update_session(
        tenant,
        session.id,
        set={"refresh_hash": b"new", "rotated_at": later, "last_activity": later},
        inc={"refresh_generation": 1},
        expect={"refresh_generation": 0, "refresh_hash": session.refresh_hash, "revoked_at": None},
    )
    assert rotated == replace(session, refresh_hash=b"new", rotated_at=later, last_activity=later, refresh_generation=1)
    stale = store.update_session(tenant, session.id, inc={"refresh_generation": 1}, expect={"refresh_generation": 0})
    assert stale is None
    assert store.get_session(tenant, session.id) == rotated


def test_revoke_sessions_counts_and_spares_the_exception(store: Store, tenant: str) -> None:
    user_id, other_user = new_id(), new_id()
    sessions = [new_session(user_id) for _ in range(3)]
    bystander = new_session(other_user)
    for session in (*sessions, bystander):
        store.create_session(tenant, session)
    now = utcnow()
    keep = sessions[0]
    assert store.revoke_sessions(tenant, user_id, now, "logout_all", except_id=keep.id) == 2
    for session in sessions[1:]:
        assert store.get_session(tenant, session.id) == replace(session, revoked_at=now, revoke_reason="logout_all")
    assert store.get_session(tenant, keep.id) == keep
    assert store.get_session(tenant, bystander.id) == bystander
    later = now + timedelta(seconds=1)
    # Already revoked sessions keep their first revocation; only the spared one is counted now.
    assert store.revoke_sessions(tenant, user_id, later, "password_changed") == 1
    assert store.get_session(tenant, keep.id) == replace(keep, revoked_at=later, revoke_reason="password_changed")
    assert store.get_session(tenant, sessions[1].id) == replace(sessions[1], revoked_at=now, revoke_reason="logout_all")
    assert store.revoke_sessions(tenant, user_id, later, "again") == 0


def test_list_active_sessions_skips_revoked_and_expired_newest_first(store: Store, tenant: str) -> None:
    user_id = new_id()
    now = utcnow()
    old = new_session(user_id, last_activity=now - timedelta(hours=2))
    recent = new_session(user_id, last_activity=now - timedelta(minutes=1))
    middle = new_session(user_id, last_activity=now - timedelta(hours=1))
    revoked = new_session(user_id, revoked_at=now - timedelta(minutes=5), revoke_reason="logout")
    expired = new_session(user_id, expires_at=now - timedelta(seconds=1))
    expiring_now = new_session(user_id, expires_at=now)  # expiry is exclusive: dead at `now`
    someone_else = new_session(new_id())
    for session in (old, recent, middle, revoked, expired, expiring_now, someone_else):
        store.create_session(tenant, session)
    assert store.list_active_sessions(tenant, user_id, now) == [recent, middle, old]
    assert store.list_active_sessions(tenant, new_id(), now) == []


# -- login challenges ----------------------------------------------------------------------------


def test_challenge_round_trip_and_attempts(store: Store, tenant: str) -> None:
    challenge = new_challenge(new_id())
    store.create_challenge(tenant, challenge)
    assert store.get_challenge(tenant, challenge.id) == challenge
    tried = store.update_challenge(
        tenant, challenge.id, inc={"attempts": 1}, expect={"consumed_at": None, "attempts": 0}
    )
    assert tried == replace(challenge, attempts=1)
    now = utcnow()
    used = store.update_challenge(tenant, challenge.id, set={"consumed_at": now}, expect={"consumed_at": None})
    assert used == replace(challenge, attempts=1, consumed_at=now)
    assert store.update_challenge(tenant, challenge.id, set={"consumed_at": now}, expect={"consumed_at": None}) is None
    assert store.get_challenge(tenant, new_id()) is None


def test_consume_challenges_closes_only_the_users_open_ones(store: Store, tenant: str) -> None:
    user_id = new_id()
    earlier = utcnow() - timedelta(minutes=1)
    open_ones = [new_challenge(user_id) for _ in range(2)]
    done = new_challenge(user_id, consumed_at=earlier)
    other = new_challenge(new_id())
    for challenge in (*open_ones, done, other):
        store.create_challenge(tenant, challenge)
    now = utcnow()
    assert store.consume_challenges(tenant, user_id, now) == 2
    for challenge in open_ones:
        assert store.get_challenge(tenant, challenge.id) == replace(challenge, consumed_at=now)
    assert store.get_challenge(tenant, done.id) == done
    assert store.get_challenge(tenant, other.id) == other
    assert store.consume_challenges(tenant, user_id, now) == 0


# -- tenants -------------------------------------------------------------------------------------


def test_tenants_never_see_each_other(store: Store, tenant: str, other_tenant: str) -> None:
    user = new_user(role="admin")
    session = new_session(user.id)
    challenge = new_challenge(user.id)
    store.create_user(tenant, user)
    store.create_session(tenant, session)
    store.create_challenge(tenant, challenge)
    now = utcnow()

    assert store.get_user(other_tenant, user.id) is None
    assert store.find_user(other_tenant, user.username) is None
    assert store.find_user(other_tenant, user.email) is None
    assert store.list_users(other_tenant, None, 10) == []
    assert store.count_users(other_tenant, "admin") == 0
    assert store.update_user(other_tenant, user.id, set={"role": "user"}) is None
    assert store.get_session(other_tenant, session.id) is None
    assert store.get_session_and_user(other_tenant, session.id) is None
    assert store.list_active_sessions(other_tenant, user.id, now) == []
    assert store.update_session(other_tenant, session.id, inc={"refresh_generation": 1}) is None
    assert store.revoke_sessions(other_tenant, user.id, now, "x") == 0
    assert store.get_challenge(other_tenant, challenge.id) is None
    assert store.update_challenge(other_tenant, challenge.id, inc={"attempts": 1}) is None
    assert store.consume_challenges(other_tenant, user.id, now) == 0

    # Uniqueness is per tenant: the very same records fit in the other tenant.
    store.create_user(other_tenant, user)
    store.create_session(other_tenant, session)
    store.create_challenge(other_tenant, challenge)
    assert store.get_session_and_user(other_tenant, session.id) == (session, user)
    # ...and the first tenant's records were never touched.
    assert store.get_user(tenant, user.id) == user
    assert store.get_session(tenant, session.id) == session
    assert store.get_challenge(tenant, challenge.id) == challenge


def test_prepare_tenant_is_idempotent_and_ping_answers(store: Store, tenant: str) -> None:
    store.prepare_tenant(tenant)
    store.prepare_tenant(tenant)
    store.ping()
    user = new_user()
    store.create_user(tenant, user)
    with pytest.raises(DuplicateKey):  # the unique indexes are still in force
        store.create_user(tenant, new_user(username=user.username))


# -- races ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [2, 8])
def test_exactly_one_concurrent_compare_and_set_wins(store: Store, tenant: str, threads: int) -> None:
    """On MongoDB each update is atomic on the server; on FerretDB 1.24 the adapter's write lock makes it so."""
    session = new_session(new_id())
    store.create_session(tenant, session)

    def rotate() -> Any:
        return store.update_session(tenant, session.id, set={"refresh_generation": 1}, expect={"refresh_generation": 0})

    results = in_parallel(threads, rotate)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].refresh_generation == 1
    assert results.count(None) == threads - 1


def test_concurrent_increments_are_all_counted(store: Store, tenant: str) -> None:
    user = new_user()
    store.create_user(tenant, user)
    threads, rounds = 8, 5

    def bump() -> None:
        for _ in range(rounds):
            assert store.update_user(tenant, user.id, inc={"failed_logins": 1}) is not None

    in_parallel(threads, bump)
    final = store.get_user(tenant, user.id)
    assert final is not None and final.failed_logins == threads * rounds


# -- closed store --------------------------------------------------------------------------------


def test_a_closed_store_is_unavailable(store: Store, tenant: str) -> None:
    store.close()
    with pytest.raises(StoreUnavailable):
        store.get_user(tenant, new_id())
    with pytest.raises(StoreUnavailable):
        store.ping()
    store.open()  # and it can be opened again
    assert store.get_user(tenant, new_id()) is None


# -- unavailable databases (adapter-specific set-ups, same behaviour) -----------------------------


def test_sqlite_in_an_unusable_directory_is_unavailable_until_it_is_fixed(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a regular file where the database directory should be")
    store = SqliteStore(blocker / "auth.db")  # tests run as root here, so permissions cannot block it
    with pytest.raises(StoreUnavailable):
        store.open()
    blocker.unlink()
    blocker.mkdir()
    store.open()
    try:
        user = new_user()
        store.create_user("acme", user)
        assert store.get_user("acme", user.id) == user
    finally:
        store.close()


def test_sqlite_locked_database_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    store = SqliteStore(path, busy_timeout=0.05)
    store.open()
    user = new_user()
    store.create_user("acme", user)
    # Another process holding the write lock past the busy timeout: writes fail, reads go on (WAL).
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            store.create_user("acme", new_user())
        assert store.get_user("acme", user.id) == user
        other.execute("COMMIT")
        late = new_user()
        store.create_user("acme", late)
        assert store.get_user("acme", late.id) == late
    finally:
        other.close()
        store.close()


def test_mongodb_on_a_closed_port_fails_fast_on_open() -> None:
    store = open_store(f"mongodb://127.0.0.1:{free_port()}/")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.open()
    # Fail fast: the short server-selection timeout, not pymongo's default 30 s.
    assert time.monotonic() - started < 15
    with pytest.raises(StoreUnavailable):
        store.ping()


# -- audit trail ---------------------------------------------------------------------------------


def test_audit_events_newest_first_paged_and_filtered(store: Store, tenant: str, other_tenant: str) -> None:
    from auth_server.infra.clock import utcnow
    from auth_server.store.base import AuditEvent

    events = [
        AuditEvent(
            id=new_id(),
            type=f"t{i}",
            user_id="u1" if i % 2 else "u2",
            actor_user_id="",
            ip_address="10.0.0.1",
            created_at=utcnow(),
            details=json.dumps({"n": str(i)}),
        )
        for i in range(5)
    ]
    ids = sorted(e.id for e in events)
    assert len(set(ids)) == 5
    for event in events:
        store.record_event(tenant, event)
    newest = store.list_events(tenant, None, 3)
    assert [e.id for e in newest] == ids[::-1][:3]
    assert newest[0] == max(events, key=lambda e: e.id)  # every field round-trips
    rest = store.list_events(tenant, newest[-1].id, 3)
    assert [e.id for e in rest] == ids[::-1][3:]
    assert {e.user_id for e in store.list_events(tenant, None, 10, user_id="u1")} == {"u1"}
    assert store.list_events(other_tenant, None, 10) == []


def test_count_users_can_leave_out_admin_locked_ones(store: Store, tenant: str) -> None:
    for locked in (False, True, False):
        store.create_user(tenant, replace(new_user(role="admin"), admin_locked=locked))
    assert store.count_users(tenant, "admin") == 3
    assert store.count_users(tenant, "admin", unlocked_only=True) == 2


def test_counters_round_trip_compare_and_swap_and_refuse_duplicates(store: Store, tenant: str) -> None:
    now = utcnow()
    counter = Counter(id="pair:abc:203.0.113.7", version=1, count=2, window_start=now, expires_at=now)
    store.create_counter(tenant, counter)
    assert store.get_counter(tenant, counter.id) == counter
    with pytest.raises(DuplicateKey):
        store.create_counter(tenant, replace(counter, count=9))
    swapped = store.update_counter(tenant, counter.id, set={"count": 3}, inc={"version": 1}, expect={"version": 1})
    assert (swapped.count, swapped.version) == (3, 2)
    assert store.update_counter(tenant, counter.id, set={"count": 4}, inc={"version": 1}, expect={"version": 1}) is None
    assert store.get_counter(tenant, counter.id).count == 3
    assert store.get_counter(tenant, "pair:missing") is None


def test_delete_counters_by_literal_prefix(store: Store, tenant: str, other_tenant: str) -> None:
    # Prefixes hold characters that SQL LIKE and regular expressions would read as wildcards.
    keys = ["acct:a.b", "acct:a.b%", "acct:axb", "pair:a_b:1", "pair:a_b:2", "pair:aXb:1"]
    for key in keys:
        store.create_counter(tenant, Counter(id=key, version=1))
    store.create_counter(other_tenant, Counter(id="pair:a_b:1", version=1))
    assert store.delete_counters(tenant, "pair:a_b:") == 2
    assert store.delete_counters(tenant, "acct:a.b") == 2
    remaining = [k for k in keys if store.get_counter(tenant, k) is not None]
    assert remaining == ["acct:axb", "pair:aXb:1"]
    assert store.get_counter(other_tenant, "pair:a_b:1") is not None
    with pytest.raises(ValueError, match="prefix"):
        store.delete_counters(tenant, "")


# -- service accounts (platform-wide) ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "mongodb"])
def platform_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store of its own: service accounts are platform-wide, so on MongoDB a fresh database prefix."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/auth.db"
    else:
        uri = request.getfixturevalue("mongodb_uri").rstrip("/") + f"/p{secrets.token_hex(4)}"
    opened = open_store(uri)
    opened.open()
    yield opened
    opened.close()
    if isinstance(opened, MongoStore):
        with MongoClient(uri) as client:
            client.drop_database(opened.platform_database())


def _account(name: str, **fields: Any) -> Any:
    from auth_server.store.base import ServiceAccount

    values: dict[str, Any] = {"tenants": "", "secret_hash": secrets.token_bytes(32), "created_at": utcnow()}
    return ServiceAccount(id=new_id(), name=name, **(values | fields))


def test_service_accounts_round_trip_and_stay_out_of_tenants(platform_store: Store) -> None:
    now = utcnow()
    orders = _account(
        "orders",
        tenants="acme,beta",
        rotated_at=now,
        previous_secret_hash=b"\x00" * 32,
        previous_valid_until=now + timedelta(hours=1),
    )
    billing = _account("billing")
    platform_store.create_service_account(orders)
    platform_store.create_service_account(billing)
    assert platform_store.get_service_account(orders.id) == orders
    assert platform_store.find_service_account("orders") == orders
    assert platform_store.find_service_account("nobody") is None
    assert platform_store.get_service_account("missing") is None
    assert [a.name for a in platform_store.list_service_accounts()] == ["billing", "orders"]
    # Not a tenant's record: no tenant sees it (SQLite keys it "_platform", MongoDB keeps it in
    # "<prefix>_platform"; neither can be a tenant id).
    assert platform_store.list_users("default", None, 10) == []
    if isinstance(platform_store, MongoStore):
        # "<prefix>_" + "_platform": the name a tenant "_platform" would get, which is no valid tenant id.
        assert platform_store.platform_database() != platform_store.database_for("platform")
        with pytest.raises(ValueError):
            platform_store.database_for("_platform")


def test_service_account_names_and_ids_are_unique(platform_store: Store) -> None:
    first = _account("orders")
    platform_store.create_service_account(first)
    with pytest.raises(DuplicateKey) as name:
        platform_store.create_service_account(_account("orders"))
    assert name.value.field == "name"
    with pytest.raises(DuplicateKey) as key:
        platform_store.create_service_account(replace(first, name="other"))
    assert key.value.field == "id"
    assert len(platform_store.list_service_accounts()) == 1


def test_service_account_update_is_conditional_and_delete_is_final(platform_store: Store) -> None:
    account = _account("orders")
    platform_store.create_service_account(account)
    now = utcnow()
    new_hash = secrets.token_bytes(32)
    rotated = platform_store.update_service_account(
        account.id,
        set={
            "secret_hash": new_hash,
            "previous_secret_hash": account.secret_hash,
            "rotated_at": now,
            "previous_valid_until": now,
        },
        expect={"secret_hash": account.secret_hash},
    )
    assert (
        rotated is not None and rotated.secret_hash == new_hash and rotated.previous_secret_hash == account.secret_hash
    )
    # A second rotation from the same old state loses: the expectation no longer holds.
    assert (
        platform_store.update_service_account(
            account.id, set={"secret_hash": b"x" * 32}, expect={"secret_hash": account.secret_hash}
        )
        is None
    )
    with pytest.raises(ValueError):
        platform_store.update_service_account(account.id, set={"name": 3})
    with pytest.raises(ValueError):
        platform_store.update_service_account(account.id, set={"id": "other"})
    assert platform_store.delete_service_account(account.id) is True
    assert platform_store.delete_service_account(account.id) is False
    assert platform_store.get_service_account(account.id) is None
    assert platform_store.find_service_account("orders") is None
    platform_store.create_service_account(_account("orders"))  # the name is free again


# -- revocation log ------------------------------------------------------------------------------


def test_revocation_log_appends_in_order_per_tenant(store: Store, tenant: str, other_tenant: str) -> None:
    from auth_server.store.base import Revocation

    assert store.last_revocation_seq(tenant) == 0 and store.list_revocations(tenant, 0, 10) == []
    at = utcnow()
    first = store.append_revocation(tenant, Revocation(0, "session_revoked", at, session_id="s1", user_id="u1"))
    elsewhere = store.append_revocation(other_tenant, Revocation(0, "user_locked", at, user_id="u9"))
    second = store.append_revocation(tenant, Revocation(0, "service_account_deleted", at, service_account_id="a"))
    assert 0 < first.seq < second.seq
    assert store.list_revocations(tenant, 0, 10) == [first, second]
    assert store.list_revocations(tenant, first.seq, 10) == [second]  # after a cursor: nothing before it
    assert store.list_revocations(tenant, 0, 1) == [first] and store.list_revocations(tenant, 0, 0) == []
    assert store.last_revocation_seq(tenant) == second.seq
    assert store.list_revocations(other_tenant, 0, 10) == [elsewhere]


def test_concurrent_revocation_appends_get_distinct_ordered_seqs(store: Store, tenant: str) -> None:
    from auth_server.store.base import Revocation

    def append(i: int) -> int:
        return store.append_revocation(tenant, Revocation(0, "user_locked", utcnow(), user_id=f"u{i}")).seq

    with ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(append, range(40)))
    assert len(set(seqs)) == 40
    listed = store.list_revocations(tenant, 0, 100)
    assert [r.seq for r in listed] == sorted(seqs)
