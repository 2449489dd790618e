"""The access line is the same whether the record comes from makeRecord or from the cheaper AccessRecord.

api/access_log.py builds the guard's per-call record without LogRecord.__init__; these tests hold the
JSON line to the bytes the makeRecord version wrote, and the record usable by any other handler (a
plain Formatter, pytest's caplog).
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth_server.api.access_log import NAME, AccessLog, AccessRecord
from auth_server.runtime.logs import JsonFormatter

FIELDS = {
    "method": "/auth.v1.AuthService/GetMe",
    "code": "OK",
    "reason": "",
    "latency_ms": 0.412,
    "tenant": "default",
    "session": "0123456789abcdef",
    "service": "",
    "ip": "203.0.113.7",
}


def _as_make_record_made_it(fields: dict[str, object]) -> logging.LogRecord:
    logger = logging.getLogger(NAME)
    return logger.makeRecord(logger.name, logging.INFO, __file__, 0, "call", (), None, "_finish", fields)


@given(
    created=st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False),
    latency=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    text=st.text(max_size=40),
)
def test_the_line_is_byte_for_byte_the_make_record_line(created: float, latency: float, text: str) -> None:
    fields = {**FIELDS, "latency_ms": latency, "reason": text, "ip": text}
    fast = AccessRecord(fields)
    plain = _as_make_record_made_it(fields)
    fast.created = plain.created = created
    assert JsonFormatter().format(fast) == JsonFormatter().format(plain)


def test_other_handlers_see_an_ordinary_record() -> None:
    record = AccessRecord(FIELDS)
    line = logging.Formatter("%(levelname)-8s %(name)s:%(filename)s:%(lineno)d %(message)s %(method)s").format(record)
    assert line.startswith("INFO     auth.access:access_log.py:0 call /auth.v1.AuthService/GetMe")
    assert record.getMessage() == "call" and record.levelno == logging.INFO


def test_the_guard_line_reaches_caplog_with_a_hashed_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=NAME)
    AccessLog().write(
        method="/m", code="OK", reason="", seconds=0.0012345, tenant="t", session_id="s1", service="", ip="::1"
    )
    (record,) = [r for r in caplog.records if r.name == NAME]
    assert record.latency_ms == 1.234  # type: ignore[attr-defined]
    assert record.session != "s1" and len(record.session) == 16  # type: ignore[attr-defined]
