"""Choosing and configuring an adapter from a store URI, without connecting to anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auth_server.store import open_store
from auth_server.store.mongo import MongoStore, database_name
from auth_server.store.sqlite import SqliteStore


def test_sqlite_uris_name_relative_and_absolute_files(tmp_path: Path) -> None:
    relative = open_store("sqlite:///var/auth.db")
    absolute = open_store(f"sqlite:///{tmp_path}/auth.db")
    assert isinstance(relative, SqliteStore) and isinstance(absolute, SqliteStore)
    assert not (tmp_path / "auth.db").exists()  # nothing is touched before open()
    assert not os.path.exists("var/auth.db") or os.path.isfile("var/auth.db")


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://127.0.0.1:1/",
        "mongodb://u:p@h1:27017,h2/authsvc?replicaSet=rs0",
        "mongodb+srv://db.example.test/",
    ],
)
def test_mongodb_uris_make_a_mongo_store_without_connecting(uri: str) -> None:
    assert isinstance(open_store(uri), MongoStore)  # a closed port or unresolvable name: fine until open()


@pytest.mark.parametrize(
    "uri",
    [
        "postgres://localhost/auth",
        "auth.db",
        "sqlite://host/auth.db",
        "sqlite:///",
        "sqlite:///var/",
        "sqlite:///:memory:",
        "sqlite:///auth.db?mode=ro",
        "mongodb://",
        "mongodb://host:notaport/",
        "mongodb://host/?noSuchOption=1",
        "mongodb://host/bad$name",
        "mongodb+srv://",
    ],
)
def test_unusable_uris_are_refused_with_value_error(uri: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_store(uri)
    assert "\n" not in str(caught.value)


def test_error_messages_never_show_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        open_store("mongodb://admin:s3cr3t-pw@host:notaport/")
    assert "s3cr3t-pw" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        open_store("redis://admin:s3cr3t-pw@host/")
    assert "s3cr3t-pw" not in str(caught.value)


def test_tenant_databases_take_the_uri_database_as_prefix() -> None:
    assert MongoStore("mongodb://h/").database_for("acme") == "auth_acme"
    assert MongoStore("mongodb://h/authsvc?replicaSet=rs0").database_for("acme") == "authsvc_acme"
    assert MongoStore("mongodb+srv://h.example.test/authsvc").database_for("acme") == "authsvc_acme"


@pytest.mark.parametrize("prefix", ["auth_", "authsvc_", "p" * 29 + "_"])
def test_long_tenant_ids_get_a_short_unique_database_name(prefix: str) -> None:
    long_a, long_b = "a" * 60 + "xyz", "a" * 60 + "xyw"
    name_a, name_b = database_name(prefix, long_a), database_name(prefix, long_b)
    assert name_a != name_b
    assert len(name_a.encode()) <= 63 and len(name_b.encode()) <= 63
    assert name_a.startswith(prefix + "a" * 16)
    assert database_name(prefix, long_a) == name_a  # stable


def test_default_prefix_keeps_forty_characters_of_a_long_tenant() -> None:
    tenant = "t" * 63
    assert (
        database_name("auth_", tenant)
        == "auth_" + "t" * 40 + "_" + __import__("hashlib").sha256(tenant.encode()).hexdigest()[:16]
    )


@pytest.mark.parametrize("tenant", ["", "Acme", "a/b", "a.b", "-acme", "a" * 64, "acme\n"])
def test_invalid_tenant_ids_never_name_a_database(tenant: str) -> None:
    with pytest.raises(ValueError):
        database_name("auth_", tenant)
