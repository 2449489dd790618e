"""Issue 11 row 13: `ls -l var/` after `scripts/serve` showed the database (password hashes, e-mails,
phones) world-readable. The SQLite file, its -wal and -shm, and the generated dev JWT secret are created
0600 and a directory we create 0700, whatever the umask; files an older version left readable are
tightened when the server opens them. (MongoDB keeps its own files: nothing of ours to set there.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth_server.api.server import create_server
from auth_server.infra.config import load_dev_secret, load_settings
from auth_server.store.sqlite import SqliteStore


@pytest.fixture(params=[0o022, 0o002, 0o000])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test (022 is the usual default; 000 makes every file world-writable)."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_and_their_directory_are_private(tmp_path: Path, umask: int) -> None:
    var = tmp_path / "var"
    store = SqliteStore(var / "auth.db")
    store.open()
    try:
        store.ping()  # a write: WAL mode keeps -wal and -shm beside the file while connections are open
        files = {p.name: mode(p) for p in var.iterdir()}
    finally:
        store.close()
    assert files == {"auth.db": 0o600, "auth.db-wal": 0o600, "auth.db-shm": 0o600}
    assert mode(var) == 0o700


def test_dev_secret_file_is_private(tmp_path: Path, umask: int) -> None:
    secret = load_dev_secret(str(tmp_path / "var" / "auth.db.jwt-secret"))
    assert len(secret) >= 32
    assert mode(tmp_path / "var" / "auth.db.jwt-secret") == 0o600 and mode(tmp_path / "var") == 0o700


def test_what_serve_leaves_in_var_is_private(tmp_path: Path, umask: int) -> None:
    """The row as reported: the server on its SQLite dev default (generated secret), then `ls -l var/`."""
    settings = load_settings({"AUTH_STORE": f"sqlite:///{tmp_path}/var/auth.db", "AUTH_GRPC_ADDR": "127.0.0.1:0"})
    app = create_server(settings, health_interval=0.2)
    try:
        listing = {p.name: mode(p) for p in (tmp_path / "var").iterdir()}
    finally:
        app.stop(0)
    assert listing.pop("auth.db.jwt-secret") == 0o600
    assert set(listing.values()) == {0o600} and "auth.db" in listing, listing
    assert mode(tmp_path / "var") == 0o700


def test_files_left_readable_by_an_older_version_are_tightened(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        old = SqliteStore(tmp_path / "auth.db")
        for name in ("auth.db", "auth.db-wal", "auth.db-shm", "auth.db.jwt-secret"):
            (tmp_path / name).touch()
            os.chmod(tmp_path / name, 0o644)
        (tmp_path / "auth.db.jwt-secret").write_text("s" * 64)
        load_dev_secret(str(tmp_path / "auth.db.jwt-secret"))
        old.open()
        try:
            listing = {p.name: mode(p) for p in tmp_path.iterdir()}
        finally:
            old.close()
    finally:
        os.umask(previous)
    assert listing == {
        "auth.db": 0o600,
        "auth.db-wal": 0o600,
        "auth.db-shm": 0o600,
        "auth.db.jwt-secret": 0o600,
    }


def test_an_existing_directory_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    """Only a directory we create is made 0700: the operator's own directory (the working directory
    for `sqlite:///auth.db`, say) is not ours to change."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)  # noqa: S103 (the operator's usual directory mode, which must stay)
    store = SqliteStore(shared / "auth.db")
    store.open()
    store.close()
    assert mode(shared) == 0o755 and mode(shared / "auth.db") == 0o600
