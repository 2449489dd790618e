"""The bounded soak (scripts/soak.py) in its short mode: 60 s of mixed load, flat memory, the store's rows
of ended records flat under the purge, no surprises. AUTH_SOAK_SECONDS shortens or lengthens it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.process import REPO

pytestmark = pytest.mark.e2e


def test_soak_short_mode() -> None:
    seconds = os.environ.get("AUTH_SOAK_SECONDS", "60")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "soak.py"), "--seconds", seconds],
        capture_output=True,
        text=True,
        timeout=float(seconds) + 120,
        check=False,
        cwd=REPO,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "soak: OK" in result.stdout
    assert "soak: store rows at" in result.stdout  # the row-count figure (the purge's proof)
