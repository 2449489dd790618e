"""The stop request of `serve`, `bridge` and the workers: a signal is recorded, and wait() sees it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from auth_server.runtime.signals import StopRequest


@pytest.fixture
def handlers_restored() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_wait(handlers_restored: None, signum: int) -> None:
    stop = StopRequest()
    assert not stop.is_set() and stop.wait(0.05) is False
    os.kill(os.getpid(), signum)  # handled in this (the main) thread, before kill returns or at the next bytecode
    assert stop.wait(5) is True and stop.is_set()
