"""The fair claim (jobs/scheduling.py) on each backend under real concurrency, without a server:
many workers claiming at once take each job once, and never more GPUs than a tenant's quota
(PostgreSQL: the claim's advisory lock; SQLite: its single writer)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from tunelab.billing import quotas
from tunelab.db.models import Dataset, Job, JobEvent, Tenant
from tunelab.jobs.devices import Devices, Gpu, Inventory
from tunelab.jobs.scheduling import Scheduler

from .test_db_backends import db, queue_jobs, run_together, tenant  # noqa: F401  (fixtures)


def scheduler(gpus: int = 0, max_jobs: int = 1) -> Scheduler:
    box = Devices(Inventory("node", 4, tuple(Gpu(i) for i in range(gpus))), max_jobs)
    return Scheduler(box, lambda held: held.placement(box.inv, "test", "w", {}))


def claim_with(db, sched: Scheduler, worker: str):
    with db.sessions() as s:
        got = sched.claim(s, worker, lease_seconds=60)
        return got[0].id if got else None


def test_many_workers_take_each_job_once(db, tenant):
    job_ids = queue_jobs(db, *tenant, n=4)
    workers = [scheduler() for _ in range(8)]
    taken = [j for j in run_together(8, lambda i: claim_with(db, workers[i], f"w{i}")) if j]
    assert taken and max(Counter(taken).values()) == 1, taken
    for i in range(8, 16):          # the rest, one claim at a time (PostgreSQL skipped locked rows)
        got = claim_with(db, scheduler(), f"w{i}")
        if got:
            taken.append(got)
    assert sorted(taken) == sorted(job_ids)
    with db.session() as s:
        assert all(j.placement["devices"] == ["cpu x4"] for j in s.scalars(select(Job)))


def test_concurrent_claims_keep_the_tenants_gpus_quota(db, tenant):
    tenant_id, _ = tenant
    with db.session() as s:
        quotas.set_limits(s, tenant_id, {"gpus": 1})
    job_ids = queue_jobs(db, *tenant, n=4)
    workers = [scheduler(gpus=1) for _ in range(6)]       # six workers with a free GPU each
    taken = [j for j in run_together(6, lambda i: claim_with(db, workers[i], f"w{i}")) if j]
    assert len(taken) == 1, f"a quota of 1 GPU, yet {len(taken)} jobs claimed: {taken}"
    assert claim_with(db, scheduler(gpus=1), "late") is None
    with db.session() as s:
        waiting = s.scalars(select(JobEvent).where(JobEvent.job_id.in_(set(job_ids) - set(taken)),
                                                   JobEvent.type == "log")).all()
        assert waiting and all("your quota is 1 and 1 is in use" in e.message for e in waiting)
        queued = [s.get(Job, j) for j in set(job_ids) - set(taken)]
        assert all(j.progress["phase"] == "waiting" for j in queued)


def test_a_tenant_with_fewer_jobs_running_goes_first(db, tenant):
    first_tenant, dataset = tenant
    with db.session() as s:
        other = Tenant(name="tenant-other")
        s.add(other)
        s.flush()
        d = Dataset(tenant_id=other.id, filename="t.csv", bytes=10, status="processed", rows=2)
        s.add(d)
        s.flush()
        other_id, other_ds = other.id, d.id
    mine = queue_jobs(db, first_tenant, dataset, n=3)
    theirs = queue_jobs(db, other_id, other_ds, n=1)
    sched = scheduler(max_jobs=4)
    # the first tenant's oldest; then the other (none running against one); then the first's rest
    assert [claim_with(db, sched, "w") for _ in range(4)] == [mine[0], theirs[0], mine[1], mine[2]]
