"""What the MongoDB adapter sends over the wire, seen through pymongo's command monitoring.

FerretDB (the test server here) does not apply findAndModify or update atomically, so the race tests
of the contract cannot prove the adapter right on it. These tests check the property that makes it
right on MongoDB: every conditional change is ONE command carrying its expectations in its filter.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.errors import DuplicateKeyError

from auth_server.store import DuplicateKey
from auth_server.store.mongo import MongoStore, _duplicate_field
from tests.support.records import new_session, new_user, utcnow


class _Commands(monitoring.CommandListener):
    """Records the commands a client sends (the real ones, to the real server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self._seen.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        """The commands sent since the last take(), as (name, command document)."""
        with self._lock:
            seen, self._seen = self._seen, []
        return [(event.command_name, dict(event.command)) for event in seen]


@pytest.fixture
def watched(mongodb_uri: str) -> Iterator[tuple[MongoStore, _Commands, str]]:
    commands = _Commands()
    store = MongoStore(mongodb_uri, event_listeners=[commands])
    tenant = f"t{secrets.token_hex(6)}"
    store.open()
    store.prepare_tenant(tenant)
    commands.take()
    yield store, commands, tenant
    store.close()
    with MongoClient(mongodb_uri) as client:
        client.drop_database(store.database_for(tenant))


def test_conditional_update_is_one_find_and_modify_with_the_expectations(
    watched: tuple[MongoStore, _Commands, str],
) -> None:
    store, commands, tenant = watched
    session = new_session("u1")
    store.create_session(tenant, session)
    commands.take()
    store.update_session(
        tenant,
        session.id,
        set={"refresh_hash": b"next"},
        inc={"refresh_generation": 1},
        expect={"refresh_generation": 0, "revoked_at": None},
    )
    [(name, command)] = commands.take()
    assert name == "findAndModify"
    assert command["query"] == {"_id": session.id, "refresh_generation": 0, "revoked_at": None}
    assert command["update"] == {"$set": {"refresh_hash": b"next"}, "$inc": {"refresh_generation": 1}}
    assert command["new"] is True


def test_revoke_and_consume_are_one_multi_update_each(watched: tuple[MongoStore, _Commands, str]) -> None:
    store, commands, tenant = watched
    now = utcnow()
    store.revoke_sessions(tenant, "u1", now, "logout_all", except_id="keep")
    store.consume_challenges(tenant, "u1", now)
    sent = commands.take()
    assert [name for name, _ in sent] == ["update", "update"]
    revoke, consume = (command["updates"] for _, command in sent)
    assert revoke[0]["q"] == {"user_id": "u1", "revoked_at": None, "_id": {"$ne": "keep"}}
    assert revoke[0]["multi"] is True
    assert consume[0]["q"] == {"user_id": "u1", "kind": {"$in": ["login", None]}, "consumed_at": None}
    assert consume[0]["multi"] is True


def test_get_session_and_user_costs_two_finds(watched: tuple[MongoStore, _Commands, str]) -> None:
    store, commands, tenant = watched
    user = new_user()
    session = new_session(user.id)
    store.create_user(tenant, user)
    store.create_session(tenant, session)
    commands.take()
    assert store.get_session_and_user(tenant, session.id) == (session, user)
    assert [name for name, _ in commands.take()] == ["find", "find"]


def test_a_new_tenant_is_prepared_once_on_first_use(
    watched: tuple[MongoStore, _Commands, str], mongodb_uri: str
) -> None:
    store, commands, _ = watched
    fresh = f"t{secrets.token_hex(6)}"
    try:
        store.get_user(fresh, "nobody")
        first = [name for name, _ in commands.take()]
        store.get_user(fresh, "nobody")
        second = [name for name, _ in commands.take()]
    finally:
        with MongoClient(mongodb_uri) as client:
            client.drop_database(store.database_for(fresh))
    assert first.count("createIndexes") >= 4 and first[-1] == "find"
    assert second == ["find"]


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"keyPattern": {"email": 1}, "keyValue": {"email": "a@b"}}, "email"),
        ({"keyValue": {"username": "a"}}, "username"),
        ({"keyPattern": {"_id": 1}}, "id"),
        (
            {"errmsg": "E11000 duplicate key error collection: x.users index: email_unique dup key: { }"},
            "email",
        ),
    ],
)
def test_duplicate_key_field_comes_from_what_mongodb_reports(details: dict[str, Any], field: str) -> None:
    # Errors as MongoDB words them (FerretDB names no key: the contract test covers that path).
    error = DuplicateKeyError("E11000 duplicate key error", 11000, details)
    user = new_user()
    values = {"username": user.username, "email": user.email, "phone": user.phone}
    assert _duplicate_field(error, None, values, user.id) == field  # type: ignore[arg-type]
    assert DuplicateKey(field).field == field
