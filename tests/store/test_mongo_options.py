"""The MongoDB adapter states its read and write concerns instead of inheriting the deployment's.

With replicas behind a load balancer on a replica set (README, "Running more than one replica"): a
revocation must survive a failover (w="majority"), a write that meets one is retried on the new primary
(retryWrites), and a session check must never read a secondary that has not seen a revocation yet
(readPreference primary). Options written in the URI still win. The client here is the one the store
built, connected to the test server (FerretDB 1.24 accepts a majority write concern).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.write_concern import WriteConcern

from auth_server.store.mongo import MongoStore
from tests.support.records import new_session, new_user


def _with_options(uri: str, options: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{options}"


@pytest.fixture
def opened(request: pytest.FixtureRequest, mongodb_uri: str) -> Iterator[tuple[MongoStore, MongoClient]]:
    store = MongoStore(_with_options(mongodb_uri, request.param) if request.param else mongodb_uri)
    store.open()
    client = store._client  # what the store built, not a client of our own with the same URI
    assert client is not None
    yield store, client
    store.close()


@pytest.mark.parametrize("opened", [""], indirect=True)
def test_majority_writes_retryable_writes_and_primary_reads_by_default(
    opened: tuple[MongoStore, MongoClient], mongodb_uri: str
) -> None:
    store, client = opened
    assert client.write_concern == WriteConcern(w="majority")
    assert client.options.retry_writes is True
    assert client.read_preference == ReadPreference.PRIMARY

    # The server accepts every write this way: a user, a session, a conditional update, a revocation.
    tenant = f"t{secrets.token_hex(6)}"
    try:
        user = new_user()
        store.create_user(tenant, user)
        session = new_session(user.id)
        store.create_session(tenant, session)
        store.revoke_sessions(tenant, user.id, session.created_at, "logout")
        revoked = store.get_session(tenant, session.id)
        assert revoked is not None and revoked.revoked_at is not None
    finally:
        with MongoClient(mongodb_uri) as admin:
            admin.drop_database(store.database_for(tenant))


@pytest.mark.parametrize("opened", ["w=1&retryWrites=false&readPreference=primaryPreferred"], indirect=True)
def test_options_in_the_uri_override_the_defaults(opened: tuple[MongoStore, MongoClient]) -> None:
    _, client = opened
    assert client.write_concern == WriteConcern(w=1)
    assert client.options.retry_writes is False
    assert client.read_preference == ReadPreference.PRIMARY_PREFERRED
