"""The bcrypt pool's admission gate (domain/passwords.py FairGate): one source's flood cannot starve others."""

from __future__ import annotations

import threading

from auth_server.domain.passwords import FairGate

WAIT = 10.0  # generous: only a broken gate ever waits this long


def _waiter(gate: FairGate, source: str, served: list[str]) -> threading.Thread:
    def run() -> None:
        assert gate.acquire(source)
        served.append(source)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _until_waiting(gate: FairGate, count: int) -> None:
    for _ in range(10_000):
        if gate._waiting == count:  # the waiters are queued: the order below is then fixed
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"expected {count} waiters, have {gate._waiting}")


def test_a_newcomer_is_served_before_the_floods_own_queue() -> None:
    gate = FairGate(slots=1, max_waiting=8, per_source=4)
    assert gate.acquire("flood")
    served: list[str] = []
    threads = [_waiter(gate, "flood", served) for _ in range(3)]
    _until_waiting(gate, 3)
    threads.append(_waiter(gate, "newcomer", served))
    _until_waiting(gate, 4)
    gate.release("flood")
    threads[-1].join(WAIT)
    assert served == ["newcomer"]  # not one of the three that queued earlier from the flooding source
    for _ in range(3):
        gate.release(served[-1])
    for thread in threads:
        thread.join(WAIT)
    assert sorted(served) == ["flood", "flood", "flood", "newcomer"]


def test_one_source_may_fill_only_its_share_of_the_queue() -> None:
    gate = FairGate(slots=1, max_waiting=4, per_source=2)
    assert gate.acquire("flood")
    served: list[str] = []
    threads = [_waiter(gate, "flood", served) for _ in range(2)]
    _until_waiting(gate, 2)
    assert not gate.acquire("flood")  # its share is full: refused at once, never queued
    threads.append(_waiter(gate, "other", served))
    _until_waiting(gate, 3)
    for _ in range(3):
        gate.release(served[-1] if served else "flood")
        threading.Event().wait(0.01)
    for thread in threads:
        thread.join(WAIT)
    assert served[0] == "other" and len(served) == 3


def test_free_slots_are_taken_at_once_and_returned() -> None:
    gate = FairGate(slots=2, max_waiting=2, per_source=1)
    assert gate.acquire("a") and gate.acquire("a")  # one source alone gets every core
    gate.release("a")
    gate.release("a")
    assert gate._free == 2 and gate._running == {}
