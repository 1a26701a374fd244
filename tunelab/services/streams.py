"""Live job streams (Server-Sent Events): one poller per server process, fanned out.

Each open stream used to poll the database twice every half second on its own: a viewer with a
thousand tabs was two thousand queries a second. Now a stream only subscribes here; one background
task reads, once a tick, the statuses and new events of every job that has a subscriber (two
queries in all, however many streams are open), formats each event once, and hands it to the
subscribers' buffers. Streams are counted per API key (or signed-in user) and per tenant: one over
the limit is refused (`StreamRefused`, a 429 for the routes).

Delivery: a subscriber has its own cursor (the last event id it was given). The tick reads events
after the lowest cursor of all; each subscriber takes those above its own, so one that joins with
an old cursor catches up through the same query. The status is read before the events: once it
is terminal, every event of the job is already committed, so the events read after it are the
last, and `end` follows them. A subscriber that does not read (a stalled client) is dropped once
its buffer is full; it reconnects with Last-Event-ID and resumes where it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..jobs.status import JobStatus
from . import job_reads

log = logging.getLogger("tunelab.streams")
BATCH = 2000              # events read a tick, over all streams
BUFFER = 5000             # frames waiting for one subscriber before it is dropped
ABANDONED_S = 120         # a subscription its stream has not read for this long is closed (a leak guard)
RETRY_AFTER_S = 5         # what a refused stream is told (a slot frees when another stream closes)


class StreamRefused(Exception):
    def __init__(self, scope: str, limit: int):
        super().__init__(f"Too many live streams open for this {scope} (at most {limit}); "
                         "close one, or poll GET /api/v1/jobs/{id}/events.")
        self.scope, self.limit, self.retry_after = scope, limit, RETRY_AFTER_S


@dataclass(eq=False)
class Subscription:
    """One open stream: the frames the poller has handed it, oldest first."""
    job_id: str
    tenant_id: str
    owner: str
    cursor: int
    frames: deque = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False       # `end` (or a vanished job) handed over: nothing more will come
    read_at: float = field(default_factory=time.monotonic)     # when its stream last asked for frames
    dropped: bool = False     # fell too far behind: the stream closes, the client resumes

    async def next_frames(self, timeout: float) -> list[str]:
        """The frames waiting (after up to `timeout` seconds; [] when none came)."""
        self.read_at = time.monotonic()
        if not self.frames:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        self.ready.clear()
        out = list(self.frames)
        self.frames.clear()
        return out

    def push(self, frame: str) -> None:
        if len(self.frames) >= BUFFER:
            self.dropped = True
            self.frames.clear()
        else:
            self.frames.append(frame)
        self.ready.set()


class JobStreams:
    """The process's open streams, their limits, and the one poller that feeds them."""

    def __init__(self, db, *, tick: float, per_key: int, per_tenant: int,
                 event_frame: Callable[[Any], str], end_frame: Callable[[str], str]):
        """`event_frame(row)` and `end_frame(status)` write the wire format (the API's): each event
        is formatted once, whatever the number of streams it goes to."""
        self.db, self.tick, self.per_key, self.per_tenant = db, tick, per_key, per_tenant
        self.event_frame, self.end_frame = event_frame, end_frame
        self.subs: set[Subscription] = set()
        self._by_owner: Counter = Counter()
        self._by_tenant: Counter = Counter()
        self._task: asyncio.Task | None = None
        self.ticks = 0            # polls made (tests and the benchmark read it)

    def open(self, job_id: str, tenant_id: str, owner: str, cursor: int) -> Subscription:
        """Counts the stream against its owner's and tenant's limits (StreamRefused when over) and
        subscribes it. The caller has checked that the job is the tenant's. On the event loop."""
        if self.per_key > 0 and self._by_owner[owner] >= self.per_key:
            raise StreamRefused("API key", self.per_key)
        if self.per_tenant > 0 and self._by_tenant[tenant_id] >= self.per_tenant:
            raise StreamRefused("organisation", self.per_tenant)
        sub = Subscription(job_id, tenant_id, owner, cursor)
        self.subs.add(sub)
        self._by_owner[owner] += 1
        self._by_tenant[tenant_id] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="job-streams")
        return sub

    def close(self, sub: Subscription) -> None:
        if sub in self.subs:
            self.subs.discard(sub)
            for counter, k in ((self._by_owner, sub.owner), (self._by_tenant, sub.tenant_id)):
                counter[k] -= 1
                if counter[k] <= 0:
                    del counter[k]

    async def _run(self) -> None:
        """Polls while any stream is open (then ends; the next `open` starts it again)."""
        while self.subs:
            await asyncio.sleep(self.tick)
            self._close_abandoned()
            live = [s for s in self.subs if not (s.ended or s.dropped)]
            if not live:
                continue
            try:
                statuses, events, complete = await asyncio.to_thread(self._read, live)
            except Exception:  # noqa: BLE001 - a database hiccup: the streams wait for the next tick
                log.warning("job streams: poll failed", exc_info=True)
                continue
            self.ticks += 1
            self._fan_out(live, statuses, events, complete)

    def _close_abandoned(self) -> None:
        """Subscriptions whose stream stopped asking for frames (it reads at least every keep-alive
        interval while it runs): should one ever escape its response's cleanup, its slot comes back."""
        stale = time.monotonic() - ABANDONED_S
        for s in [s for s in self.subs if s.read_at < stale]:
            log.warning("job streams: closing an abandoned subscription", extra={"job": s.job_id})
            s.dropped = True           # its stream, should it wake, ends too
            s.ready.set()
            self.close(s)

    def _read(self, live: list[Subscription]) -> tuple[dict[str, str], list, bool]:
        """The two queries of a tick (statuses first: see the module's docstring). In a thread."""
        job_ids = sorted({s.job_id for s in live})
        floor = min(s.cursor for s in live)
        with self.db.engine.connect() as conn:
            statuses = job_reads.statuses(conn, job_ids)
            events = job_reads.events_after(conn, job_ids, floor, BATCH)
        return statuses, events, len(events) < BATCH

    def _fan_out(self, live: list[Subscription], statuses: dict[str, str], events: list, complete: bool) -> None:
        by_job: dict[str, list[Subscription]] = {}
        for s in live:
            by_job.setdefault(s.job_id, []).append(s)
        for e in events:
            frame = None
            for s in by_job.get(e.job_id, ()):
                if e.id > s.cursor:
                    frame = frame or self.event_frame(e)      # formatted once, however many streams
                    s.push(frame)
                    s.cursor = e.id
        seen = events[-1].id if events else None
        for s in live:
            if not complete:          # everything up to the batch's last id was read, for every job
                s.cursor = max(s.cursor, seen)
                continue
            status = statuses.get(s.job_id)
            if status is None:        # the job (or its tenant) was deleted
                s.ended = True
                s.ready.set()
            elif JobStatus(status).is_terminal:
                s.push(self.end_frame(status))
                s.ended = True
