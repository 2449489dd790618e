"""Errors as the browser sees them: gRPC status + google.rpc.ErrorInfo -> HTTP status and a JSON body.

Body: `{"error": {"code": 401, "status": "UNAUTHENTICATED", "reason": "session_revoked", "message": "..."}}`
with the ErrorInfo reason in lower case (browser code checks `error.reason === 'session_revoked'`),
`fields` (`[{"field", "description"}]`, from google.rpc.BadRequest) when the server named bad fields,
and `metadata` when ErrorInfo carried some (`retry_after_seconds` also becomes `Retry-After`).
The status mapping follows google/rpc/code.proto as grpc-gateway does; 401 adds `WWW-Authenticate`.
Errors the bridge raises itself (bad JSON, too large, unknown route) use the same shape through
`HttpError`. The in-process bridge gets the guard's AuthError itself and maps it with `from_auth_error`,
to exactly what `from_rpc_error` makes of the status the guard would have sent (tests/unit/test_http_errors.py
holds the two equal). A status without our ErrorInfo (the upstream unreachable, a deadline) gets a generic
message: transport details such as addresses never reach the browser.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from auth_server.domain.errors import DOMAIN, AuthError

HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
GENERIC_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "The service is unavailable; retry later.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The service did not answer in time; retry later.",
    grpc.StatusCode.INTERNAL: "Internal error.",
}
GENERIC_MESSAGE = "The request could not be completed."
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class HttpError(Exception):
    """An error answered with the JSON error body; raised by the bridge itself or built from a gRPC status."""

    def __init__(
        self,
        http_status: int,
        status: str,
        reason: str,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.reason = reason
        self.message = message
        self.fields = fields or []
        self.metadata = metadata or {}
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {
            "code": self.http_status,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
        }
        if self.fields:
            error["fields"] = self.fields
        if self.metadata:
            error["metadata"] = self.metadata
        return {"error": error}


def bad_request(reason: str, message: str) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", reason, message)


def _details(trailing: grpc.aio.Metadata | tuple | None) -> status_pb2.Status | None:
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a malformed detail is no reason to fail the answer
                return None
            return status
    return None


def from_rpc_error(code: grpc.StatusCode, details: str | None, trailing: grpc.aio.Metadata | tuple | None) -> HttpError:
    """The HttpError for a failed call: status from the code, reason and fields from the status details."""
    http_status = HTTP_STATUS.get(code, 500)
    name = code.name
    reason, message, fields, metadata = name.lower(), GENERIC_MESSAGES.get(code, GENERIC_MESSAGE), [], {}
    status = _details(trailing)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == DOMAIN:  # ours: the reason and message are written for callers
                    reason, message = info.reason.lower(), status.message or details or message
                    metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields = [{"field": v.field, "description": v.description} for v in bad.field_violations]
    return _http_error(http_status, name, reason, message, fields, metadata)


def from_auth_error(error: AuthError) -> HttpError:
    """The HttpError for the guard's AuthError of an in-process call: what `from_rpc_error` makes of the
    status (ErrorInfo, BadRequest) that the guard would have sent for it over gRPC."""
    code = grpc.StatusCode[error.code.value]
    message = error.message or GENERIC_MESSAGES.get(code, GENERIC_MESSAGE)
    fields = [{"field": v.field, "description": v.description} for v in error.violations]
    http_status = HTTP_STATUS.get(code, 500)
    return _http_error(http_status, code.name, error.reason.lower(), message, fields, dict(error.metadata))


def _http_error(
    http_status: int, name: str, reason: str, message: str, fields: list[dict[str, str]], metadata: dict[str, str]
) -> HttpError:
    headers: dict[str, str] = {}
    if http_status == 401:
        # RFC 6750 section 3: no error code when the request carried no token at all.
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if reason != "token_missing" else "Bearer"
    retry_after = metadata.get("retry_after_seconds", "")
    if http_status == 429 and retry_after.isdigit():
        headers["Retry-After"] = retry_after
    return HttpError(http_status, name, reason, message, fields=fields, metadata=metadata, headers=headers)
