"""What each record's fields are, for the adapters: names, value kinds, and the checks on updates.

Both adapters build queries from field names that callers pass in `set`, `inc` and `expect`; this
module is the single place that decides which names and values are acceptable, so no unchecked name
ever reaches SQL or a MongoDB filter and both adapters reject the same mistakes the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auth_server.store.base import AuditEvent, Counter, LoginChallenge, Revocation, ServiceAccount, Session, User

# The kinds a field can hold; each adapter maps them to its own storage types.
KINDS: dict[type, str] = {str: "str", int: "int", bool: "bool", bytes: "bytes", datetime: "datetime"}


@dataclass(frozen=True, slots=True)
class RecordSpec:
    cls: type
    names: tuple[str, ...]  # in dataclass order; "id" first
    kinds: Mapping[str, str]
    nullable: frozenset[str]


def _spec(cls: type) -> RecordSpec:
    hints = typing.get_type_hints(cls)
    kinds: dict[str, str] = {}
    nullable: set[str] = set()
    for field in dataclasses.fields(cls):
        args = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
        if args:  # `X | None`
            nullable.add(field.name)
            kinds[field.name] = KINDS[args[0]]
        else:
            kinds[field.name] = KINDS[hints[field.name]]
    return RecordSpec(cls, tuple(kinds), kinds, frozenset(nullable))


USER = _spec(User)
SESSION = _spec(Session)
CHALLENGE = _spec(LoginChallenge)
EVENT = _spec(AuditEvent)
COUNTER = _spec(Counter)
SERVICE_ACCOUNT = _spec(ServiceAccount)
REVOCATION = _spec(Revocation)


def _check_value(spec: RecordSpec, name: str, value: Any) -> None:
    if value is None:
        if name not in spec.nullable:
            raise ValueError(f"{spec.cls.__name__}.{name} cannot be None")
        return
    kind = spec.kinds[name]
    # bool is an int subclass: keep them apart so a flag never lands in a counter or vice versa.
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "bytes": isinstance(value, bytes),
        "datetime": isinstance(value, datetime) and value.utcoffset() is not None,
    }[kind]
    if not ok:
        want = "an aware datetime" if kind == "datetime" else kind
        raise ValueError(f"{spec.cls.__name__}.{name} must be {want}, got {type(value).__name__}")


def check_record(spec: RecordSpec, record: Any) -> None:
    """Raise ValueError unless every field of the record holds a value of its declared kind."""
    if type(record) is not spec.cls:
        raise ValueError(f"expected a {spec.cls.__name__}, got {type(record).__name__}")
    for name in spec.names:
        _check_value(spec, name, getattr(record, name))


def check_update(
    spec: RecordSpec,
    set: Mapping[str, Any] | None,
    inc: Mapping[str, int] | None,
    expect: Mapping[str, Any] | None,
) -> None:
    """Raise ValueError for unknown fields, wrong value kinds, or an update no store could apply."""
    set, inc, expect = set or {}, inc or {}, expect or {}
    for part, values in (("set", set), ("inc", inc), ("expect", expect)):
        for name, value in values.items():
            if name not in spec.kinds:
                raise ValueError(f"{part}: {spec.cls.__name__} has no field {name!r}")
            if name == "id":
                # The id is the key the update is addressed by; it never changes and needs no check.
                raise ValueError(f"{part}: the id of a record is not a field to update or expect")
            if part == "inc" and spec.kinds[name] != "int":
                raise ValueError(f"inc: {spec.cls.__name__}.{name} is not an integer field")
            _check_value(spec, name, value)
    both = set.keys() & inc.keys()
    if both:
        # MongoDB refuses $set and $inc on one path; refusing it everywhere keeps the adapters alike.
        raise ValueError(f"fields both set and incremented: {sorted(both)}")
