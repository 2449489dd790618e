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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Outcomes per layer and per store, so a run shows at a glance that the MongoDB suites really ran."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith("tests/"):
                continue
            layer = nodeid.split("/")[1]
            store = "mongodb" if "mongodb" in nodeid else "sqlite" if "sqlite" in nodeid else ""
            key = f"{layer} ({store})" if store else layer
            counts.setdefault(key, {}).setdefault(outcome, 0)
            counts[key][outcome] += 1
    terminalreporter.section("tests per layer")
    for key in sorted(counts):
        terminalreporter.write_line(f"{key:28} " + ", ".join(f"{n} {o}" for o, n in sorted(counts[key].items())))
