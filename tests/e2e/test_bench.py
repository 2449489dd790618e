"""scripts/bench is a measurement tool, not a test: the suite only checks that it starts and explains itself,
and that a recorded `--peer keycloak` result (tests/e2e/data/peer-keycloak.json) reads back into its ratios and table.

The benchmark itself (real servers under ghz load for minutes) is run by hand: docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

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


# ---- scripts/bench --peer keycloak: its result file, read back (no Keycloak is started here) ----------

PEER_RESULT = REPO / "tests" / "e2e" / "data" / "peer-keycloak.json"  # a real run, recorded


def _peer_keycloak() -> Any:
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import peer_keycloak

    return peer_keycloak


def test_peer_keycloak_ratios_of_a_recorded_run() -> None:
    peer = _peer_keycloak()
    recorded = json.loads(PEER_RESULT.read_text())
    scenarios, hashes = recorded["scenarios"], recorded["hash"]
    by_hand = {
        "read_grpc_ratio": scenarios["ours_getme"]["rps"] / scenarios["kc_userinfo"]["rps"],
        "read_http_ratio": scenarios["ours_bridge_me"]["rps"] / scenarios["kc_userinfo"]["rps"],
        "refresh_grpc_ratio": scenarios["ours_refresh_grpc"]["rps"] / scenarios["kc_refresh"]["rps"],
        "refresh_http_ratio": scenarios["ours_refresh_http"]["rps"] / scenarios["kc_refresh"]["rps"],
        "login_hash_normalised_ratio": (scenarios["ours_login"]["rps"] / hashes["ours"]["rps"])
        / (scenarios["kc_login"]["rps"] / hashes["keycloak"]["rps"]),
    }
    ratios = peer.ratios(recorded)
    for key, value in by_hand.items():
        assert ratios[key] == pytest.approx(value, abs=1e-3), key
        assert recorded[key] == pytest.approx(ratios[key], abs=1e-3), key  # the names the checks read, as written
    assert ratios["memory_ratio"] == pytest.approx(
        recorded["memory_mib"]["ours"] / recorded["memory_mib"]["keycloak"], abs=1e-3
    )
    assert ratios["restart_ratio"] == pytest.approx(
        recorded["restart_s"]["ours"] / recorded["restart_s"]["keycloak"], abs=1e-3
    )


def test_peer_keycloak_table_of_a_recorded_run() -> None:
    peer = _peer_keycloak()
    recorded = json.loads(PEER_RESULT.read_text())
    table = peer.render(recorded)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    read = rows["authenticated read over gRPC (`GetMe`) vs `userinfo`"]
    assert f"{recorded['scenarios']['ours_getme']['rps']:.0f} rps" in read
    assert f"{recorded['scenarios']['kc_userinfo']['rps']:.0f} rps" in read
    assert f"**{recorded['read_grpc_ratio']:.2f}**" in read
    ceiling = rows["gRPC no-op ceiling (`Health/Check`, stock servicer, no guard) vs `userinfo`"]
    assert f"{recorded['scenarios']['ours_health']['rps']:.0f} rps" in ceiling
    assert recorded["grpc_ceiling_ratio"] == pytest.approx(
        recorded["scenarios"]["ours_health"]["rps"] / recorded["scenarios"]["kc_userinfo"]["rps"], abs=1e-3
    )
    assert f"{recorded['grpc_ceiling_ratio']:.2f}" in ceiling
    assert (
        f"**{recorded['read_http_ratio']:.2f}**"
        in rows["authenticated read over the HTTP bridge (`GET /api/v1/auth/me`) vs `userinfo`"]
    )
    refresh = rows["refresh with rotation, 50 chains, gRPC / HTTP"]
    assert f"{recorded['refresh_grpc_ratio']:.2f} / {recorded['refresh_http_ratio']:.2f}" in refresh
    assert (
        f"{recorded['login_hash_normalised_ratio']:.2f}" in rows["login relative to its own hash's single-thread rate"]
    )
    assert f"{recorded['memory_mib']['keycloak']:.0f} MiB" in rows["resident memory after the runs"]
    assert f"{recorded['restart_s']['keycloak']:.1f} s" in rows["restart → first authenticated read"]
    assert recorded["meta"]["keycloak"] in table


def test_peer_keycloak_missing_figures_show_as_dashes() -> None:
    peer = _peer_keycloak()
    recorded = json.loads(PEER_RESULT.read_text())
    del recorded["scenarios"]["kc_userinfo"]
    ratios = peer.ratios(recorded)
    assert ratios["read_grpc_ratio"] is None and ratios["read_http_ratio"] is None
    table = peer.render(recorded)
    assert "| authenticated read over gRPC (`GetMe`) vs `userinfo` |" in table
    assert "| - | **-** |" in table
