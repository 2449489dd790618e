"""The service's notion of "now": timezone-aware UTC, truncated to milliseconds.

Milliseconds are what both stores keep (MongoDB dates have no finer precision), so a time taken from
here compares equal to itself after a round trip through either store.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)
