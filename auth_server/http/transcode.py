"""HTTP request <-> protobuf message, following the route's `google.api.http` binding.

Request: path variables (percent-decoded) set their fields; with `body: "*"` the JSON object is the
whole request, with `body: "field"` it fills that field, and without a body the query string fills
the request (`?token=...`; repeated keys for repeated fields; `true`/`false` for booleans). Path
variables win over body fields of the same name. Unknown JSON fields and unknown query parameters
are rejected with 400 (a typo such as `keepcurent` must not silently change what a call does).
JSON goes through `google.protobuf.json_format`, so input accepts lowerCamelCase and proto names.

Response: the protobuf JSON mapping in lowerCamelCase with fields that have no presence printed
even when they hold their default (`isCurrent: false`, `sessions: []`), plus a human `message` for
the routes in MESSAGES. It is json_format.MessageToDict's output, made by a printer compiled once per
message type (`to_dict`): json_format walks descriptors and options on every call, which was a tenth
of the bridge's own work per request (issue 15). Types it does not handle itself (maps, floats, enum
JSON-name options, well-known types other than Timestamp/Duration/FieldMask) go to json_format;
tests/unit/test_transcode_printer.py holds the two equal for every routed response type.
`LogoutSession` answers only `{"message": "Session revoked successfully"}`
(the shape the browser clients of the old service expect; DESIGN.md section 3).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from auth_server.http.errors import HttpError, bad_request
from auth_server.http.routes import Route

# Presentation only (the routes themselves come from the protos): the `message` added to responses.
MESSAGES = {
    "auth.v1.AuthService.Signup": "Check your inbox to finish signing up",  # the same whether or not one exists
    "auth.v1.AuthService.VerifySignup": "Account created",
    "auth.v1.AuthService.Login": "A sign-in code was sent by e-mail",
    "auth.v1.AuthService.VerifyOtp": "Login successful",
    "auth.v1.AuthService.Refresh": "Token refreshed",
    "auth.v1.AuthService.UnlockAccount": "Account unlocked",
    "auth.v1.AuthService.ListSessions": "Active sessions retrieved successfully",
    "auth.v1.AuthService.LogoutSession": "Session revoked successfully",
    "auth.v1.AuthService.LogoutAll": "Sessions revoked successfully",
    "auth.v1.AuthService.ChangePassword": "Password changed; log in again",
}
MESSAGE_ONLY = frozenset({"auth.v1.AuthService.LogoutSession"})
MAX_QUERY_PARAMETERS = 32
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


def new_request(route: Route) -> Message:
    return message_factory.GetMessageClass(route.request_type)()


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; 400 for anything else (never a 500)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, absurdly long numbers, deep nesting
        raise bad_request("malformed_json", "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise bad_request("malformed_json", "The request body must be a JSON object.")
    return value


def _parse_into(value: dict[str, Any], message: Message, where: str) -> None:
    try:
        json_format.ParseDict(value, message, max_recursion_depth=32)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise HttpError(400, "INVALID_ARGUMENT", "invalid_field", f"{where}: {_short(error)}") from None


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


def _field(message_type: Descriptor, name: str) -> FieldDescriptor | None:
    return message_type.fields_by_name.get(name) or next((f for f in message_type.fields if f.json_name == name), None)


def _nest(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _scalar(field: FieldDescriptor, raw: str, name: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = raw.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise bad_request("invalid_field", f"query parameter {name}: expected true or false")
    return raw  # json_format accepts numbers, enums, timestamps and bytes as strings


def _query_dict(message_type: Descriptor, query: list[tuple[str, str]], skip: set[str]) -> dict[str, Any]:
    if len(query) > MAX_QUERY_PARAMETERS:
        raise bad_request("invalid_field", "Too many query parameters.")
    result: dict[str, Any] = {}
    for name, raw in query:
        target, field, names = message_type, None, []
        for part in name.split("."):
            field = _field(target, part) if target is not None else None
            if field is None:
                raise bad_request("invalid_field", f"Unknown query parameter {name!r}.")
            names.append(field.name)
            target = field.message_type
        assert field is not None
        path = ".".join(names)
        if path in skip:
            raise bad_request("invalid_field", f"Query parameter {name!r} is bound by the path.")
        if field.message_type is not None and field.message_type.full_name not in (
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
        ):
            raise bad_request("invalid_field", f"Query parameter {name!r} is not a scalar field.")
        value = _scalar(field, raw, name)
        if field.is_repeated:
            leaf: Any = result
            for part in names[:-1]:
                leaf = leaf.setdefault(part, {})
            leaf.setdefault(names[-1], []).append(value)
        elif _lookup(result, names) is not None:
            raise bad_request("invalid_field", f"Query parameter {name!r} given twice.")
        else:
            _merge(result, _nest(path, value))
    return result


def _lookup(tree: dict[str, Any], names: list[str]) -> Any:
    node: Any = tree
    for part in names:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def build_request(
    route: Route, variables: dict[str, str], query: list[tuple[str, str]], body: dict[str, Any] | None
) -> Message:
    """The request message of `route` from the path variables, the query string and the JSON body."""
    request = new_request(route)
    if route.body == "*":
        if query:
            raise bad_request("invalid_field", "This route takes its input from the JSON body, not the query string.")
        _parse_into(body or {}, request, "body")
    else:
        if route.body:
            _parse_into({route.body: body or {}}, request, "body")
        _parse_into(_query_dict(route.request_type, query, set(route.path_fields)), request, "query")
    bound: dict[str, Any] = {}
    for path, value in variables.items():
        _merge(bound, _nest(path, value))
    if bound:
        from_path = new_request(route)
        _parse_into(bound, from_path, "path")
        request.MergeFrom(from_path)
    return request


_Convert = Callable[[Any], Any]
_TEXT_WKT = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"})
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})  # printed as JSON strings
_printers: dict[str, Callable[[Message], dict[str, Any]]] = {}


def _json_format(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def to_dict(message: Message) -> dict[str, Any]:
    """json_format.MessageToDict(message, always_print_fields_with_no_presence=True), faster."""
    printer = _printers.get(message.DESCRIPTOR.full_name)
    if printer is None:
        printer = _printers[message.DESCRIPTOR.full_name] = _compile(message.DESCRIPTOR)
    return printer(message)


def _compile(descriptor: Descriptor) -> Callable[[Message], dict[str, Any]]:
    if descriptor.full_name in _TEXT_WKT:
        return lambda message: message.ToJsonString()  # type: ignore[attr-defined,return-value]
    if descriptor.full_name.startswith("google.protobuf."):
        return _json_format  # Any, Struct, wrappers...: json_format's own rules
    fields: dict[int, tuple[str, _Convert, bool]] = {}  # number -> (json name, convert, repeated)
    defaults: list[tuple[str, Any]] = []  # fields without presence, printed when unset
    for field in descriptor.fields:
        convert = _converter(field)
        if convert is None:
            return _json_format
        fields[field.number] = (field.json_name, convert, field.is_repeated)
        if not field.has_presence:
            defaults.append((field.json_name, None if field.is_repeated else convert(field.default_value)))

    def printer(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in message.ListFields():  # set fields, by field number, as json_format does
            name, convert, repeated = fields[field.number]
            out[name] = [convert(item) for item in value] if repeated else convert(value)
        for name, default in defaults:
            if name not in out:
                out[name] = [] if default is None else default
        return out

    return printer


def _converter(field: FieldDescriptor) -> _Convert | None:
    """value -> JSON value for one field, or None when json_format must print the whole message."""
    if field.is_extension or (field.message_type is not None and field.message_type.GetOptions().map_entry):
        return None
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        return to_dict
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        if enum.is_closed or enum.full_name == "google.protobuf.NullValue":
            return None
        if any(value.GetOptions().ListFields() for value in enum.values):
            return None  # a JSON-name option on a value
        names = {value.number: value.name for value in enum.values}
        return lambda number: names.get(number, number)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode("utf-8")
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return str
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    if kind in _INT64:
        return str
    if kind in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32):
        return int
    return None  # float and double: infinities, NaN and shortest-float rules stay json_format's


def response_json(route: Route, response: Message) -> Any:
    """The JSON body of a successful call."""
    if route.rpc in MESSAGE_ONLY:
        return {"message": MESSAGES[route.rpc]}
    data: Any = to_dict(response)
    if route.response_body:
        data = data.get(route.response_type.fields_by_name[route.response_body].json_name)
    message = MESSAGES.get(route.rpc)
    return {"message": message, **data} if message and isinstance(data, dict) else data
