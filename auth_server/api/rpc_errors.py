"""The error boundary's transport half: AuthError -> gRPC status with google.rpc.ErrorInfo (AIP-193),
google.rpc.BadRequest field violations for input errors and google.rpc.RetryInfo when a retry after a
delay can succeed, sent in grpc-status-details-bin."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from auth_server.domain.errors import DOMAIN, AuthError


def to_status_proto(error: AuthError) -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))
    details = [info]
    if error.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        details.append(bad)
    if error.retry_after is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after)))
        details.append(retry)
    return status_pb2.Status(code=code_pb2.Code.Value(error.code.value), message=error.message, details=details)


def abort(context: grpc.ServicerContext, error: AuthError) -> NoReturn:
    context.abort_with_status(rpc_status.to_status(to_status_proto(error)))
    raise AssertionError("abort_with_status returned")  # it always raises
