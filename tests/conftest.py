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


def _reason(report: pytest.TestReport) -> str:
    """Why a test did not run: the skip message, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Outcomes per layer and per store, so a run shows at a glance that the MongoDB suites really ran,
    then every test that did not run, with the reason. A skipped test is reported as "not run", apart
    from the passed ones: a suite that could not run must not look like a suite that passed."""
    labels = {"passed": "passed", "failed": "failed", "skipped": "not run", "error": "error"}
    counts: dict[str, dict[str, int]] = {}
    not_run: dict[tuple[str, str], list[str]] = {}
    for outcome, label in labels.items():
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith("tests/"):
                continue
            layer = nodeid.split("/")[1]
            store = "mongodb" if "mongodb" in nodeid else "sqlite" if "sqlite" in nodeid else ""
            key = f"{layer} ({store})" if store else layer
            counts.setdefault(key, {}).setdefault(label, 0)
            counts[key][label] += 1
            if outcome == "skipped":
                not_run.setdefault((key, _reason(report)), []).append(nodeid)
    terminalreporter.section("tests per layer")
    for key in sorted(counts):
        terminalreporter.write_line(f"{key:28} " + ", ".join(f"{n} {o}" for o, n in sorted(counts[key].items())))
    for (key, reason), nodeids in sorted(not_run.items()):
        which = nodeids[0] + (f" and {len(nodeids) - 1} more" if len(nodeids) > 1 else "")
        terminalreporter.write_line(f"NOT RUN  {key}: {which}: {reason}", yellow=True, bold=True)
