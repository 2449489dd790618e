"""SQLite picks indexes without statistics (no ANALYZE is ever run): the hot queries must search the
index meant for them, not one the purge added for its own range scans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from auth_server.store import open_store
from auth_server.store.sqlite import _SESSIONS, LIST_ACTIVE_SESSIONS


def test_listing_a_users_sessions_searches_the_users_index(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/auth.db")
    store.open()
    store.close()
    with sqlite3.connect(tmp_path / "auth.db") as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {_SESSIONS.select(LIST_ACTIVE_SESSIONS)}", ("t", "u", 0)).fetchall()
    details = " | ".join(row[3] for row in plan)
    assert "USING INDEX sessions_user" in details, details
