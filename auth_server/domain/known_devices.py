"""Known-device tokens: proof that this browser or client completed a login of this user before.

OWASP's "device cookie" idea: a login that presents one skips the account's failure budget (so an
attacker spending that budget from elsewhere cannot lock the owner out), never the e-mailed code.

The token is `dv1.<user id>.<issued ms>.<mac>`, a MAC with a key derived from the server secret.
Nothing is stored: it is checked by recomputing the MAC, it lives AUTH_DEVICE_TOKEN_TTL, and a
password change (or reset) forgets every device, because tokens issued before `password_changed_at`
are refused. It is valid from any address: a laptop that travels stays known.
"""

from __future__ import annotations

import base64
import hmac
from datetime import datetime, timedelta

from auth_server.infra.keys import KeyRing
from auth_server.store.base import User

PREFIX = "dv1"
MAX_TOKEN_CHARS = 160


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _mac(keys: KeyRing, user_id: str, issued_ms: int) -> str:
    digest = keys.hash("device", user_id, str(issued_ms))[:24]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(keys: KeyRing, user: User, now: datetime) -> str:
    issued = _ms(now)
    return f"{PREFIX}.{user.id}.{issued}.{_mac(keys, user.id, issued)}"


def is_known(keys: KeyRing, token: str, user: User, now: datetime, ttl: int) -> bool:
    """Whether `token` is a live device token of this user. Any malformed input is simply not known."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return False
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or parts[1] != user.id or not parts[2].isdigit():
        return False
    issued = int(parts[2])
    if not hmac.compare_digest(parts[3], _mac(keys, user.id, issued)):
        return False
    if issued + ttl * 1000 <= _ms(now) or issued > _ms(now + timedelta(minutes=5)):
        return False
    changed = user.password_changed_at
    return changed is None or issued >= _ms(changed)
