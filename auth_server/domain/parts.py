"""What every account flow (Accounts, Signups, Recovery, Profiles) is built from, named once."""

from __future__ import annotations

from dataclasses import dataclass

from auth_server.domain.audit import Audit
from auth_server.domain.codes import MailedCodes
from auth_server.domain.passwords import PasswordHasher
from auth_server.domain.sessions import Sessions
from auth_server.domain.throttle import Throttle
from auth_server.infra.config import Settings
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import Mailer
from auth_server.store.base import Store


@dataclass(frozen=True)
class Parts:
    store: Store
    settings: Settings
    keys: KeyRing
    hasher: PasswordHasher
    mailer: Mailer
    sessions: Sessions
    audit: Audit
    throttle: Throttle


class AccountFlow:
    """Base of the account flows: the parts as attributes, and the mailed-code rules (codes.py)."""

    def __init__(self, parts: Parts) -> None:
        self._store = parts.store
        self._settings = parts.settings
        self._keys = parts.keys
        self._hasher = parts.hasher
        self._mailer = parts.mailer
        self._sessions = parts.sessions
        self._audit = parts.audit
        self._throttle = parts.throttle
        self._codes = MailedCodes(parts.store, parts.settings, parts.keys, parts.audit)
