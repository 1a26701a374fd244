"""Webhooks for job events: one delivery row per (hook, event), signed with the hook's secret
(HMAC-SHA256 over "<timestamp>.<body>", header `Tunelab-Signature: t=<ts>,v1=<hex>`), retried
with exponential backoff; each attempt's status and a short, sanitised excerpt of the reply are
kept for the tenant's admins.

Delivery is the worker's webhook thread calling `deliver_due` every half second: it records the
attempts that finished, then hands due rows to a small pool of threads (`Dispatcher`) with at
most a few in flight per tenant, so a tenant whose receivers hang holds only its own slots. Each
attempt goes through `security/egress.py` (public addresses only, one total deadline, a capped
read). A row being tried is leased (its next_attempt_at pushed past the deadline) so another
worker does not send it too; a worker that dies mid-flight leaves it to be retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

import httpcore
import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..db.models import Job, Webhook, WebhookDelivery, utcnow
from ..security import egress
from ..settings import Settings, get_settings

log = logging.getLogger("tunelab.webhooks")

EVENTS = ("succeeded", "failed", "cancelled", "paused")
MAX_ATTEMPTS = 6
BACKOFF_S = (1, 4, 15, 60, 300)
EXCERPT_CHARS = 300          # what is kept of a reply: enough to debug a receiver, not a data channel
READ_CAP = 64 * 1024         # what is read of a reply at most
LEASE_MARGIN_S = 30          # a leased row is free again this long after its deadline


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def excerpt(text: str | bytes | None, limit: int = EXCERPT_CHARS) -> str | None:
    """A reply as one short line of printable text: control, format (bidi overrides, zero-width)
    and unassigned characters become spaces, runs of spaces one."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text[: limit * 4])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def enqueue(session: Session, job: Job, event: str) -> int:
    hooks = session.scalars(select(Webhook).where(Webhook.tenant_id == job.tenant_id)).all()
    payload = {"type": f"fine_tuning.job.{event}", "job_id": job.id, "kind": job.kind, "status": job.status,
               "fine_tuned_model": job.fine_tuned_model, "error_code": job.error_code,
               "created_at": int(time.time())}
    n = 0
    for hook in hooks:
        if not hook.events or event in hook.events:
            session.add(WebhookDelivery(tenant_id=job.tenant_id, webhook_id=hook.id, job_id=job.id,
                                        event=event, payload=payload))
            n += 1
    return n


# ---- one attempt (no database: it runs on a pool thread) ------------------------------------------
@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    tenant_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    seconds: float       # in all, from resolving the host to the last byte read


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    tenant_id: str
    status: int | None
    text: str | None
    ok: bool
    final: bool          # no retry: the destination is refused by policy
    duration_ms: float


def attempt(a: Attempt, allow: egress.AllowList) -> Outcome:
    t0 = time.perf_counter()
    status, final = None, False
    try:
        reply = egress.post(a.url, a.body, a.headers, allow, a.seconds, READ_CAP)
        status, text = reply.status, excerpt(reply.body)
    except egress.EgressRefused as exc:
        log.warning("webhook refused", extra={"delivery": a.delivery_id, "tenant": a.tenant_id,
                                              "address": str(exc.address), "reason": str(exc)})
        final = True
        text = excerpt(f"refused: {exc}; an operator can allow internal receivers with "
                       "TUNELAB_WEBHOOK_ALLOWED_HOSTS")
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
            httpcore.UnsupportedProtocol, httpx.InvalidURL, OSError, ValueError) as exc:
        text = excerpt(f"{type(exc).__name__}: {exc}")
    ok = status is not None and 200 <= status < 300
    return Outcome(a.delivery_id, a.tenant_id, status, text, ok, final, (time.perf_counter() - t0) * 1000)


# ---- the pool ---------------------------------------------------------------------------------------
class Dispatcher:
    """`workers` daemon threads sending attempts, at most `per_tenant` of one tenant's at a time.
    Daemon threads: an attempt in flight must not hold up the process's exit (its lease expires
    and it is tried again)."""

    def __init__(self, workers: int, per_tenant: int, allow: egress.AllowList, seconds: float):
        self.workers, self.per_tenant, self.allow, self.seconds = workers, per_tenant, allow, seconds
        self._todo: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._tenants: dict[str, int] = {}
        self._ids: set[str] = set()
        for i in range(workers):
            threading.Thread(target=self._run, daemon=True, name=f"webhook-{i}").start()

    def _run(self) -> None:
        while True:
            a = self._todo.get()
            try:
                out = attempt(a, self.allow)
            except Exception as exc:      # a bug here must not lose the slot
                log.exception("webhook attempt crashed")
                out = Outcome(a.delivery_id, a.tenant_id, None, excerpt(f"internal error: {type(exc).__name__}"),
                              False, False, 0.0)
            self._done.put(out)

    def free(self, tenant_id: str) -> int:
        """How many more of this tenant's attempts may start now."""
        with self._lock:
            total = sum(self._tenants.values())
            return max(0, min(self.per_tenant - self._tenants.get(tenant_id, 0), self.workers - total))

    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def submit(self, a: Attempt) -> None:
        with self._lock:
            self._tenants[a.tenant_id] = self._tenants.get(a.tenant_id, 0) + 1
            self._ids.add(a.delivery_id)
        self._todo.put(a)

    def finished(self) -> list[Outcome]:
        out = []
        while True:
            try:
                o = self._done.get_nowait()
            except queue.Empty:
                return out
            with self._lock:
                self._ids.discard(o.delivery_id)
                left = self._tenants.get(o.tenant_id, 1) - 1
                if left > 0:
                    self._tenants[o.tenant_id] = left
                else:
                    self._tenants.pop(o.tenant_id, None)
            out.append(o)


_shared: dict[tuple, Dispatcher] = {}
_shared_lock = threading.Lock()


def dispatcher_for(settings: Settings) -> Dispatcher:
    """The process's pool for these settings (one per process in practice)."""
    key = (settings.webhook_concurrency, settings.webhook_tenant_concurrency, settings.webhook_allowed_hosts,
           settings.webhook_timeout_seconds)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Dispatcher(max(1, settings.webhook_concurrency), max(1, settings.webhook_tenant_concurrency),
                                      egress.AllowList.parse(settings.webhook_allowed_hosts),
                                      settings.webhook_timeout_seconds)
        return _shared[key]


# ---- the database side ----------------------------------------------------------------------------
def _record(session: Session, o: Outcome) -> None:
    d = session.get(WebhookDelivery, o.delivery_id)
    if d is None:                  # its hook was deleted meanwhile
        return
    d.response_status, d.response_body, d.duration_ms = o.status, o.text, o.duration_ms
    d.attempts += 1
    d.last_attempt_at = utcnow()
    if o.ok:
        d.status = "delivered"
    elif o.final or d.attempts >= MAX_ATTEMPTS:
        d.status = "failed"
    else:
        d.next_attempt_at = utcnow() + timedelta(seconds=BACKOFF_S[min(d.attempts - 1, len(BACKOFF_S) - 1)])


def _due(session: Session, tenant_id: str | None, skip: frozenset[str], limit: int):
    q = select(WebhookDelivery).where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
    if tenant_id is not None:
        q = q.where(WebhookDelivery.tenant_id == tenant_id)
    if skip:
        q = q.where(WebhookDelivery.id.not_in(skip))
    return session.scalars(q.order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()


def _lease(session: Session, d: WebhookDelivery, seconds: float) -> bool:
    """Take the row for one attempt: true when no other worker took it first."""
    now = utcnow()
    taken = session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == d.id, WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .values(next_attempt_at=now + timedelta(seconds=seconds + LEASE_MARGIN_S))
        .execution_options(synchronize_session=False))
    return taken.rowcount == 1


def _attempt_for(session: Session, d: WebhookDelivery, secret_of, seconds: float) -> Attempt | None:
    hook = session.get(Webhook, d.webhook_id)
    if hook is None:
        return None
    body = json.dumps(d.payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Tunelab-Signature": sign(secret_of(hook), int(time.time()), body),
               "Tunelab-Event": d.event, "Tunelab-Delivery": d.id}
    return Attempt(d.id, d.tenant_id, hook.url, body, headers, seconds)


def deliver_due(session: Session, limit: int = 20, timeout: float | None = None,
                secret_of=lambda hook: hook.secret, *, settings: Settings | None = None,
                dispatcher: Dispatcher | None = None) -> int:
    """Record the attempts that finished, then start up to `limit` due ones, fairly across
    tenants. Returns how many started. secret_of: the hook's signing secret in clear (stored
    encrypted by the service). timeout: the total per attempt (default the setting)."""
    settings = settings or get_settings()
    pool = dispatcher or dispatcher_for(settings)
    for o in pool.finished():
        _record(session, o)
    session.commit()
    seconds = timeout if timeout is not None else pool.seconds
    busy = pool.in_flight()
    tenants = session.scalars(select(WebhookDelivery.tenant_id).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
        .group_by(WebhookDelivery.tenant_id).order_by(func.min(WebhookDelivery.next_attempt_at))).all()
    started: list[Attempt] = []
    for tenant_id in tenants:        # oldest due first; each tenant up to its free slots
        room = min(pool.free(tenant_id), limit - len(started), pool.workers - len(busy) - len(started))
        if room <= 0:
            continue
        for d in _due(session, tenant_id, busy, room):
            a = _attempt_for(session, d, secret_of, seconds)
            if a is None:
                d.status = "failed"
            elif _lease(session, d, seconds):
                started.append(a)
    session.commit()         # the leases are visible to other workers before anything is sent
    for a in started:
        pool.submit(a)
    return len(started)
