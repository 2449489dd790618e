"""Forgotten password (RequestPasswordReset, ResetPassword) and the "This wasn't me" link of a new-device
sign-in notice (ReportSignIn). TODO(issue 14, part 1 and 3)."""

from __future__ import annotations

from auth_server.domain.audit import Audit
from auth_server.domain.passwords import PasswordHasher
from auth_server.domain.sessions import Sessions
from auth_server.domain.throttle import Throttle
from auth_server.infra.config import Settings
from auth_server.infra.keys import KeyRing
from auth_server.infra.mail import Mailer
from auth_server.store.base import Store


class Recovery:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        keys: KeyRing,
        hasher: PasswordHasher,
        mailer: Mailer,
        sessions: Sessions,
        audit: Audit,
        throttle: Throttle,
    ) -> None:
        self._store = store
        self._settings = settings
        self._keys = keys
        self._hasher = hasher
        self._mailer = mailer
        self._sessions = sessions
        self._audit = audit
        self._throttle = throttle
