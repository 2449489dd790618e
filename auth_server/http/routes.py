"""The route table, derived from the `google.api.http` annotations of the served auth.v1 services.

Nothing here is hand-written per route: every method of every service in the given proto files
becomes one `Route` per HTTP binding (the main rule plus `additional_bindings`). A path template is
compiled to a regular expression: literal segments, `{field}` and `{field=pattern}` variables (`*`
one segment, `**` the rest of the path), and an optional `:verb` suffix (`/users/{user_id}:lock`).
`body` is kept as the annotation says it: `"*"` (the whole JSON body is the request), a field name
(the body fills that field), or empty (no body: the query string fills the request, as for GET).
A template the bridge cannot compile raises RouteError at start-up, never at request time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FileDescriptor, MethodDescriptor

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()+,;=@-]*$")  # RFC 3986 pchar minus '%' and ':' (the verb marker)


class RouteError(Exception):
    """An http annotation the bridge cannot serve: the bridge must not start."""


@dataclass(frozen=True)
class Route:
    http_method: str  # GET, POST, PUT, PATCH, DELETE
    template: str  # as annotated: /api/v1/auth/sessions/{session_id}
    pattern: re.Pattern[str]
    path_fields: tuple[str, ...]  # proto field paths bound by the template, in order
    body: str  # "*", a field name, or "" (no body)
    response_body: str  # "" (the whole response) or a response field name
    service: str  # auth.v1.AuthService
    method: MethodDescriptor

    @property
    def rpc(self) -> str:
        """Full method name with a dot: auth.v1.AuthService.ListSessions."""
        return self.method.full_name

    @property
    def request_type(self) -> Descriptor:
        return self.method.input_type

    @property
    def response_type(self) -> Descriptor:
        return self.method.output_type

    def match(self, path: str) -> dict[str, str] | None:
        """The percent-decoded path variables if `path` matches, else None."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {field: unquote(value) for field, value in zip(self.path_fields, found.groups(), strict=True)}


def _segment_regex(pattern: str, template: str) -> str:
    parts = []
    for segment in pattern.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append(".+")
        elif _LITERAL.match(segment) and segment:
            parts.append(re.escape(segment))
        else:
            raise RouteError(f"{template}: unsupported variable pattern {pattern!r}")
    return "/".join(parts)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """'/a/{id}:verb' -> (regex, ('id',)). Variables never match '/' unless their pattern says '**'."""
    if not template.startswith("/"):
        raise RouteError(f"{template}: a path template must start with '/'")
    path, verb = template, ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and not last.endswith("}"):  # '{id}:lock' or 'users:search', not '{id=x:y}'
        path, _, verb = template.rpartition(":")
        if not _LITERAL.match(verb) or not verb:
            raise RouteError(f"{template}: bad verb {verb!r}")
    regex, fields, at = [], [], 0
    for variable in _VARIABLE.finditer(path):
        literal = path[at : variable.start()]
        if "{" in literal or "}" in literal:
            raise RouteError(f"{template}: unbalanced braces")
        regex.append(re.escape(literal))
        name, pattern = variable.group(1), variable.group(2) or "*"
        regex.append(f"({_segment_regex(pattern, template)})")
        fields.append(name)
        at = variable.end()
    tail = path[at:]
    if "{" in tail or "}" in tail:
        raise RouteError(f"{template}: unbalanced braces")
    regex.append(re.escape(tail))
    if verb:
        regex.append(re.escape(":" + verb))
    if len(set(fields)) != len(fields):
        raise RouteError(f"{template}: a field is bound twice")
    return re.compile("".join(regex)), tuple(fields)


def _field_exists(message: Descriptor, path: str) -> bool:
    for name in path.split("."):
        field = message.fields_by_name.get(name)
        if field is None:
            return False
        if field.message_type is not None:
            message = field.message_type
    return True


def _bindings(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise RouteError("additional_bindings must not nest")
        yield extra


def _route(service: str, method: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind is None or kind == "custom":
        raise RouteError(f"{method.full_name}: unsupported http pattern {kind!r}")
    template = getattr(rule, kind)
    pattern, fields = compile_template(template)
    for field in fields:
        if not _field_exists(method.input_type, field):
            raise RouteError(f"{method.full_name}: {template} binds unknown field {field!r}")
    if rule.body not in ("", "*") and rule.body not in method.input_type.fields_by_name:
        raise RouteError(f"{method.full_name}: body names unknown field {rule.body!r}")
    if rule.response_body and rule.response_body not in method.output_type.fields_by_name:
        raise RouteError(f"{method.full_name}: response_body names unknown field {rule.response_body!r}")
    return Route(
        http_method=kind.upper(),
        template=template,
        pattern=pattern,
        path_fields=fields,
        body=rule.body,
        response_body=rule.response_body,
        service=service,
        method=method,
    )


def derive_routes(files: Iterable[FileDescriptor]) -> tuple[Route, ...]:
    """Every annotated method of every service in `files`. Methods without an http option are not routed."""
    routes: list[Route] = []
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                for binding in _bindings(options.Extensions[annotations_pb2.http]):
                    routes.append(_route(service.full_name, method, binding))
    seen: dict[tuple[str, str], str] = {}
    for route in routes:
        key = (route.http_method, route.pattern.pattern)
        if key in seen:
            raise RouteError(f"{route.http_method} {route.template}: bound by both {seen[key]} and {route.rpc}")
        seen[key] = route.rpc
    return tuple(routes)


@dataclass(frozen=True)
class Match:
    route: Route
    variables: dict[str, str]


class RouteTable:
    """Finds the route of a request; tells 404 (no template matches) from 405 (another method does)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def find(self, http_method: str, path: str) -> tuple[Match | None, tuple[str, ...]]:
        """(match, ()) or (None, allowed methods of that path: empty means no such path)."""
        allowed: list[str] = []
        for route in self.routes:
            variables = route.match(path)
            if variables is None:
                continue
            if route.http_method == http_method:
                return Match(route, variables), ()
            allowed.append(route.http_method)
        return None, tuple(sorted(set(allowed)))
