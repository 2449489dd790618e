"""Storage: the `Store` protocol (base.py), its adapters, and `open_store` to pick one from a URI."""

from __future__ import annotations

from auth_server.store.base import (
    DuplicateKey,
    LoginChallenge,
    Session,
    Store,
    StoreError,
    StoreUnavailable,
    User,
)

__all__ = [
    "DuplicateKey",
    "LoginChallenge",
    "Session",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "User",
    "open_store",
]


def open_store(uri: str) -> Store:
    """The adapter the URI names, not yet connected (call `open()`); ValueError if the URI is unusable.

    `sqlite:///relative/path.db` and `sqlite:////absolute/path.db` name a SQLite file;
    `mongodb://...` and `mongodb+srv://...` a MongoDB deployment.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError("store URI must look like sqlite:///path/to/file.db or mongodb://host/")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _sqlite(rest)
    if scheme in ("mongodb", "mongodb+srv"):
        from auth_server.store.mongo import MongoStore  # pymongo is only imported when it is used

        return MongoStore(uri)
    # Only the scheme is echoed: the rest of a URI may hold a password.
    raise ValueError(f"unsupported store URI scheme {scheme!r}: use sqlite:///path or mongodb://host/")


def _sqlite(rest: str) -> Store:
    from auth_server.store.sqlite import SqliteStore

    host, slash, path = rest.partition("/")
    if host or not slash:
        raise ValueError("SQLite store URI takes no host: sqlite:///relative.db or sqlite:////absolute.db")
    if not path or path.endswith("/"):
        raise ValueError("SQLite store URI must end in a file name, as in sqlite:///var/auth.db")
    if path == ":memory:" or any(c in path for c in "?#\x00"):
        # Every thread opens its own connection, so an in-memory database would be one per thread.
        raise ValueError("SQLite store URI must be a plain file path (no :memory:, query or fragment)")
    return SqliteStore(path)
