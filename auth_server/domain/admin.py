"""Tenant administration: list users, lock and unlock them, change roles.

A tenant is never left without a usable admin: an admin cannot lock themselves, and the last *active*
(unlocked) admin can be neither locked nor demoted (FAILED_PRECONDITION / LAST_ADMIN). The count and
the change it allows happen under a tenant-wide lease in the store (counters.lease), so two admins
demoting each other at the same instant, through any replicas, cannot both succeed. The operator CLI
goes through the same rule (`change_role`), and only its `--force` overrides it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from auth_server.domain import revocations
from auth_server.domain.audit import Audit
from auth_server.domain.counters import lease
from auth_server.domain.errors import AuthError, Code, FieldViolation, validation_failed
from auth_server.domain.revocations import RevocationLog
from auth_server.domain.sessions import Caller
from auth_server.infra.clock import utcnow
from auth_server.store.base import AuditEvent, Store, User

T = TypeVar("T")
ROLES = ("user", "manager", "admin")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def _user_not_found() -> AuthError:
    return AuthError(Code.NOT_FOUND, "USER_NOT_FOUND", "No such user in this tenant.")


def _last_admin(message: str) -> AuthError:
    return AuthError(Code.FAILED_PRECONDITION, "LAST_ADMIN", message)


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not value or len(value) > 64 or not (value.isascii() and value.isalnum()):
        raise validation_failed([FieldViolation("page_token", "Not a page token from a previous response.")])
    return value


def _page(fetch: Callable[[str | None, int], list[T]], page_size: int, page_token: str) -> tuple[list[T], str]:
    """One page from `fetch(after_or_before_id, limit)` and the token of the next page ("" on the last)."""
    if page_size < 0:
        raise validation_failed([FieldViolation("page_size", "Must not be negative.")])
    limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    items = fetch(decode_page_token(page_token), limit + 1)  # one more tells whether a next page exists
    page = items[:limit]
    return page, encode_page_token(page[-1].id) if len(items) > limit else ""  # type: ignore[attr-defined]


class Admin:
    def __init__(self, store: Store, audit: Audit, revocations: RevocationLog | None = None) -> None:
        self._store = store
        self._audit = audit
        # The server's own log writer (Sessions.revocations), so its session cache hears a lock at once.
        self._revocations = revocations or RevocationLog(store)

    def list_users(self, caller: Caller, page_size: int, page_token: str) -> tuple[list[User], str]:
        return _page(lambda after, limit: self._store.list_users(caller.tenant, after, limit), page_size, page_token)

    def _target(self, caller: Caller, user_id: str) -> User:
        user = self._store.get_user(caller.tenant, user_id) if user_id and len(user_id) <= 64 else None
        if user is None:
            raise _user_not_found()
        return user

    def list_events(
        self, caller: Caller, page_size: int, page_token: str, user_id: str
    ) -> tuple[list[AuditEvent], str]:
        return _page(
            lambda before, limit: self._store.list_events(caller.tenant, before, limit, user_id or None),
            page_size,
            page_token,
        )

    def _keeps_an_admin(self, tenant: str, user: User) -> bool:
        """Whether the tenant still has an active admin once `user` stops being one (call under the lease)."""
        if user.role != "admin" or user.admin_locked:
            return True
        return self._store.count_users(tenant, "admin", unlocked_only=True) > 1

    def lock_user(self, caller: Caller, user_id: str, reason: str) -> int:
        user = self._target(caller, user_id)
        if user.id == caller.user.id:
            raise _last_admin("Admins cannot lock themselves; ask another admin.")
        now = utcnow()
        with lease(self._store, caller.tenant, "admins"):
            user = self._target(caller, user_id)  # as it is now, under the lease
            if not self._keeps_an_admin(caller.tenant, user):
                raise _last_admin("This is the tenant's last active admin; promote another admin first.")
            self._store.update_user(caller.tenant, user.id, set={"admin_locked": True})
        self._revocations.user(caller.tenant, revocations.USER_LOCKED, user.id)
        self._store.consume_challenges(caller.tenant, user.id, now)
        revoked = self._store.revoke_sessions(caller.tenant, user.id, now, "locked_by_admin")
        self._audit.record(
            caller.tenant,
            "account.locked",
            user_id=user.id,
            actor_user_id=caller.user.id,
            reason=reason[:200] or "admin",
            revoked_sessions=str(revoked),
        )
        return revoked

    def unlock_user(self, caller: Caller, user_id: str) -> None:
        user = self._target(caller, user_id)
        self._store.update_user(
            caller.tenant,
            user.id,
            set={
                "admin_locked": False,
                "locked_until": None,
                "failed_logins": 0,
                "unlock_token_hash": None,
                "unlock_token_expires_at": None,
            },
        )
        self._audit.record(caller.tenant, "account.unlocked", user_id=user.id, actor_user_id=caller.user.id)

    def set_role(self, caller: Caller, user_id: str, role: str) -> User:
        return self.change_role(caller.tenant, self._target(caller, user_id).id, role, actor_user_id=caller.user.id)

    def change_role(self, tenant: str, user_id: str, role: str, actor_user_id: str = "", force: bool = False) -> User:
        """Set a user's role, refusing to demote the last active admin unless `force` (the operator's CLI)."""
        if role not in ROLES:
            raise validation_failed([FieldViolation("role", "One of ROLE_USER, ROLE_MANAGER, ROLE_ADMIN.")])
        with lease(self._store, tenant, "admins"):
            user = self._store.get_user(tenant, user_id)
            if user is None:
                raise _user_not_found()
            if role != "admin" and not force and not self._keeps_an_admin(tenant, user):
                raise _last_admin("This is the tenant's last active admin; promote another admin first.")
            updated = self._store.update_user(tenant, user.id, set={"role": role})
        if updated is None:
            raise _user_not_found()
        if updated.role != user.role:
            self._revocations.user(tenant, revocations.ROLE_CHANGED, user.id)
        self._audit.record(
            tenant, "role.changed", user_id=user.id, actor_user_id=actor_user_id, old=user.role, new=role
        )
        return updated
