"""scripts/bench is a measurement tool, not a test: the suite only checks that it starts and explains itself.

The benchmark itself (real servers under ghz load for minutes) is run by hand: docs/performance.md.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.process import REPO

pytestmark = pytest.mark.e2e


def test_bench_help_lists_its_options() -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "bench"), "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--store", "--only", "--bcrypt-rounds", "--ferret-id-index"):
        assert option in result.stdout
    assert "results.json" in result.stdout
