"""Reading what a caller sees from a failed call: status code, ErrorInfo reason, field violations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str]
    fields: tuple[str, ...]  # BadRequest field violations
    retry_after: float | None = None  # google.rpc.RetryInfo's delay in seconds, when sent


def failure(error: grpc.RpcError) -> Failure:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason, metadata, fields, retry_after = "", {}, (), None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = tuple(v.field for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return Failure(error.code(), reason, error.details() or "", metadata, fields, retry_after)  # type: ignore[attr-defined]


def fails(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Failure:
    """Run a stub call that must fail, and return what the caller sees."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return failure(error)
    raise AssertionError(f"{getattr(call, '_method', call)!r} succeeded but should have failed")
