"""Password hashing with bcrypt, bounded so hashing can never take the whole server.

The gRPC server runs handlers on a thread pool; bcrypt releases the GIL, so hashes run in parallel on
the cores. A semaphore caps concurrent hashes at the core count, and a cap on *waiting* hashers keeps
at least half of the pool free for cheap calls during a login storm: past it, callers get
RESOURCE_EXHAUSTED / RATE_LIMITED at once instead of queueing. Unknown users are checked against a
dummy hash so a login for a user who does not exist costs the same time as a wrong password.

The hashes themselves run on a few threads of their own at a lower CPU priority (nice +10): the cores
they use are the cores the RPC path needs, and a cheap call should not wait behind a hash for the
scheduler. When nothing else wants the CPU they run at full speed; under contention the RPC path wins.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from auth_server.domain.errors import server_busy

MAX_PASSWORD_BYTES = 72  # bcrypt's limit; bcrypt 5 raises beyond it, and we never truncate silently
HASH_NICENESS = 10  # added to the hashing threads' nice value (Linux: per thread)


def _lower_priority() -> None:
    """Run this thread (only this one, on Linux) at a lower CPU priority; harmless where unsupported."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + HASH_NICENESS)
    except (AttributeError, OSError):
        pass


class PasswordHasher:
    def __init__(self, rounds: int, concurrency: int, max_waiting: int) -> None:
        self._rounds = rounds
        self._slots = threading.BoundedSemaphore(concurrency)
        self._admission = threading.BoundedSemaphore(concurrency + max_waiting)
        # As many hashing threads as slots: a caller holding a slot never waits for a thread.
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="bcrypt", initializer=_lower_priority)
        self._dummy: bytes | None = None
        self._dummy_lock = threading.Lock()

    def _run(self, work):  # type: ignore[no-untyped-def]
        if not self._admission.acquire(blocking=False):
            raise server_busy()
        try:
            with self._slots:
                return self._pool.submit(work).result()
        finally:
            self._admission.release()

    def hash(self, password: str) -> bytes:
        data = password.encode()
        if len(data) > MAX_PASSWORD_BYTES:
            raise ValueError("password longer than 72 bytes must be rejected by validation first")
        return self._run(lambda: bcrypt.hashpw(data, bcrypt.gensalt(self._rounds)))

    def verify(self, password: str, hashed: bytes) -> bool:
        data = password.encode()
        if len(data) > MAX_PASSWORD_BYTES:
            # No stored password is that long (validation refuses them); still spend the same time.
            self.verify_dummy()
            return False
        return self._run(lambda: bcrypt.checkpw(data, hashed))

    def verify_dummy(self) -> None:
        """Spend the time of a real check against a hash of the configured cost."""
        self._run(lambda: bcrypt.checkpw(b"not-the-password", self._dummy_hash()))

    def _dummy_hash(self) -> bytes:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"dummy-password-for-timing", bcrypt.gensalt(self._rounds))
            return self._dummy

    def warm_up(self) -> None:
        """Compute the dummy hash at start-up so the first unknown-user login is not slower."""
        self._dummy_hash()
