"""Factories for store records with sensible defaults; keyword arguments override any field."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.store.base import LoginChallenge, Session, User

__all__ = ["new_challenge", "new_id", "new_session", "new_user", "utcnow"]


def new_user(**fields: Any) -> User:
    user_id = fields.pop("id", None) or new_id()
    handle = f"user{user_id[12:]}"  # the random part: unique without coordination
    values: dict[str, Any] = {
        "username": handle,
        "email": f"{handle}@example.test",
        "name": "Test User",
        "phone": f"+1555{secrets.randbelow(10**7):07d}",  # unique per tenant when set
        "role": "user",
        "password_hash": b"$2b$04$" + secrets.token_hex(26).encode(),
        "created_at": utcnow(),
    }
    values.update(fields)
    return User(id=user_id, **values)


def new_session(user_id: str, **fields: Any) -> Session:
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "device_name": "Firefox on Linux",
        "ip_address": "192.0.2.10",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "created_at": now,
        "last_activity": now,
        "expires_at": now + timedelta(days=7),
        "refresh_nonce": secrets.token_bytes(16),
        "refresh_hash": secrets.token_bytes(32),
    }
    values.update(fields)
    return Session(user_id=user_id, **values)


def new_challenge(user_id: str, **fields: Any) -> LoginChallenge:
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "otp_hash": secrets.token_bytes(32),
        "created_at": now,
        "expires_at": now + timedelta(minutes=5),
    }
    values.update(fields)
    return LoginChallenge(user_id=user_id, **values)
