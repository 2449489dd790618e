"""Service accounts: callers that are not people (another service, a batch job), platform-wide.

An operator manages them with the CLI (`auth-server service create|list|rotate|delete`); a service
trades its client id and secret for a short-lived token of `type: "service"` (IssueServiceToken) and
sends it like a person's access token. No gRPC and no database types here: only the Store protocol.

- Secrets are random (256 bits) and only a keyed hash is stored (purpose "service-secret", bound to the
  client id), compared in constant time. They are checked through the same throttles as passwords
  (per source, and per (client id, source)), so guessing is bounded; an unknown client id answers
  exactly as a wrong secret does.
- Rotation keeps the previous secret working for an overlap. Tokens minted before the rotation, or with
  the previous secret, die when the overlap ends (`--overlap 0`: at once).
- Every call with a service token reads the account from the store, so `service delete` acts on the
  very next call (SERVICE_ACCOUNT_REVOKED).
- `tenants` restricts where an account may call (empty: every tenant); elsewhere CALLER_NOT_ALLOWED.

Audit: platform events (created, rotated, deleted) are recorded in every configured tenant the account
may call in, so each tenant's admins see who can reach their tenant; token events in the call's tenant.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auth_server.domain import errors, revocations
from auth_server.domain.audit import Audit
from auth_server.domain.errors import AuthError, Code, FieldViolation, unauthenticated, validation_failed
from auth_server.domain.revocations import RevocationLog
from auth_server.domain.throttle import Throttle
from auth_server.domain.tokens import AccessClaims, AccessTokens, ServiceClaims
from auth_server.infra.clock import utcnow
from auth_server.infra.ids import new_id
from auth_server.infra.keys import KeyRing
from auth_server.store.base import DuplicateKey, ServiceAccount, Store

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
HASH_PURPOSE = "service-secret"
CLIENT_ID_PREFIX = "svc_"
SECRET_PREFIX = "sk_"  # noqa: S105 (a recognisable prefix of generated secrets, not a secret)
MAX_CLIENT_ID_CHARS = 64
MAX_SECRET_CHARS = 256
DEFAULT_OVERLAP = 3600
_DUMMY_HASH = bytes(32)  # compared against when the client id is unknown, so that costs the same


@dataclass(frozen=True)
class ServiceCaller:
    """A service account making an authenticated call: handed by the guard to the handler."""

    tenant: str
    account: ServiceAccount
    token_expires_at: datetime


@dataclass(frozen=True)
class IssuedServiceToken:
    access_token: str
    expires_at: datetime


def allowed_tenants(account: ServiceAccount) -> frozenset[str]:
    """The tenants the account is restricted to; empty means every tenant."""
    return frozenset(t for t in account.tenants.split(",") if t)


def may_call_in(account: ServiceAccount, tenant: str) -> bool:
    allowed = allowed_tenants(account)
    return not allowed or tenant in allowed


def _not_found(name: str) -> AuthError:
    return AuthError(Code.NOT_FOUND, "SERVICE_ACCOUNT_NOT_FOUND", f"No service account named {name!r}.")


class ServiceAccounts:
    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        audit: Audit,
        tenants: frozenset[str],
        *,
        access_tokens: AccessTokens | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        """`tenants`: the configured tenants. The operator CLI needs no tokens or throttle; the server does."""
        self._store = store
        self._keys = keys
        self._audit = audit
        self._tenants = tenants
        self._access = access_tokens
        self._throttle = throttle
        self._revocations = RevocationLog(store)

    # --- operator commands

    def create(self, name: str, tenants: list[str]) -> tuple[ServiceAccount, str]:
        """A new account and its secret (shown once: only its keyed hash is kept)."""
        name = name.strip().lower()
        wanted = list(dict.fromkeys(t.strip() for t in tenants if t.strip()))
        violations = []
        if not NAME_PATTERN.match(name):
            violations.append(FieldViolation("name", f"Must match {NAME_PATTERN.pattern}."))
        unknown = [t for t in wanted if t not in self._tenants]
        if unknown:
            violations.append(FieldViolation("tenants", f"Unknown tenant(s): {', '.join(unknown)}."))
        if violations:
            raise validation_failed(violations)
        account_id = CLIENT_ID_PREFIX + new_id()
        secret = self._new_secret()
        account = ServiceAccount(
            id=account_id,
            name=name,
            tenants=",".join(sorted(wanted)),
            secret_hash=self._hash(account_id, secret),
            created_at=utcnow(),
        )
        try:
            self._store.create_service_account(account)
        except DuplicateKey:
            raise AuthError(
                Code.ALREADY_EXISTS, "SERVICE_ACCOUNT_EXISTS", f"A service account named {name!r} exists."
            ) from None
        self._record_platform(account, "service_account.created", tenants=account.tenants or "*")
        return account, secret

    def list(self) -> list[ServiceAccount]:
        return self._store.list_service_accounts()

    def rotate(self, name: str, overlap_seconds: int = DEFAULT_OVERLAP) -> tuple[ServiceAccount, str]:
        """A new secret; the current one keeps working for `overlap_seconds` (0: dies now)."""
        if overlap_seconds < 0:
            raise validation_failed([FieldViolation("overlap", "Must be 0 or more seconds.")])
        account = self._find(name)
        now = utcnow()
        secret = self._new_secret()
        rotated = self._store.update_service_account(
            account.id,
            set={
                "secret_hash": self._hash(account.id, secret),
                "previous_secret_hash": account.secret_hash,
                "rotated_at": now,
                "previous_valid_until": now + timedelta(seconds=overlap_seconds),
            },
            expect={"secret_hash": account.secret_hash},
        )
        if rotated is None:  # deleted or rotated by someone else meanwhile
            raise AuthError(
                Code.FAILED_PRECONDITION, "CONCURRENT_CHANGE", "The service account changed meanwhile; try again."
            )
        self._revocations.service_account(self._may_call_in(rotated), revocations.SERVICE_ACCOUNT_ROTATED, rotated.id)
        self._record_platform(rotated, "service_account.rotated", overlap_seconds=str(overlap_seconds))
        return rotated, secret

    def delete(self, name: str) -> ServiceAccount:
        account = self._find(name)
        if not self._store.delete_service_account(account.id):
            raise _not_found(name)
        self._revocations.service_account(self._may_call_in(account), revocations.SERVICE_ACCOUNT_DELETED, account.id)
        self._record_platform(account, "service_account.deleted")
        return account

    def _find(self, name: str) -> ServiceAccount:
        account = self._store.find_service_account(name.strip().lower())
        if account is None:
            raise _not_found(name)
        return account

    # --- tokens (the server's side)

    def issue_token(self, tenant: str, client_id: str, client_secret: str, source: str) -> IssuedServiceToken:
        """A service token for the right credentials, checked through the login throttles."""
        assert self._access is not None and self._throttle is not None, "built without tokens or throttle"
        given = (("client_id", client_id), ("client_secret", client_secret))
        missing = [FieldViolation(f, "Required.") for f, v in given if not v]
        if missing:
            raise validation_failed(missing)
        now = utcnow()
        identifier = f"service:{client_id[: MAX_CLIENT_ID_CHARS + 1]}"
        refusal = self._throttle.pair_blocked(tenant, identifier, source, now)
        if refusal is not None:
            raise refusal
        ordinal = self._throttle.begin_check(tenant, identifier, source, now)
        plausible = len(client_id) <= MAX_CLIENT_ID_CHARS and len(client_secret) <= MAX_SECRET_CHARS
        account = self._store.get_service_account(client_id) if plausible else None
        with_previous = False
        if account is None:
            self._keys.matches(_DUMMY_HASH, HASH_PURPOSE, client_id, client_secret)
            ok = False
        else:
            ok, with_previous = self._secret_matches(account, client_secret, now)
        if not ok:
            self._audit.record(
                tenant,
                "service_token.failed",
                reason="wrong_secret" if account else "unknown_client",
                service_account_id=account.id if account else "",
            )
            self._throttle.pair_failed(tenant, identifier, source, ordinal, now)
            raise unauthenticated(*errors.SERVICE_CREDENTIALS_INVALID)
        assert account is not None
        self._throttle.pair_succeeded(tenant, identifier, source, now)
        if not may_call_in(account, tenant):
            self._audit.record(
                tenant, "service_token.refused", reason="tenant_not_allowed", service_account_id=account.id
            )
            raise errors.caller_not_allowed("This service account may not call in this tenant.")
        # A token got with the previous secret dies with it, at the end of the overlap.
        cap = account.previous_valid_until if with_previous else None
        token, expires_at = self._access.issue_service(account.id, now, not_after=cap)
        self._audit.record(
            tenant,
            "service_token.issued",
            service_account_id=account.id,
            name=account.name,
            secret="previous" if with_previous else "current",
        )
        return IssuedServiceToken(token, expires_at)

    def verify_token(self, token: str) -> AccessClaims | ServiceClaims:
        """The verified claims of an access token of either kind (no store read): the guard's first step."""
        assert self._access is not None, "built without tokens"
        return self._access.verify_any(token)

    def authenticate(self, tenant: str, claims: ServiceClaims) -> ServiceCaller:
        """The account behind a verified service token, read from the store on every call."""
        account = self._store.get_service_account(claims.service_account_id)
        if account is None:
            raise unauthenticated(*errors.SERVICE_ACCOUNT_REVOKED)
        now = utcnow()
        if (
            account.rotated_at is not None
            and claims.issued_at < account.rotated_at.replace(microsecond=0)  # iat has whole seconds
            and (account.previous_valid_until is None or account.previous_valid_until <= now)
        ):
            raise unauthenticated(*errors.SERVICE_ACCOUNT_REVOKED)  # minted before a rotation whose overlap ended
        if not may_call_in(account, tenant):
            raise errors.caller_not_allowed("This service account may not call in this tenant.")
        return ServiceCaller(tenant=tenant, account=account, token_expires_at=claims.expires_at)

    # --- helpers

    def _secret_matches(self, account: ServiceAccount, secret: str, now: datetime) -> tuple[bool, bool]:
        """(matches, with the previous secret). Both hashes are always compared: no timing tells which."""
        current = self._keys.matches(account.secret_hash, HASH_PURPOSE, account.id, secret)
        previous = self._keys.matches(account.previous_secret_hash or _DUMMY_HASH, HASH_PURPOSE, account.id, secret)
        previous_live = (
            account.previous_secret_hash is not None
            and account.previous_valid_until is not None
            and account.previous_valid_until > now
        )
        if current:
            return True, False
        return (previous and previous_live), True

    def _hash(self, account_id: str, secret: str) -> bytes:
        return self._keys.hash(HASH_PURPOSE, account_id, secret)

    @staticmethod
    def _new_secret() -> str:
        return SECRET_PREFIX + secrets.token_urlsafe(32)

    def _may_call_in(self, account: ServiceAccount) -> list[str]:
        """The configured tenants the account may call in."""
        allowed = allowed_tenants(account)
        return [tenant for tenant in sorted(self._tenants) if not allowed or tenant in allowed]

    def _record_platform(self, account: ServiceAccount, type: str, **details: str) -> None:
        """A platform event, recorded in each configured tenant the account may call in."""
        for tenant in self._may_call_in(account):
            self._audit.record(tenant, type, service_account_id=account.id, name=account.name, **details)


def timestamp(value: datetime | None) -> str:
    """An ISO-8601 UTC time for operator output ("" for none)."""
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""
