"""SIGTERM and SIGINT (Ctrl-C) as a stop request that a process's main thread waits for.

Python runs a signal handler in the main thread, between two bytecodes of whatever that thread is doing.
The handlers used to call `threading.Event.set()`, while the main thread spent its life in that same
Event's `wait()`: when the signal landed in the instant `wait()` holds the Event's (non-reentrant) lock,
`set()` waited for it forever and the process never stopped. A Ctrl-C sent the moment the banner appears
hit that window now and then (`tests/e2e/test_process.py`, about once in fifty starts). The handler here
only records the signal, which takes no lock; the waiting side looks at the record every `POLL` seconds.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

POLL = 0.1  # seconds between two looks at the record: the most a stop request waits to be noticed


class StopRequest:
    """Installs handlers for SIGTERM and SIGINT (from the main thread) and tells whether one came."""

    def __init__(self) -> None:
        self._received: list[int] = []  # list.append is atomic and lock-free: safe in a handler
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)

    def is_set(self) -> bool:
        return bool(self._received)

    def wait(self, timeout: float | None = None) -> bool:
        """Until a stop signal came (True) or `timeout` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._received:
            remaining = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if remaining <= 0:
                return False
            time.sleep(remaining)
        return True
