"""The JSON log formatter writes exactly the line the plain version wrote (json.dumps of the entry).

runtime/logs.py does less work per line than `json.dumps({...}, default=str)` with a fresh datetime
(it is on every call's path): these tests hold it to the same bytes for every kind of value, for
exceptions, for extra keys that shadow the fixed ones, and for timestamps at rounding edges.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from auth_server.runtime import logs
from auth_server.runtime.logs import JsonFormatter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _reference(record: logging.LogRecord) -> str:
    """The formatter as it was: a dict of the fixed fields and the extras, through json.dumps."""
    entry = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
    if record.exc_info:
        entry["exception"] = logging.Formatter().formatException(record.exc_info)
    return json.dumps(entry, default=str)


def _record(
    extra: dict[str, Any] | None = None, msg: str = "call", args: tuple = (), **fields: Any
) -> logging.LogRecord:
    logger = logging.getLogger("auth.access")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, msg, args, None, "test", extra)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


class _Opaque:
    def __str__(self) -> str:
        return "opaque <thing>"


ACCESS = {
    "method": "/auth.v1.AuthService/GetMe",
    "code": "OK",
    "reason": "",
    "latency_ms": 0.532,
    "tenant": "default",
    "session": "0123456789abcdef",
    "ip": "127.0.0.1",
}


@pytest.mark.parametrize(
    "extra",
    [
        ACCESS,
        {**ACCESS, "code": "UNAUTHENTICATED", "reason": "TOKEN_INVALID", "latency_ms": 12.0},
        {"count": 3, "big": 10**30, "ok": True, "no": False, "none": None, "ratio": 1e-7, "neg": -0.0},
        {"nan": float("nan"), "inf": float("inf"), "minus_inf": float("-inf")},
        {"unicode": 'Jürgen 東京 \u2028 \x00 "quoted" \\ back', "emoji": "\U0001f600"},
        {"nested": {"a": [1, 2.5, None, {"b": "c"}]}, "tuple": (1, "x"), "opaque": _Opaque()},
        {"time": "shadowed", "level": "shadowed too", "logger": 7},  # extras replace the fixed fields in place
        {},
    ],
)
def test_same_line_as_json_dumps_for_every_kind_of_value(extra: dict[str, Any]) -> None:
    record = _record(extra)
    assert JsonFormatter().format(record) == _reference(record)


def test_message_arguments_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = _record({"method": "x"}, "store unavailable during %s", ("/a/B",), exc_info=exc_info)
    line = JsonFormatter().format(record)
    assert line == _reference(record)
    assert "ValueError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize(
    "created",
    [
        1_795_000_000.0,
        1_795_000_000.0004999,
        1_795_000_000.0005,
        1_795_000_000.9994999,
        1_795_000_000.9999994,
        1_795_000_000.9999996,  # rounds up into the next second
        1_795_086_399.9999999,  # and into the next day
        1_700_000_000.123456,
        0.0,
    ],
)
def test_timestamps_round_as_datetime_does(created: float) -> None:
    formatter = JsonFormatter()
    formatter.format(_record(ACCESS, created=created - 1))  # another second cached first
    record = _record(ACCESS, created=created)
    assert formatter.format(record) == _reference(record)


def test_records_of_different_layouts_through_one_formatter() -> None:
    formatter = JsonFormatter()
    records = [_record(ACCESS), _record({"event": "login"}), _record(ACCESS), _record(None), _record({"event": "x"})]
    assert [formatter.format(r) for r in records] == [_reference(r) for r in records]


def test_configured_handler_writes_one_line_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    try:
        logs.configure("INFO")
        access = logging.getLogger("auth.access")
        access.handle(access.makeRecord(access.name, logging.INFO, __file__, 0, "call", (), None, "test", ACCESS))
        logging.getLogger("auth.audit").info("event", extra={"type": "login"})
        logging.getLogger("auth.audit").debug("not at INFO")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved[2:]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert {k: first[k] for k in ACCESS} == ACCESS and first["logger"] == "auth.access"
    assert second["type"] == "login" and second["message"] == "event"
