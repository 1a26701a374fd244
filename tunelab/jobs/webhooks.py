"""Webhooks for job events: one delivery row per (hook, event), signed with the hook's secret
(HMAC-SHA256 over "<timestamp>.<body>", header `Tunelab-Signature: t=<ts>,v1=<hex>`), retried
with exponential backoff, every attempt's response kept for the tenant to see."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Job, Webhook, WebhookDelivery, utcnow

EVENTS = ("succeeded", "failed", "cancelled", "paused")
MAX_ATTEMPTS = 6
BACKOFF_S = (1, 4, 15, 60, 300)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def enqueue(session: Session, job: Job, event: str) -> int:
    hooks = session.scalars(select(Webhook).where(Webhook.tenant_id == job.tenant_id)).all()
    payload = {"type": f"fine_tuning.job.{event}", "job_id": job.id, "status": job.status,
               "fine_tuned_model": job.fine_tuned_model, "error_code": job.error_code,
               "created_at": int(time.time())}
    n = 0
    for hook in hooks:
        if not hook.events or event in hook.events:
            session.add(WebhookDelivery(tenant_id=job.tenant_id, webhook_id=hook.id, job_id=job.id,
                                        event=event, payload=payload))
            n += 1
    return n


def deliver_due(session: Session, limit: int = 20, timeout: float = 5.0, secret_of=lambda hook: hook.secret) -> int:
    """secret_of: the hook's signing secret in clear (stored encrypted by the service)."""
    import httpx

    due = session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
        .order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
    for d in due:
        hook = session.get(Webhook, d.webhook_id)
        if hook is None:
            d.status = "failed"
            continue
        body = json.dumps(d.payload, separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "Tunelab-Signature": sign(secret_of(hook), ts, body),
                   "Tunelab-Event": d.event, "Tunelab-Delivery": d.id}
        t0 = time.perf_counter()
        try:
            r = httpx.post(hook.url, content=body, headers=headers, timeout=timeout)
            d.response_status, d.response_body = r.status_code, r.text[:2000]
            ok = 200 <= r.status_code < 300
        except httpx.HTTPError as exc:
            d.response_status, d.response_body, ok = None, f"{type(exc).__name__}: {exc}"[:2000], False
        d.duration_ms = (time.perf_counter() - t0) * 1000
        d.attempts += 1
        d.last_attempt_at = utcnow()
        if ok:
            d.status = "delivered"
        elif d.attempts >= MAX_ATTEMPTS:
            d.status = "failed"
        else:
            d.next_attempt_at = utcnow() + timedelta(seconds=BACKOFF_S[min(d.attempts - 1, len(BACKOFF_S) - 1)])
    session.commit()
    return len(due)
