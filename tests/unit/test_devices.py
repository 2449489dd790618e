"""Device names in the device list: what a user sees for the agents of real browsers, phones and tools, and
that any agent at all gives a short, printable name without an error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth_server.domain import devices

AGENTS = [
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        "Chrome on Android (Pixel 7)",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        "Samsung Internet on Android (Samsung SM-S918B)",
    ),
    # Android 10+ reduces the model to "K": no model is better than a made-up one.
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        "Chrome on Android",
    ),
    ("Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0", "Firefox on Android"),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1",
        "Safari on iOS (iPhone)",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
        "Chrome on iOS (iPad)",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
        "Edge on Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0",
        "Opera on Windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        "Safari on macOS",
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "Firefox on Linux"),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "Chrome on Chrome OS",
    ),
    ("curl/8.5.0", "curl"),
    # Tools the rules do not know are named by their product token.
    ("grpcurl/v1.9.3 grpc-go/1.72.0", "grpcurl"),
    ("grpc-python/1.85.1 grpc-c/51.0.0 (linux; chttp2)", "grpc-python on Linux"),
    ("Mozilla/5.0", "Unknown device"),
    ("", "Unknown device"),
    ("\x00\x01\x7f", "Unknown device"),
]


@pytest.mark.parametrize(("agent", "name"), AGENTS, ids=[name for _, name in AGENTS])
def test_agent_names_browser_system_and_model(agent: str, name: str) -> None:
    assert devices.describe(agent) == name


def test_an_explicit_device_name_wins_and_is_cleaned() -> None:
    chrome = AGENTS[0][0]
    assert devices.device_name("  Work phone\x00\n ", chrome) == "Work phone"
    assert devices.device_name("", chrome) == "Chrome on Android (Pixel 7)"
    assert devices.device_name(None, "curl/8.5.0") == "curl"
    assert devices.device_name("x" * 500, chrome) == "x" * devices.MAX_DEVICE_NAME


def test_the_same_agent_is_parsed_once() -> None:
    agent = AGENTS[1][0]
    devices.describe(agent)
    before = devices._describe.cache_info()
    devices.describe(agent)
    after = devices._describe.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_stored_user_agent_is_printable_and_bounded() -> None:
    assert devices.clean_user_agent("a\x00b\nc" + "d" * 1000) == "abc" + "d" * (devices.MAX_USER_AGENT - 3)


# Agents shaped like real ones (product tokens, comments) as well as arbitrary text.
_token = st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,12}/[0-9.]{1,8}", fullmatch=True)
_comment = st.lists(st.text(min_size=0, max_size=20), max_size=4).map(lambda parts: "(" + "; ".join(parts) + ")")
_agents = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(_token, _comment), max_size=8).map(" ".join),
)


@settings(deadline=None, max_examples=300)  # no time limit: the first example builds the parser
@given(_agents)
def test_any_agent_gives_a_short_printable_name(agent: str) -> None:
    name = devices.describe(agent)
    assert 0 < len(name) <= devices.MAX_DEVICE_NAME
    assert name.isprintable() and name == name.strip()


@settings(deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300)), _agents)
def test_any_device_name_is_non_empty_and_bounded(explicit: str | None, agent: str) -> None:
    name = devices.device_name(explicit, agent)
    assert 0 < len(name) <= devices.MAX_DEVICE_NAME and name.isprintable()
