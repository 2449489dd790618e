"""Records and domain results -> protobuf messages. No secret or hash field is ever copied out."""

from __future__ import annotations

import json
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from auth_client.gen.auth.v1 import access_pb2, admin_pb2, auth_pb2
from auth_server.api.guard import ROLE_NAMES
from auth_server.domain.revocations import cursor_of
from auth_server.domain.sessions import IssuedTokens
from auth_server.infra.clock import utcnow
from auth_server.store.base import AuditEvent, Revocation, Session, User

ROLE_VALUES = {name: value for value, name in ROLE_NAMES.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


# The message of each User record converted lately, by the record's identity. The session cache hands the
# guard the same User object call after call, so GetMe (the most frequent call) converts it once rather
# than every time (~16 us of each call). Bounded; the records are kept alive with their messages, so an id
# is never reused while remembered. A message is never modified after it is built: the callers only ever
# copy it into a response.
_MAX_REMEMBERED = 4096
_remembered: dict[int, tuple[User, str, auth_pb2.User]] = {}


def user(record: User, tenant: str) -> auth_pb2.User:
    if record.admin_locked or record.locked_until is not None:  # `locked` may change with time alone
        return _user(record, tenant)
    hit = _remembered.get(id(record))
    if hit is not None and hit[0] is record and hit[1] == tenant:
        return hit[2]
    message = _user(record, tenant)
    if len(_remembered) >= _MAX_REMEMBERED:
        _remembered.clear()
    _remembered[id(record)] = (record, tenant, message)
    return message


def _user(record: User, tenant: str) -> auth_pb2.User:
    return auth_pb2.User(
        id=record.id,
        username=record.username,
        email=record.email,
        name=record.name,
        phone=record.phone,
        role=ROLE_VALUES.get(record.role, access_pb2.ROLE_UNSPECIFIED),
        locked=record.is_locked(utcnow()),
        created_at=timestamp(record.created_at),
        tenant_id=tenant,
        email_verified=record.email_verified,
    )


def session(record: Session, current_id: str) -> auth_pb2.Session:
    return auth_pb2.Session(
        id=record.id,
        device_name=record.device_name,
        ip_address=record.ip_address,
        user_agent=record.user_agent,
        created_at=timestamp(record.created_at),
        last_activity=timestamp(record.last_activity),
        is_current=record.id == current_id,
    )


def token_fields(tokens: IssuedTokens) -> dict[str, object]:
    """The fields VerifyOtpResponse and RefreshResponse share."""
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "session_id": tokens.session_id,
        "access_token_expires_at": timestamp(tokens.access_expires_at),
        "refresh_token_expires_at": timestamp(tokens.refresh_expires_at),
        "token_type": "Bearer",
    }


def audit_event(record: AuditEvent) -> admin_pb2.AuditEvent:
    return admin_pb2.AuditEvent(
        id=record.id,
        type=record.type,
        user_id=record.user_id,
        actor_user_id=record.actor_user_id,
        ip_address=record.ip_address,
        created_at=timestamp(record.created_at),
        details=json.loads(record.details),
    )


def revocation(record: Revocation) -> auth_pb2.RevocationEvent:
    return auth_pb2.RevocationEvent(
        cursor=cursor_of(record),
        kind=auth_pb2.RevocationKind.Value("REVOCATION_KIND_" + record.kind.upper()),
        at=timestamp(record.at),
        session_id=record.session_id,
        user_id=record.user_id,
        service_account_id=record.service_account_id,
    )
