"""Fixtures of the store tests: a fresh store on every adapter, and fresh tenant ids."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from auth_server.store import Store, open_store
from auth_server.store.mongo import MongoStore


def _new_tenant() -> str:
    return f"t{secrets.token_hex(6)}"


@pytest.fixture
def tenant() -> str:
    return _new_tenant()


@pytest.fixture
def other_tenant() -> str:
    return _new_tenant()


@pytest.fixture(params=["sqlite", "mongodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path, tenant: str, other_tenant: str) -> Iterator[Store]:
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/auth.db"  # tmp_path is absolute: four slashes in all
    else:
        uri = request.getfixturevalue("mongodb_uri")
    opened = open_store(uri)
    opened.open()
    for name in (tenant, other_tenant):
        opened.prepare_tenant(name)
    yield opened
    opened.close()
    if isinstance(opened, MongoStore):
        with MongoClient(uri) as client:  # leave nothing behind on a shared server
            for name in (tenant, other_tenant):
                client.drop_database(opened.database_for(name))
