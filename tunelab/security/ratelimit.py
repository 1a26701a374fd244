"""Rate limits, in the server process: a sliding one-minute window per key (an API key's prefix,
a client address for failed sign-ins). Enough for one server; several servers behind a load
balancer each apply it (a shared store would be the next step).

A failed-attempt limit is used in two steps: `retry_after` BEFORE the guess is evaluated (a
blocked address learns nothing, not even that its guess was right), `hit` after a failure."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class RateLimiter:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _wait(self, q: deque, now: float) -> float | None:
        """Seconds until the window has room (after dropping expired events); None if it has. Under the lock."""
        while q and now - q[0] >= 60:
            q.popleft()
        return max(0.0, 60 - (now - q[0])) if len(q) >= self.per_minute else None

    def retry_after(self, key: str) -> float | None:
        """Without counting anything: None if `key` may act now, else seconds until it may."""
        if self.per_minute <= 0:
            return None
        with self._lock:
            q = self._hits.get(key)
            return self._wait(q, time.monotonic()) if q else None

    def hit(self, key: str) -> float | None:
        """Count one event for `key`; None if allowed, else seconds until the next is allowed."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            q = self._hits[key]
            wait = self._wait(q, now)
            if wait is not None:
                return wait
            q.append(now)
            if len(self._hits) > 100_000:          # forget idle keys rather than grow forever
                for k in [k for k, v in self._hits.items() if not v or now - v[-1] >= 60]:
                    del self._hits[k]
            return None
