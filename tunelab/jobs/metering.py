"""The job side of billing: the worker meters each job's process on every heartbeat (CPU time of
its process tree, or GPU wall time) and pauses the job when credit runs out; status transitions
settle (or, on pause, release) the job's reservation (jobs/billing_hooks.py); a top-up requeues paused jobs, which
resume from their checkpoint; housekeeping charges storage and serving and lapses old grants."""

from __future__ import annotations

import json
import logging
import os
import time

import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..billing import ledger, settlement, usage
from ..billing.devices import detect
from ..billing.metering import Cursor, MeterResult, record
from ..billing.quotas import usage as quota_usage
from ..db.ledger import BillingAccount, JobBilling
from ..db.models import Job
from . import store
from .status import JobStatus

log = logging.getLogger("tunelab.billing")


class ProcessSampler:
    """CPU seconds used by a job's process tree so far. Each process's own user+system time, the
    highest value seen per process (so a process that has exited still counts what it used; its
    parent's children_* totals are not added, which would count it twice)."""

    def __init__(self, execution):
        proc = getattr(execution, "proc", None)
        self.pid = getattr(proc, "pid", None)
        self.seen: dict[tuple[int, float], float] = {}
        self.t0 = time.monotonic()

    def sample(self) -> float:
        if self.pid is None:      # an executor that hides its process: wall time x cores
            return (time.monotonic() - self.t0) * detect()[1]
        try:
            root = psutil.Process(self.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = []
        for p in family:
            try:
                t = p.cpu_times()
                key = (p.pid, p.create_time())
                self.seen[key] = max(self.seen.get(key, 0.0), t.user + t.system)
            except psutil.Error:
                continue
        return sum(self.seen.values())


class JobMeter:
    """One attempt of one job, metered by the worker that runs it."""

    def __init__(self, job_id: str, tenant_id: str, execution, heartbeat_s: float):
        self.job_id, self.tenant_id, self.heartbeat_s = job_id, tenant_id, heartbeat_s
        self.device, self.units = detect()
        self.sampler = ProcessSampler(execution)
        self.cursor, self.pos = Cursor(), -1
        self.cpu_ms = self.posted_ms = 0
        self.t_last = time.monotonic()

    def observe(self, line: str) -> None:
        """Follow the job's work position from its report lines."""
        try:
            msg = json.loads(line)
        except (json.JSONDecodeError, TypeError):
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "phase" and msg.get("phase") == "running":
            self.pos = max(self.pos, 0)
        elif msg.get("type") == "progress" and msg.get("phase") == "train" and isinstance(msg.get("step"), int):
            self.pos = max(self.pos, msg["step"], 0)

    def sample(self) -> None:
        self.cpu_ms = int(self.sampler.sample() * 1000)

    def tick(self, session: Session) -> MeterResult:
        """Post the compute used since the last tick."""
        self.sample()
        now = time.monotonic()
        wall_ms = int((now - self.t_last) * 1000)
        self.t_last = now
        used = self.cpu_ms if self.device == "cpu" else self.posted_ms + wall_ms * self.units
        delta, self.posted_ms = used - self.posted_ms, used
        cursor = Cursor(self.cursor.pos, self.cursor.ms_at_pos)
        try:
            with session.begin_nested():       # a failure undoes this reading only
                return record(session, self.tenant_id, self.job_id, self.cursor, self.pos, delta, wall_ms,
                              device=self.device, units=self.units, heartbeat_s=self.heartbeat_s)
        except Exception:          # metering must never take a job down; the next tick catches up
            self.posted_ms -= delta
            self.cursor = cursor
            log.exception("metering failed", extra={"job": self.job_id})
            return MeterResult()


def resume_paused(session: Session, tenant_id: str) -> list[str]:
    """After credit came in: requeue paused jobs, oldest first, as far as the credit reserves them."""
    acct = ledger.lock_account(session, tenant_id)
    paused = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.status == JobStatus.PAUSED.value)
                             .order_by(Job.created_at)).all()
    resumed = []
    for job in paused:
        jb = ledger.job_billing(session, job.id)
        if jb is None or jb.state != "paused" or not settlement.try_resume(session, acct, jb):
            continue
        job.cancel_requested = False
        store.transition(session, job, JobStatus.QUEUED, "Credit topped up: requeued to resume from its checkpoint.",
                         reason="credit_topped_up")
        resumed.append(job.id)
    return resumed


def housekeeping(session: Session) -> dict:
    """One pass over every tenant: lapse expired grants, charge storage and serving, and resume
    paused jobs whose tenant has credit again (a top-up made from another process)."""
    done = {"expired": 0, "storage": 0, "serving": 0, "resumed": []}
    for tenant_id in session.scalars(select(BillingAccount.tenant_id)).all():
        done["expired"] += ledger.expire_grants(session, tenant_id)
        done["storage"] += usage.bill_storage(session, tenant_id, quota_usage(session, tenant_id)["storage_bytes"])
        done["serving"] += usage.bill_serving(session, tenant_id)
        if session.scalar(select(JobBilling.job_id).where(JobBilling.tenant_id == tenant_id,
                                                          JobBilling.state == "paused").limit(1)):
            done["resumed"] += resume_paused(session, tenant_id)
        session.commit()
    return done


def housekeeping_loop(worker) -> None:
    """The worker's billing thread: `housekeeping` every TUNELAB_BILLING_HOUSEKEEPING_SECONDS (300)."""
    interval = float(os.environ.get("TUNELAB_BILLING_HOUSEKEEPING_SECONDS", 300))
    while not worker.stopping.wait(interval):
        try:
            with worker.db.session() as s:
                done = housekeeping(s)
            if done["resumed"]:
                log.info("paused jobs resumed", extra={"jobs": done["resumed"]})
        except Exception:
            log.exception("billing housekeeping failed")
