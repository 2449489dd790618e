"""What a device is called in the device list: from `x-device-name`, else derived from the user agent."""

from __future__ import annotations

MAX_DEVICE_NAME = 100
MAX_USER_AGENT = 512

# Order matters: Edge and Opera user agents also say "Chrome", Chrome's also says "Safari".
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("grpcurl/", "grpcurl"),
    ("curl/", "curl"),
    ("grpc-python", "gRPC Python"),
    ("grpc-go", "gRPC Go"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Android", "Android"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def _clean(value: str, limit: int) -> str:
    return "".join(ch for ch in value if ch.isprintable())[:limit].strip()


def describe(user_agent: str) -> str:
    """'Chrome on Windows', 'Safari on iOS', 'grpcurl', or 'Unknown device'."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


def device_name(explicit: str | None, user_agent: str) -> str:
    name = _clean(explicit or "", MAX_DEVICE_NAME)
    return name or describe(user_agent)


def clean_user_agent(user_agent: str) -> str:
    return _clean(user_agent, MAX_USER_AGENT)
