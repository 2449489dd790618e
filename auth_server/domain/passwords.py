"""Password hashing with bcrypt, bounded so hashing can never take the whole server.

The gRPC server runs handlers on a thread pool; bcrypt releases the GIL, so hashes run in parallel on
the cores. A gate caps concurrent hashes at the core count, and a cap on *waiting* hashers keeps at
least half of the pool free for cheap calls during a login storm: past it, callers get
RESOURCE_EXHAUSTED / RATE_LIMITED at once instead of queueing. The gate is fair between sources: each
source (client IP) may have only a few hashes waiting, and a freed slot goes to the sources in turn,
so one client's flood cannot starve everyone else's logins. Unknown users are checked against a
dummy hash so a login for a user who does not exist costs the same time as a wrong password.

The hashes themselves run on a few threads of their own at a lower CPU priority (nice +10): the cores
they use are the cores the RPC path needs, and a cheap call should not wait behind a hash for the
scheduler. When nothing else wants the CPU they run at full speed; under contention the RPC path wins.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from auth_server.domain.errors import server_busy

MAX_PASSWORD_BYTES = 72  # bcrypt's limit; bcrypt 5 raises beyond it, and we never truncate silently
HASH_NICENESS = 10  # added to the hashing threads' nice value (Linux: per thread)
_T = TypeVar("_T")


def _lower_priority() -> None:
    """Run this thread (only this one, on Linux) at a lower CPU priority; harmless where unsupported."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + HASH_NICENESS)
    except (AttributeError, OSError):
        pass


class FairGate:
    """Admission to `slots` hashing slots, fair between sources.

    A free slot is taken at once. Otherwise callers wait, each source in its own queue, and a released
    slot goes to the waiting source that holds the fewest slots now and, among equals, was served
    longest ago (a newcomer: never). So a source arriving during another's flood is served at the next
    release, ahead of the flood's own queue, and flooding sources share what is left in turn. A source
    may have `per_source` callers waiting and all sources together `max_waiting`; beyond either,
    `acquire` refuses at once.

    Written here rather than taken from a library: the rate-limiting libraries limit rates per key,
    none shares a fixed pool of slots fairly between keys, and this is that and nothing more.
    """

    def __init__(self, slots: int, max_waiting: int, per_source: int) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._max_waiting = max_waiting
        self._per_source = per_source
        self._waiting = 0
        self._queues: dict[str, deque[threading.Event]] = {}  # waiting callers per source
        self._running: dict[str, int] = {}  # slots each source holds now
        self._served_at: dict[str, int] = {}  # tick of each active source's latest admission
        self._tick = 0

    def acquire(self, source: str) -> bool:
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                self._admit(source)
                return True
            if not self._may_wait(source):
                return False
            queue = self._queues.get(source)
            if queue is None:
                queue = self._queues[source] = deque()
            turn = threading.Event()
            queue.append(turn)
            self._waiting += 1
        turn.wait()  # release() hands its slot over: nothing to take when woken
        return True

    def has_room(self, source: str) -> bool:
        """Whether `acquire(source)` would be admitted or queued now (a hint: no slot is reserved).

        Lets a caller refuse a flood's excess before doing any other work for it: a refusal must cost
        far less than the hash it saves, or the refusals themselves take the cores from the hashes.
        """
        with self._lock:
            return (self._free > 0 and not self._waiting) or self._may_wait(source)

    def _may_wait(self, source: str) -> bool:
        """Whether the queue, and this source's share of it, have room (call under the lock)."""
        queue = self._queues.get(source)
        return self._waiting < self._max_waiting and (queue is None or len(queue) < self._per_source)

    def _admit(self, source: str) -> None:
        self._tick += 1
        self._served_at[source] = self._tick
        self._running[source] = self._running.get(source, 0) + 1

    def release(self, source: str) -> None:
        with self._lock:
            held = self._running.get(source, 0) - 1
            if held > 0:
                self._running[source] = held
            else:
                self._running.pop(source, None)
                if source not in self._queues:
                    self._served_at.pop(source, None)  # inactive: forgotten, so memory stays bounded
            if not self._queues:
                self._free += 1
                return
            # At most max_waiting sources wait, so this scan is short.
            chosen = min(self._queues, key=lambda s: (self._running.get(s, 0), self._served_at.get(s, 0)))
            queue = self._queues[chosen]
            turn = queue.popleft()
            self._waiting -= 1
            if not queue:
                del self._queues[chosen]
            self._admit(chosen)
        turn.set()


class PasswordHasher:
    def __init__(self, rounds: int, concurrency: int, max_waiting: int) -> None:
        self._rounds = rounds
        # A source may fill half the queue: plenty for one client alone (a proxy, a batch job), and
        # the other half is always there for everyone else, whom the rotation then serves in turn.
        self._gate = FairGate(concurrency, max_waiting, per_source=max(1, max_waiting // 2))
        # As many hashing threads as slots: a caller holding a slot never waits for a thread.
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="bcrypt", initializer=_lower_priority)
        self._dummy: bytes | None = None
        self._dummy_lock = threading.Lock()

    def _run(self, work: Callable[[], _T], source: str) -> _T:
        if not self._gate.acquire(source):
            raise server_busy()
        try:
            return self._pool.submit(work).result()
        finally:
            self._gate.release(source)

    def has_room(self, source: str) -> bool:
        """Whether a check from `source` would be admitted now (see FairGate.has_room)."""
        return self._gate.has_room(source)

    def hash(self, password: str, source: str = "") -> bytes:
        data = password.encode()
        if len(data) > MAX_PASSWORD_BYTES:
            raise ValueError("password longer than 72 bytes must be rejected by validation first")
        return self._run(lambda: bcrypt.hashpw(data, bcrypt.gensalt(self._rounds)), source)

    def verify(self, password: str, hashed: bytes, source: str = "") -> bool:
        """Whether the password matches; `source` (the client IP) is whom the fair gate queues it under."""
        data = password.encode()
        if len(data) > MAX_PASSWORD_BYTES:
            # No stored password is that long (validation refuses them); still spend the same time.
            self.verify_dummy(source)
            return False
        return self._run(lambda: bcrypt.checkpw(data, hashed), source)

    def verify_dummy(self, source: str = "") -> None:
        """Spend the time of a real check against a hash of the configured cost."""
        self._run(lambda: bcrypt.checkpw(b"not-the-password", self._dummy_hash()), source)

    def _dummy_hash(self) -> bytes:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"dummy-password-for-timing", bcrypt.gensalt(self._rounds))
            return self._dummy

    def warm_up(self) -> None:
        """Compute the dummy hash at start-up so the first unknown-user login is not slower."""
        self._dummy_hash()
