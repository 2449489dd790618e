"""Which peers may tell us the client's address: the networks of AUTH_TRUSTED_PROXIES, parsed once.

Shared by the guard (which believes `x-forwarded-for` only from these peers) and the HTTP bridge
(which passes an incoming `X-Forwarded-For` on only from them). `auth-server serve`'s own bridge is
not trusted by its address (any process on the host shares loopback) but by a secret made at start-up
and sent in BRIDGE_HEADER, which only that bridge knows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

BRIDGE_HEADER = "x-auth-bridge"  # call metadata carrying the in-process bridge's secret


class TrustedProxies:
    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __contains__(self, ip: str) -> bool:
        if not self._networks:  # the usual case: nothing to parse
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._networks)
