"""The error model as a caller of auth.v1 sees it: typed exceptions built from a failed call.

A failed call carries a gRPC status code and message, and the service adds a `google.rpc.Status` in the
`grpc-status-details-bin` trailer holding a `google.rpc.ErrorInfo` (a stable UPPER_SNAKE `reason`, the
domain "auth.v1" and string metadata) and, for input errors, a `google.rpc.BadRequest` (field
violations). `from_rpc_error` turns any `grpc.RpcError` (sync or grpc.aio) into an `AuthServiceError`
subclass chosen by status code, so callers write `except Unauthenticated as e: if e.reason == ...`.

The same module also builds such statuses (`rich_status`), so the guard other services mount answers
in exactly the shape the auth service itself does.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "auth.v1"  # ErrorInfo.domain of every error the auth service (and the guard) sends


class AuthServiceError(Exception):
    """A failed call: status code, ErrorInfo reason/domain/metadata and BadRequest field violations.

    Also the generic fallback for codes without a subclass below (INTERNAL, UNKNOWN, CANCELLED, ...).
    """

    grpc_code: grpc.StatusCode | None = None  # the code a subclass stands for

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        *,
        domain: str = "",
    ) -> None:
        metadata = dict(metadata or {})
        field_violations = list(field_violations or [])
        # Passing every argument to Exception keeps the error picklable (pickle re-calls cls(*args)).
        super().__init__(code, reason, message, metadata, field_violations)
        self.code = code
        self.reason = reason  # "" when the server sent no ErrorInfo (e.g. a proxy or the transport failed)
        self.message = message
        self.metadata = metadata
        self.field_violations = field_violations  # [(field path, description)]
        self.domain = domain

    @property
    def fields(self) -> tuple[str, ...]:
        """The paths of the fields named by BadRequest violations, in order."""
        return tuple(field for field, _ in self.field_violations)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.reason!r}, {self.message!r})"


class InvalidArgument(AuthServiceError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(AuthServiceError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AuthServiceError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(AuthServiceError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AuthServiceError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AuthServiceError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AuthServiceError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AuthServiceError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AuthServiceError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: dict[grpc.StatusCode, type[AuthServiceError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
    )
    if cls.grpc_code is not None
}


def error_class(code: grpc.StatusCode) -> type[AuthServiceError]:
    """The exception class raised for `code` (AuthServiceError itself when no subclass fits)."""
    return _BY_CODE.get(code, AuthServiceError)


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    try:
        # grpc.aio's AioRpcError answers code()/details()/trailing_metadata() synchronously, so the sync
        # helper reads both kinds of error.
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        # ValueError: code/message in the trailer disagree with the call's (e.g. a proxy rewrote the
        # status); the status code the transport reports is then the truth and the details are dropped.
        return None


def from_rpc_error(error: grpc.RpcError) -> AuthServiceError:
    """The typed exception for a failed call; the original error is kept as `__cause__`."""
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(error, "details", None)
    message = (details_of() if callable(details_of) else None) or ""
    reason, domain, metadata, violations = "", "", {}, []
    status = _rich_status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    typed = error_class(code)(code, reason, message, metadata, violations, domain=domain)
    typed.__cause__ = error
    return typed


def rich_status(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
    field_violations: list[tuple[str, str]] | None = None,
) -> grpc.Status:
    """A status carrying ErrorInfo (domain "auth.v1") and optional BadRequest, for `abort_with_status`."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {}))
    details = [info]
    if field_violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                    for field, description in field_violations
                ]
            )
        )
        details.append(bad)
    # grpc.StatusCode values are (int, name) pairs; google.rpc.Status wants the int.
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(proto)
