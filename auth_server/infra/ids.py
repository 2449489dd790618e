"""Record ids: 32 lowercase hex characters that sort by creation time.

12 hex digits of milliseconds since the epoch, then 20 random hex digits from `secrets`. Sorting by id
is sorting by creation time (to the millisecond), which is what paging through users relies on; the
random part (80 bits) keeps ids unguessable and unique across replicas without coordination.
"""

from __future__ import annotations

import secrets
import time


def new_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"
