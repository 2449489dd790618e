"""The access log: one line per call (logger `auth.access`), written by the guard when the call ends.

Every call pays for this line. `logging.Logger.makeRecord` spends most of its time in
`LogRecord.__init__` (splitting the source path, looking up thread and process, copying `extra` with a
collision check); an `AccessRecord` copies those answers from a constant, since every access record
comes from the same place, and sets only the time and the call's fields: 2 us a record instead of 7
(docs/performance.md, "The guarded call"). It is still a `LogRecord` handed to `Logger.handle`, so
levels, filters, handlers and pytest's `caplog` treat it like any other, and the JSON line
(runtime/logs.py) is byte for byte what `access_log.info("call", extra=fields)` wrote
(tests/unit/test_access_log.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

NAME = "auth.access"
MAX_SESSION_TAGS = 8192

access_log = logging.getLogger(NAME)


# What LogRecord.__init__ would set, the same for every access record. Instance attributes, not class
# ones: Formatter's %-style reads the record's __dict__. The thread and process are left out as
# `configure` has every LogRecord leave them out (runtime/logs.py): no line shows them.
_CONSTANT = {
    "name": NAME,
    "msg": "call",
    "args": (),
    "levelname": "INFO",
    "levelno": logging.INFO,
    "pathname": __file__,
    "filename": "access_log.py",
    "module": "access_log",
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "lineno": 0,
    "funcName": "write",
    "thread": None,
    "threadName": None,
    "processName": None,
    "process": None,
}


class AccessRecord(logging.LogRecord):
    """A LogRecord for one access line, made without LogRecord.__init__'s per-record lookups."""

    def __init__(self, fields: dict[str, Any]) -> None:  # deliberately not calling super()
        now = time.time()
        attributes = self.__dict__
        attributes.update(_CONSTANT)
        # The three time attributes, computed as LogRecord.__init__ computes them.
        attributes["created"] = now
        attributes["msecs"] = int((now - int(now)) * 1000) + 0.0
        attributes["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
        attributes.update(fields)


class AccessLog:
    """Writes the access line of a call; hashes session ids into the short tags the line shows."""

    def __init__(self) -> None:
        self._session_tags: dict[str, str] = {}

    @staticmethod
    def enabled() -> bool:
        return access_log.isEnabledFor(logging.INFO)

    def write(
        self,
        *,
        method: str,
        code: str,
        reason: str,
        seconds: float,
        tenant: str,
        session_id: str,
        service: str,
        ip: str,
    ) -> None:
        access_log.handle(
            AccessRecord(
                {
                    "method": method,
                    "code": code,
                    "reason": reason,
                    "latency_ms": round(seconds * 1000, 3),
                    "tenant": tenant,
                    # a hash, not the id: the log should not hand out handles on live sessions
                    "session": self._session_tag(session_id) if session_id else "",
                    "service": service,
                    "ip": ip,
                }
            )
        )

    def _session_tag(self, session_id: str) -> str:
        """The logged stand-in for a session id (a hash prefix), remembered for the sessions seen lately."""
        tag = self._session_tags.get(session_id)
        if tag is None:
            tag = hashlib.sha256(session_id.encode()).hexdigest()[:16]
            if len(self._session_tags) >= MAX_SESSION_TAGS:
                self._session_tags.clear()
            self._session_tags[session_id] = tag
        return tag
