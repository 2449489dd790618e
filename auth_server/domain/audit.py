"""The security audit trail: every authentication attempt and account change, stored and logged.

Events go to the tenant's store (readable by admins through AdminService.ListAuditEvents), to a
structured log line, and to the security-events counter. They name users by id and sessions by id,
never carry a password, code, token or hash. The caller's IP comes from the guard through a
ContextVar, so domain functions do not need a transport parameter just to report it.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable

from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.store.base import AuditEvent, Store

log = logging.getLogger("auth.audit")

client_ip: contextvars.ContextVar[str] = contextvars.ContextVar("audit_client_ip", default="")


class Audit:
    def __init__(self, store: Store, on_event: Callable[[str], None] = lambda _type: None) -> None:
        self._store = store
        self._on_event = on_event

    def record(self, tenant: str, type: str, *, user_id: str = "", actor_user_id: str = "", **details: str) -> None:
        event = AuditEvent(
            id=new_id(),
            type=type,
            user_id=user_id,
            actor_user_id=actor_user_id,
            ip_address=client_ip.get(),
            created_at=utcnow(),
            details=json.dumps(details, sort_keys=True),
        )
        self._store.record_event(tenant, event)
        self._on_event(type)
        log.info(
            type,
            extra={
                "event": type,
                "tenant": tenant,
                "user_id": user_id,
                "actor_user_id": actor_user_id,
                "ip": event.ip_address,
                **{f"detail_{k}": v for k, v in details.items()},
            },
        )
