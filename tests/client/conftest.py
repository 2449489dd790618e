"""The real auth server for the client package's tests: the integration fixtures, over SQLite only.

The client package talks to the server through gRPC alone, so the store behind it does not change what
these tests prove; SQLite keeps them fast and free of a MongoDB-wire server.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import client, make_client, server_mode, smtp  # noqa: F401


@pytest.fixture
def store_uri(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/auth.db"


@pytest.fixture
def client(make_client: Any) -> Any:  # noqa: F811 (the integration fixture, with one setting)
    """The guard tests introspect as anonymous callers did before service accounts: AUTH_INTROSPECT_ACCESS=public.
    tests/client/test_service_credentials.py runs the default (service callers only)."""
    return make_client(AUTH_INTROSPECT_ACCESS="public")
