"""Structured logs: one JSON object per line on stderr, with the fields a record carries in `extra`.

Secrets never reach a log line because no code passes them: the guard logs a hash of the session id,
audit events log ids only. The console mail sender (development) prints to stderr outside logging.

Every call writes an access line (logger `auth.access`), so this is on the hot path: a guarded GetMe
spent ~16% of its Python time making, formatting and writing that line (docs/performance.md). The
formatter gives byte for byte what `json.dumps(entry, default=str)` gave, with less work per line: the
json module's C encoder is made once instead of per line, the date and time of day are formatted once
per second, and which attributes of a record came from `extra` is worked out once per record layout.
The handler formats before it takes its lock, so threads wait for each other only for the write.
Records skip looking up thread and process names, which no line shows.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from json import encoder as json_encoder
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_MAX_SHAPES = 256  # distinct attribute layouts of records remembered (a handful in practice)


def _object_encoder() -> Callable[[dict[str, Any]], str]:
    """`json.dumps(entry, default=str)`, with the C encoder made once rather than on every call."""
    make = json_encoder.c_make_encoder
    if make is None:  # an interpreter without the _json accelerator
        return lambda entry: json.dumps(entry, default=str)
    # The arguments JSONEncoder(default=str).iterencode passes, less the circular-reference markers:
    # a log entry is flat, and a nested cycle would still end in RecursionError, caught by the handler.
    encode = make(None, str, json_encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda entry: "".join(encode(entry, 0))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._encode = _object_encoder()
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text
        # Record attribute names in order -> the ones that came from `extra`: records logged from one
        # place have one layout, so the filtering is done once per layout, not once per record.
        self._extras: dict[tuple[str, ...], tuple[str, ...]] = {}

    def _time(self, created: float) -> str:
        """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, same rounding."""
        fraction, whole = math.modf(created)
        micros = round(fraction * 1e6)  # half-even, as fromtimestamp rounds
        if micros >= 1_000_000:
            whole, micros = whole + 1, micros - 1_000_000
        second = int(whole)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        return f"{cached[1]}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        attributes = vars(record)
        shape = tuple(attributes)
        extras = self._extras.get(shape)
        if extras is None:
            extras = tuple(k for k in shape if k not in _STANDARD)
            if len(self._extras) >= _MAX_SHAPES:
                self._extras.clear()
            self._extras[shape] = extras
        entry.update(zip(extras, map(attributes.__getitem__, extras), strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._encode(entry)


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that formats outside its lock: 32 pool threads queue only for the write itself."""

    def handle(self, record: logging.LogRecord) -> bool:
        kept = self.filter(record)
        if not kept:
            return False
        if isinstance(kept, logging.LogRecord):  # Python 3.12+: a filter may hand back a changed record
            record = kept
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return True
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                self.stream.write(line)
                self.stream.flush()
            except Exception:
                self.handleError(record)
        return True


def configure(level: str) -> None:
    # No line shows a record's thread or process names; looking them up for every record costs time.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
