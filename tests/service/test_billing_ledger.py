"""The billing layer on each database backend, without a server: the metering split never charges
re-done work, charges add up exactly to the metered compute, a job that outruns its reservation
extends it and then reports exhaustion, pause/resume/settle move the reservation, grants lapse,
storage and serving are charged, and reconcile catches a tampered balance or a double charge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tunelab.billing import ledger, prices, settlement
from tunelab.billing.estimate import JobShape, estimate
from tunelab.billing.metering import Cursor, record, split
from tunelab.billing.money import to_micro, usd, usd_short
from tunelab.billing.reconcile import reconcile
from tunelab.billing.usage import bill_serving, bill_storage, count_served
from tunelab.db import Database, migrate
from tunelab.db.ledger import BillingAccount, LedgerEntry
from tunelab.db.models import Dataset, Tenant, utcnow
from tunelab.jobs import store
from tunelab.jobs.spec import JobSpec

from .conftest import database_url

PRICE = prices.current().cpu_core_hour


@pytest.fixture
def db(backend, tmp_path, request):
    name = "bl_" + request.node.originalname.removeprefix("test_")[:30]
    database = Database(database_url(backend, name) or f"sqlite:///{tmp_path / 'tunelab.db'}")
    migrate(database.engine)
    yield database
    database.engine.dispose()


@pytest.fixture
def tenant(db) -> tuple[str, str]:
    with db.session() as s:
        t = Tenant(name="billing-db")
        s.add(t)
        s.flush()
        d = Dataset(tenant_id=t.id, filename="train.csv", bytes=10, status="processed", rows=400,
                    stats={"num_labels": 10, "length_unit": "tokens", "length": {"mean": 16.0}})
        s.add(d)
        s.flush()
        return t.id, d.id


def new_job(db, tenant_id, dataset_id, reserve: int = 1_000) -> str:
    """A job with an estimate whose top is `reserve` micro-dollars, reserved."""
    shape = JobShape("full", "minilm", 22_700_000, 400, None, 16.0, 10, {"epochs": 2, "min_steps": 0})
    with db.session() as s:
        job, _ = store.create_job(s, tenant_id, JobSpec(dataset_id=dataset_id, strategy="full"))
        est = estimate(s, [shape], device="cpu", units=2)
        est.cost_high = reserve
        acct = ledger.lock_account(s, tenant_id)
        settlement.open_job(s, acct, job.id, est)
        return job.id


def meter(db, tenant_id, job_id, cursor, pos, ms):
    with db.session() as s:
        return record(s, tenant_id, job_id, cursor, pos, ms, ms, device="cpu", units=2, heartbeat_s=2.0)


def test_money_is_integer_micro_dollars():
    assert to_micro("100") == 100_000_000 and to_micro(0.1) == 100_000 and to_micro("0.0000005") == 1
    assert usd(123_456_789) == "123.456789" and usd(-5) == "-0.000005"
    assert usd_short(12_500_000) == "$12.50" and usd_short(4_200) == "$0.0042"
    with pytest.raises(ValueError):
        to_micro("ten dollars")


def test_split_charges_new_work_only():
    # first attempt: setup, then steps 1..10, then evaluation at step 10
    frontier = (-1, 0)
    cur, billed = Cursor(), 0
    for pos, ms in [(-1, 500), (0, 300), (4, 1000), (10, 1500), (10, 700)]:
        cut = split(*frontier, cur, pos, ms)
        frontier, billed = (cut.frontier_pos, cut.frontier_ms), billed + cut.billable_ms
    assert billed == 4000 and frontier == (10, 700)
    # second attempt resumes from a checkpoint at step 6: setup and steps 7..10 were paid for,
    # and so were the first 700 ms spent at step 10; the rest is new
    cur, billed2, ranges = Cursor(), 0, []
    for pos, ms in [(-1, 500), (0, 200), (6, 100), (9, 800), (10, 300), (10, 600), (10, 200), (12, 400)]:
        cut = split(*frontier, cur, pos, ms)
        frontier, billed2 = (cut.frontier_pos, cut.frontier_ms), billed2 + cut.billable_ms
        if cut.billable_ms:
            ranges.append((cut.step_from, cut.step_to))
    assert billed2 == 100 + 400 and frontier == (12, 0)
    assert ranges == [(10, 10), (10, 12)]
    # crossing the frontier within one reading: only the steps past it
    cut = split(5, 0, Cursor(pos=3), 9, 600)
    assert (cut.billable_ms, cut.step_from, cut.step_to) == (400, 5, 9)


def test_meter_charges_exactly_the_billed_compute(db, tenant):
    tenant_id, ds = tenant
    job_id = new_job(db, tenant_id, ds, reserve=10_000)
    cur = Cursor()
    for i, (pos, ms) in enumerate([(-1, 1234), (0, 77), (3, 4999), (7, 3), (7, 1), (9, 8888)]):
        meter(db, tenant_id, job_id, cur, pos, ms)
    with db.session() as s:
        jb = ledger.job_billing(s, job_id)
        charges = s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "charge")).all()
        assert jb.billed_ms == jb.metered_ms == 15202
        assert sum(c.amount for c in charges) == jb.charged == 15202 * PRICE // 3_600_000
        assert all(c.price_version == prices.current().version for c in charges)
    with db.session() as s:
        settlement.settle(s, tenant_id, job_id, outcome="succeeded", attempts=1, strategy="full", model="minilm")
    with db.session() as s:
        jb = ledger.job_billing(s, job_id)
        acct = ledger.get_account(s, tenant_id)
        assert jb.state == "settled" and jb.reserved == 0 and acct.reserved == 0
        assert acct.spent == jb.charged and acct.available == 100_000_000 - jb.charged
        assert jb.actual["cost"] == jb.charged and jb.actual["compute_ms"] == 15202
        assert reconcile(s)["ok"]


def test_outrunning_the_reservation_extends_it_then_exhausts(db, tenant):
    tenant_id, ds = tenant
    with db.session() as s:                            # leave the tenant $0.01 beyond the job's $0.001
        ledger.adjust(s, tenant_id, -(100_000_000 - 11_000), memo="test")
    job_id = new_job(db, tenant_id, ds, reserve=1_000)
    cur, pos, exhausted_at = Cursor(), 0, None
    for i in range(200):
        pos += 1
        result = meter(db, tenant_id, job_id, cur, pos, 20_000)       # 20 core-seconds a reading
        if result.exhausted:
            exhausted_at = i
            break
    assert exhausted_at is not None
    with db.session() as s:
        acct = ledger.get_account(s, tenant_id)
        jb = ledger.job_billing(s, job_id)
        assert acct.available == 0 and jb.charged <= 11_000
        assert any(e.memo.startswith("reservation extended") for e in
                   s.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job_id)))
        settlement.pause(s, tenant_id, job_id)
    with db.session() as s:
        jb = ledger.job_billing(s, job_id)
        assert jb.state == "paused" and jb.reserved == 0
        acct = ledger.lock_account(s, tenant_id)
        assert not settlement.try_resume(s, acct, jb)       # nothing to resume with
        ledger.grant(s, tenant_id, 50_000, kind="topup")
        acct = ledger.lock_account(s, tenant_id)
        assert settlement.try_resume(s, acct, ledger.job_billing(s, job_id))
    with db.session() as s:
        assert ledger.job_billing(s, job_id).state == "open"
        assert reconcile(s)["ok"]


def test_grants_lapse_keeping_what_was_spent(db, tenant):
    tenant_id, ds = tenant
    with db.session() as s:
        ledger.grant(s, tenant_id, 2_000_000, kind="grant", expires_at=utcnow() + timedelta(days=1))
    job_id = new_job(db, tenant_id, ds, reserve=500_000)
    with db.session() as s:                # nothing lapses before its time
        assert ledger.expire_grants(s, tenant_id) == 0
    with db.session() as s:                # credit expiring first is spent first: the reservation
        lapsed = ledger.expire_grants(s, tenant_id, now=utcnow() + timedelta(days=2))
        assert lapsed == 2_000_000 - 500_000
        assert ledger.expire_grants(s, tenant_id, now=utcnow() + timedelta(days=3)) == 0   # once
    with db.session() as s:
        assert ledger.get_account(s, tenant_id).available == 100_000_000
        assert reconcile(s)["ok"], reconcile(s)
    assert job_id


def test_storage_and_serving_are_charged(db, tenant):
    tenant_id, _ = tenant
    t0 = utcnow()
    with db.session() as s:
        assert bill_storage(s, tenant_id, 10**9, now=t0) == 0              # starts the clock
        assert bill_storage(s, tenant_id, 10**9, now=t0 + timedelta(days=1)) == prices.current().gb_day
        count_served(s, tenant_id, 2_500)
        assert bill_serving(s, tenant_id) == 2_500 * prices.current().per_1k_requests // 1000
        assert bill_serving(s, tenant_id) == 0
    with db.session() as s:
        cats = {e.category for e in s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "charge"))}
        assert cats == {"storage", "serving"} and reconcile(s)["ok"]


def test_reconcile_catches_tampering_and_double_billing(db, tenant):
    tenant_id, ds = tenant
    job_id = new_job(db, tenant_id, ds, reserve=10_000)
    cur = Cursor()
    meter(db, tenant_id, job_id, cur, 5, 9_000)
    with db.session() as s:
        assert reconcile(s)["ok"]
        s.execute(update(BillingAccount).where(BillingAccount.tenant_id == tenant_id)
                  .values(available=BillingAccount.available + 1))
    with db.session() as s:
        report = reconcile(s)
        assert not report["ok"] and "available: cached" in report["tenants"][0]["problems"][0]
        s.execute(update(BillingAccount).where(BillingAccount.tenant_id == tenant_id)
                  .values(available=BillingAccount.available - 1))
        # a second charge for steps (2, 5], already billed
        acct, jb = ledger.lock_account(s, tenant_id), ledger.job_billing(s, job_id)
        ledger.charge(s, acct, jb, 10, quantity=1000, unit="cpu_ms", step_from=2, step_to=5)
        jb.billed_ms += 1000
    with db.session() as s:
        problems = reconcile(s)["tenants"][0]["problems"]
        assert any("steps (2, 5] billed again" in p for p in problems), problems


def test_calibration_learns_throughput_not_early_stopping(db):
    """A run that stopped early trained fewer tokens than estimated: the calibration compares the
    metered compute with the raw model for the tokens really trained, so it learns throughput."""
    from tunelab.billing.estimate import calibration, observe, raw_seconds, work_done_raw

    shape = JobShape("full", "minilm", 22_700_000, 800, None, 16.0, 10, {"epochs": 3, "min_steps": 200})
    with db.session() as s:
        est = estimate(s, [shape], device="cpu", units=2).to_dict()
        train = next(t for t in est["basis"][0]["terms"] if t["term"] == "train")
        raw = raw_seconds(shape, "cpu")[0] * 1000
        done = work_done_raw(est, train["tokens"] // 2)           # it stopped half-way
        assert abs(done - (raw - train["seconds"] * 500)) < 5
        # this machine is twice as slow as the shipped constants say
        observe(s, "full|minilm|cpu", done, int(2 * done), 0, 2, "cpu", estimated_ms=est["compute_ms"])
        factor, _, spread = calibration(s, "full|minilm|cpu")
        assert factor == pytest.approx(1.5)                      # half-way from 1.0 to the 2.0 measured
        assert spread > 0.1
