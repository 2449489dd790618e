"""What a device is called in the device list: from `x-device-name`, else derived from the user agent.

The user agent is read by `ua-parser` (the uap-core rules, kept up to date upstream), so a new browser or
phone needs a package update, not a code change here. The name says the browser, the system and, where
the agent names one, the device model: "Chrome on Android (Pixel 7)", "Safari on iOS (iPhone)",
"Firefox on Windows". Agents the rules do not know (gRPC tools, scripts) are named by their first
product token ("grpcurl", "grpc-python on Linux"), else "Unknown device".

Cost: ua-parser's pure-Python resolver tries its regexes in turn, about 1-3 ms per agent (up to ~9 ms
for a 512-character agent that matches nothing), and building it compiles them all (~0.3 s). Names are
cached per agent string (LRU), since a service sees few distinct agents, and `warm_up()` lets the
process pay the build at start rather than on the first VerifyOtp.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from ua_parser import OS, BasicResolver, Device, Parser, UserAgent, load_builtins

MAX_DEVICE_NAME = 100
MAX_USER_AGENT = 512
UNKNOWN = "Unknown device"
_CACHED_AGENTS = 1024  # distinct agent strings kept; at most 512 characters each, so well under 1 MB

# "Chrome Mobile", "Mobile Safari", "Firefox Mobile": the form factor is the device's business, not the
# browser's name, so "Chrome Mobile" on Android reads "Chrome on Android".
_MOBILE_WORD = re.compile(r"\s*\bMobile\b\s*")
# The first product token of an agent the rules do not know: "grpcurl/v1.9.3 grpc-go/1.72" -> "grpcurl".
_PRODUCT = re.compile(r"^\s*([A-Za-z][A-Za-z0-9._+-]{0,39})/")
# "Mozilla/5.0" says nothing about what the agent is: every browser sends it.
_MEANINGLESS_PRODUCTS = frozenset({"mozilla"})
# uap-core keeps the system names it started with; the one a user would find dated is Apple's old name.
_SYSTEM_NAMES = {"Mac OS X": "macOS"}

_parser_lock = threading.Lock()
_parser: Parser | None = None


def _get_parser() -> Parser:
    """The parser, built once (its regexes compile on first use; two threads must not both pay that)."""
    global _parser
    with _parser_lock:
        if _parser is None:
            # No caching resolver: the LRU below caches the finished name, which is all we need.
            _parser = Parser(BasicResolver(load_builtins()))
        return _parser


def warm_up() -> None:
    """Build the parser now (about 0.3 s of CPU), so the first sign-in does not wait for it."""
    _get_parser().parse("")


def _clean(value: str, limit: int) -> str:
    return "".join(ch for ch in value if ch.isprintable())[:limit].strip()


def _browser(agent: UserAgent | None, system: str | None) -> str | None:
    if agent is None or agent.family == "Other":
        return None
    name = _MOBILE_WORD.sub(" ", agent.family).strip()
    if system and name.endswith(" " + system):  # "Chrome Mobile iOS" on iOS -> "Chrome"
        name = name[: -len(system) - 1]
    if not name or name == system:  # Dalvik's agent parses as the browser "Android" on Android
        return None
    return name


def _system(os: OS | None) -> str | None:
    if os is None or os.family == "Other":
        return None
    return _SYSTEM_NAMES.get(os.family, os.family)


def _model(device: Device | None, system: str | None) -> str | None:
    """The device model when the agent names a real one: not "Generic Smartphone", not a bot, not a
    model that only repeats the system ("Mac" on macOS)."""
    if device is None or device.family == "Other" or not device.brand:
        return None
    if device.brand.startswith("Generic") or device.brand == "Spider":
        return None
    if system and device.family.lower() in system.lower():
        return None
    return device.family


def _product(agent: str) -> str | None:
    match = _PRODUCT.match(agent)
    if match is None or match.group(1).lower() in _MEANINGLESS_PRODUCTS:
        return None
    return match.group(1)


@lru_cache(maxsize=_CACHED_AGENTS)
def _describe(agent: str) -> str:
    result = _get_parser().parse(agent)
    system = _system(result.os)
    # An agent the rules do not know as a browser is still named by its product ("grpc-python on Linux").
    browser = _browser(result.user_agent, system) or _product(agent)
    name = f"{browser} on {system}" if browser and system else browser or system or ""
    model = _model(result.device, system)
    if model:
        name = f"{name} ({model})" if name else model
    return _clean(name, MAX_DEVICE_NAME) or UNKNOWN


@lru_cache(maxsize=_CACHED_AGENTS)
def _family(agent: str) -> str:
    browser = _get_parser().parse(agent).user_agent
    if browser is not None and browser.family != "Other":
        return browser.family
    return _product(agent) or ""


def browser_family(user_agent: str) -> str:
    """'Chrome', 'Firefox', 'Mobile Safari', or for an agent the rules do not know its product token
    ('grpc-python'); "" when nothing names it (such an agent never matches another)."""
    agent = clean_user_agent(user_agent)
    return _family(agent) if agent else ""


def describe(user_agent: str) -> str:
    """'Chrome on Android (Pixel 7)', 'Firefox on Windows', 'grpcurl', or 'Unknown device'."""
    return _describe(clean_user_agent(user_agent))


def device_name(explicit: str | None, user_agent: str) -> str:
    name = _clean(explicit or "", MAX_DEVICE_NAME)
    return name or describe(user_agent)


def clean_user_agent(user_agent: str) -> str:
    return _clean(user_agent, MAX_USER_AGENT)
