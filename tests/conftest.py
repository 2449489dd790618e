"""Fixtures shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ferretdb import mongodb_server


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """A MongoDB-wire server for the whole run (see tests/support/ferretdb.py for where it comes from)."""
    with mongodb_server() as uri:
        yield uri
