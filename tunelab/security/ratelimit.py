"""Rate limits, in the server process: a sliding one-minute window per key (an API key's prefix,
a client address for failed sign-ins). Enough for one server; several servers behind a load
balancer each apply it (a shared store would be the next step)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class RateLimiter:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count one event for `key`; None if allowed, else seconds until the next is allowed."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            q = self._hits[key]
            while q and now - q[0] >= 60:
                q.popleft()
            if len(q) >= self.per_minute:
                return max(0.0, 60 - (now - q[0]))
            q.append(now)
            if len(self._hits) > 100_000:          # forget idle keys rather than grow forever
                for k in [k for k, v in self._hits.items() if not v or now - v[-1] >= 60]:
                    del self._hits[k]
            return None
