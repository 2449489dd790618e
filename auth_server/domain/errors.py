"""Domain errors: what went wrong, as a status-code name, a stable ErrorInfo reason and a safe message.

Domain and store code raise AuthError; one boundary (`rpc_errors.py`) turns it into a gRPC status with
`google.rpc.ErrorInfo` (and `google.rpc.BadRequest` for field violations). Nothing here imports grpc,
so the same errors serve the HTTP bridge and the tests. Messages are written for the caller: they never
carry driver text, stack traces or secrets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

DOMAIN = "auth.v1"  # ErrorInfo.domain (AIP-193): stable for the life of the API


class Code(Enum):
    """The gRPC status codes this service answers with (values are grpc.StatusCode names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class AuthError(Exception):
    def __init__(
        self,
        code: Code,
        reason: str,
        message: str,
        *,
        violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = violations
        self.metadata = metadata or {}
        # Whole seconds until a retry can succeed: google.rpc.RetryInfo on the wire, Retry-After over HTTP.
        self.retry_after = retry_after
        if retry_after is not None:
            self.metadata.setdefault("retry_after_seconds", str(retry_after))

    def __repr__(self) -> str:
        return f"AuthError({self.code.value}, {self.reason})"


def unauthenticated(reason: str, message: str) -> AuthError:
    return AuthError(Code.UNAUTHENTICATED, reason, message)


def validation_failed(violations: list[FieldViolation]) -> AuthError:
    fields = ", ".join(v.field for v in violations)
    return AuthError(
        Code.INVALID_ARGUMENT, "VALIDATION_FAILED", f"Invalid fields: {fields}.", violations=tuple(violations)
    )


# The errors raised from more than one place, built once so their wording stays the same.
TOKEN_MISSING = ("TOKEN_MISSING", "An access token is required: send 'authorization: Bearer <token>'.")
TOKEN_INVALID = ("TOKEN_INVALID", "The access token is not valid.")
TOKEN_EXPIRED = ("TOKEN_EXPIRED", "The access token has expired; refresh it.")
SESSION_NOT_FOUND = ("SESSION_NOT_FOUND", "The session of this token does not exist.")
SESSION_REVOKED = ("SESSION_REVOKED", "Your session was revoked from another device; log in again.")
SESSION_EXPIRED = ("SESSION_EXPIRED", "Your session has reached its maximum lifetime; log in again.")
ACCOUNT_LOCKED = ("ACCOUNT_LOCKED", "This account is locked.")
INVALID_CREDENTIALS = ("INVALID_CREDENTIALS", "The username/e-mail or password is incorrect.")
SERVICE_CREDENTIALS_INVALID = ("INVALID_CREDENTIALS", "The client id or client secret is incorrect.")
SERVICE_ACCOUNT_REVOKED = (
    "SERVICE_ACCOUNT_REVOKED",
    "The service account of this token was deleted, or its secret rotated; get a new token.",
)


def caller_not_allowed(message: str) -> AuthError:
    """PERMISSION_DENIED / CALLER_NOT_ALLOWED: a live caller whose kind (person, service) or name the rule
    does not admit."""
    return AuthError(Code.PERMISSION_DENIED, "CALLER_NOT_ALLOWED", message)


def store_unavailable() -> AuthError:
    return AuthError(Code.UNAVAILABLE, "STORE_UNAVAILABLE", "The service's store is unavailable; retry later.")


def rate_limited(message: str, retry_after: float) -> AuthError:
    """RESOURCE_EXHAUSTED / RATE_LIMITED with RetryInfo; the delay is rounded up to whole seconds (at least 1)."""
    return AuthError(Code.RESOURCE_EXHAUSTED, "RATE_LIMITED", message, retry_after=max(1, math.ceil(retry_after)))


def server_busy() -> AuthError:
    return rate_limited("Too many password checks in progress; retry shortly.", 1)
