"""The error boundary's transport half: AuthError -> gRPC status with google.rpc.ErrorInfo (AIP-193)
and, for input errors, google.rpc.BadRequest field violations, sent in grpc-status-details-bin."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
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
    return status_pb2.Status(code=code_pb2.Code.Value(error.code.value), message=error.message, details=details)


def abort(context: grpc.ServicerContext, error: AuthError) -> NoReturn:
    context.abort_with_status(rpc_status.to_status(to_status_proto(error)))
    raise AssertionError("abort_with_status returned")  # it always raises
