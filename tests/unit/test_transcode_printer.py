"""The bridge's compiled JSON printer and its error mapping say exactly what json_format and the gRPC status say.

`transcode.to_dict` replaces json_format.MessageToDict on the bridge's hot path (issue 15), and
`errors.from_auth_error` replaces decoding the guard's status for in-process calls: both must give the
browser byte-for-byte what it got before.
"""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status

from auth_server.api.rpc_errors import to_status_proto
from auth_server.domain import errors
from auth_server.domain.errors import AuthError, Code, FieldViolation
from auth_server.http.app import STUB_MODULES
from auth_server.http.errors import from_auth_error, from_rpc_error
from auth_server.http.routes import derive_routes
from auth_server.http.transcode import to_dict

RESPONSE_TYPES = sorted(
    {route.response_type.full_name: route.response_type for route in derive_routes(f for f, _ in STUB_MODULES)}.items()
)


def _fill(message: Message, depth: int, seed: int) -> None:
    """A value in every field (two in repeated ones), nested messages to `depth`."""
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is not None and field.containing_oneof.fields[0] is not field:
            continue  # one member per oneof
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(message, field.name).update({f"k{seed}": "v", f"k{seed + 1}": "w"})  # our maps: string -> string
            continue
        values = [_value(message, field, depth, seed + i) for i in range(2 if field.is_repeated else 1)]
        if field.message_type is not None:
            if depth <= 0:
                continue
            for value in values:
                target = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
                target.CopyFrom(value)
        elif field.is_repeated:
            getattr(message, field.name).extend(values)
        else:
            setattr(message, field.name, values[0])


def _value(message: Message, field: FieldDescriptor, depth: int, seed: int) -> object:
    if field.message_type is not None:
        sub = message_factory.GetMessageClass(field.message_type)()
        if field.message_type.full_name == "google.protobuf.Timestamp":
            sub.FromSeconds(1_700_000_000 + seed)  # type: ignore[attr-defined]
        else:
            _fill(sub, depth - 1, seed + 1)
        return sub
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes([seed % 256, 1, 2])
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return f"{field.name}-{seed}-é"
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return True
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return 1.5 + seed
    return 7 + seed


@pytest.mark.parametrize("descriptor", [d for _, d in RESPONSE_TYPES], ids=[n for n, _ in RESPONSE_TYPES])
def test_compiled_printer_matches_json_format(descriptor: Descriptor) -> None:
    cls = message_factory.GetMessageClass(descriptor)
    filled = cls()
    _fill(filled, 3, 0)
    for message in (cls(), filled):
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        got = to_dict(message)
        assert json.dumps(got) == json.dumps(expected)  # same keys, values and order


ERRORS = [
    errors.unauthenticated(*errors.TOKEN_MISSING),
    errors.unauthenticated(*errors.SESSION_REVOKED),
    errors.caller_not_allowed("This method is for people; a service token cannot call it."),
    errors.validation_failed([FieldViolation("email", "not an e-mail address"), FieldViolation("name", "empty")]),
    AuthError(Code.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS", "Slow down.", retry_after=30),
    AuthError(Code.PERMISSION_DENIED, "INSUFFICIENT_ROLE", "Your role does not allow this call."),
    AuthError(Code.NOT_FOUND, "TENANT_NOT_FOUND", "Unknown tenant."),
    AuthError(Code.UNAVAILABLE, "STORE_UNAVAILABLE", "The store is unavailable; retry."),
    AuthError(Code.INTERNAL, "INTERNAL", "Internal error."),
    AuthError(Code.FAILED_PRECONDITION, "ACCOUNT_LOCKED", "", metadata={"until": "soon"}),
]


@pytest.mark.parametrize("error", ERRORS, ids=[e.reason for e in ERRORS])
def test_in_process_errors_map_as_the_grpc_status_does(error: AuthError) -> None:
    status = rpc_status.to_status(to_status_proto(error))
    over_grpc = from_rpc_error(status.code, status.details, status.trailing_metadata)
    in_process = from_auth_error(error)
    assert (in_process.http_status, in_process.body(), in_process.headers) == (
        over_grpc.http_status,
        over_grpc.body(),
        over_grpc.headers,
    )
    assert isinstance(status.code, grpc.StatusCode)
