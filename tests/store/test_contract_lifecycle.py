"""The storage contract's parts the account lifecycle needs (issue 14), on every adapter: unique phones,
lookup by phone, unique-field collisions on update, challenge kinds, counter owners, and a SQLite file
made by the previous version gaining the new columns."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from auth_server.store import DuplicateKey, Store, open_store
from auth_server.store.base import Counter, replace
from tests.support.records import new_challenge, new_id, new_user, utcnow


def test_phones_are_unique_per_tenant_but_many_users_have_none(store: Store, tenant: str, other_tenant: str) -> None:
    first = new_user(phone="+14155550123")
    store.create_user(tenant, first)
    with pytest.raises(DuplicateKey) as taken:
        store.create_user(tenant, new_user(phone="+14155550123"))
    assert taken.value.field == "phone"
    store.create_user(other_tenant, new_user(phone="+14155550123"))  # another tenant: its own phones
    for _ in range(3):
        store.create_user(tenant, new_user(phone=""))


def test_update_user_refuses_a_taken_phone_or_email_and_changes_nothing(store: Store, tenant: str) -> None:
    owner, other = new_user(phone="+14155550123"), new_user(phone="")
    store.create_user(tenant, owner)
    store.create_user(tenant, other)
    for field, value in (("phone", owner.phone), ("email", owner.email), ("username", owner.username)):
        with pytest.raises(DuplicateKey) as taken:
            store.update_user(tenant, other.id, set={field: value})
        assert taken.value.field == field
    assert store.get_user(tenant, other.id) == other
    # A phone given up is free again, and the empty phone never collides.
    assert store.update_user(tenant, owner.id, set={"phone": ""}) == replace(owner, phone="")
    moved = store.update_user(tenant, other.id, set={"phone": "+14155550123"})
    assert moved == replace(other, phone="+14155550123")


def test_find_user_by_phone_and_the_username_match_wins(store: Store, tenant: str) -> None:
    user = new_user(phone="+14155550123")
    store.create_user(tenant, user)
    assert store.find_user(tenant, "+14155550123") == user
    assert store.find_user(tenant, "") is None
    store.create_user(tenant, new_user(phone=""))
    assert store.find_user(tenant, "") is None  # the empty phone names nobody


def test_challenge_kinds_round_trip_and_are_consumed_apart(store: Store, tenant: str) -> None:
    user_id = new_id()
    login = new_challenge(user_id)
    reset = new_challenge(user_id, kind="reset", payload='{"a": "b"}')
    for challenge in (login, reset):
        store.create_challenge(tenant, challenge)
    assert store.get_challenge(tenant, reset.id) == reset
    now = utcnow()
    assert store.consume_challenges(tenant, user_id, now, kind="reset") == 1
    assert store.get_challenge(tenant, login.id) == login
    assert store.consume_challenges(tenant, user_id, now) == 1
    assert store.get_challenge(tenant, login.id) == replace(login, consumed_at=now)


def test_counter_owner_round_trips_and_guards_a_swap(store: Store, tenant: str) -> None:
    now = utcnow()
    hold = Counter(id="hold:x", version=1, owner="a", expires_at=now + timedelta(minutes=15))
    store.create_counter(tenant, hold)
    assert store.get_counter(tenant, "hold:x") == hold
    assert store.update_counter(tenant, "hold:x", set={"owner": "b"}, inc={"version": 1}, expect={"owner": "z"}) is None
    taken = store.update_counter(tenant, "hold:x", set={"owner": "b"}, inc={"version": 1}, expect={"owner": "a"})
    assert taken == replace(hold, owner="b", version=2)


def test_a_sqlite_file_of_the_previous_version_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    # The three tables whose records grew, as the previous version created them, with one row each.
    old.executescript(
        """
        CREATE TABLE users (tenant TEXT NOT NULL, id TEXT NOT NULL, username TEXT NOT NULL, email TEXT NOT NULL,
          name TEXT NOT NULL, phone TEXT NOT NULL, role TEXT NOT NULL, password_hash BLOB NOT NULL,
          created_at INTEGER NOT NULL, admin_locked INTEGER NOT NULL, locked_until INTEGER,
          failed_logins INTEGER NOT NULL, lockouts INTEGER NOT NULL, last_otp_sent_at INTEGER,
          unlock_token_hash BLOB, unlock_token_expires_at INTEGER, password_changed_at INTEGER,
          PRIMARY KEY (tenant, id));
        INSERT INTO users VALUES ('t', 'u1', 'old', 'old@example.test', 'Old', '', 'user', x'00', 0, 0, NULL,
          0, 0, NULL, NULL, NULL, NULL);
        CREATE TABLE login_challenges (tenant TEXT NOT NULL, id TEXT NOT NULL, user_id TEXT NOT NULL,
          otp_hash BLOB NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
          attempts INTEGER NOT NULL, consumed_at INTEGER, PRIMARY KEY (tenant, id));
        INSERT INTO login_challenges VALUES ('t', 'c1', 'u1', x'00', 0, 0, 0, NULL);
        """
    )
    old.commit()
    old.close()
    migrated = open_store(f"sqlite:///{path}")
    migrated.open()
    try:
        user = migrated.get_user("t", "u1")
        assert user is not None and user.username == "old" and user.email_verified is False
        challenge = migrated.get_challenge("t", "c1")
        assert challenge is not None and challenge.kind == "login" and challenge.payload == ""
        migrated.create_user("t", new_user(phone="+14155550123"))
        with pytest.raises(DuplicateKey):
            migrated.create_user("t", new_user(phone="+14155550123"))
    finally:
        migrated.close()
