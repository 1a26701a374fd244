"""The database layer on each backend (SQLite; PostgreSQL when TUNELAB_TEST_POSTGRES_URL is set),
without a server: migrations, and the job queue's guarantees under real concurrency (threads, each
with its own connection, released together by a barrier)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from tunelab.db import Base, Database, migrate
from tunelab.db.engine import MIGRATIONS
from tunelab.db.models import Dataset, Job, JobEvent, Tenant, utcnow
from tunelab.jobs import store
from tunelab.jobs.spec import JobSpec
from tunelab.jobs.status import JobStatus

from .conftest import database_url


@pytest.fixture
def db(backend, tmp_path, request):
    """A migrated, empty database of its own for each test."""
    name = "dbb_" + request.node.originalname.removeprefix("test_")[:30]
    url = database_url(backend, name) or f"sqlite:///{tmp_path / 'tunelab.db'}"
    database = Database(url)
    migrate(database.engine)
    yield database
    database.engine.dispose()      # PostgreSQL: no open connections left to the database


@pytest.fixture
def tenant(db) -> tuple[str, str]:
    """(tenant_id, dataset_id): the rows a job refers to, made directly through the ORM."""
    with db.session() as s:
        t = Tenant(name="tenant-db")
        s.add(t)
        s.flush()
        d = Dataset(tenant_id=t.id, filename="train.csv", bytes=10, status="processed", rows=2)
        s.add(d)
        s.flush()
        return t.id, d.id


def run_together(n: int, fn) -> list:
    """fn(i) in n threads released at once; results in thread order; the first error re-raised."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def body(i):
        try:
            barrier.wait(timeout=60)
            results[i] = fn(i)
        except BaseException as exc:   # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def queue_jobs(db, tenant_id: str, dataset_id: str, n: int) -> list[str]:
    with db.session() as s:
        return [store.create_job(s, tenant_id, JobSpec(dataset_id=dataset_id))[0].id for _ in range(n)]


def status_events(db, job_id: str) -> list[dict]:
    with db.session() as s:
        return [e.data for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                                 JobEvent.type == "status")
                                          .order_by(JobEvent.id))]


def test_migrations_apply_twice_and_match_the_models(db):
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    migrate(db.engine)                       # again, on the same engine: a no-op
    again = Database(db.url)                 # and as a restarted server would, on a new engine
    try:
        migrate(again.engine)
        with again.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
            assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
            # the schema the migrations built is the one the models describe
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diffs == [], diffs
    finally:
        again.engine.dispose()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def test_a_claimed_job_is_not_claimed_again(db, tenant):
    first, second = queue_jobs(db, *tenant, n=2)
    with db.sessions() as s:
        assert store.claim(s, "worker-1", lease_seconds=60).id == first
    with db.sessions() as s:
        job = store.claim(s, "worker-2", lease_seconds=60)
    assert job is not None and job.id == second, "the first job's lease is live"
    with db.sessions() as s:
        assert store.claim(s, "worker-3", lease_seconds=60) is None
    with db.session() as s:
        assert s.get(Job, first).lease_owner == "worker-1"


def test_concurrent_claims_take_each_job_exactly_once(db, tenant):
    job_ids = queue_jobs(db, *tenant, n=5)

    def claim_once(i: int) -> tuple[str, str] | None:
        with db.sessions() as s:
            job = store.claim(s, f"worker-{i}", lease_seconds=60)
            return (job.id, job.lease_owner) if job else None

    first_round = [c for c in run_together(20, claim_once) if c is not None]
    assert first_round, "20 workers and 5 queued jobs, yet no claim succeeded"
    taken = Counter(job_id for job_id, _ in first_round)
    assert max(taken.values()) == 1, f"claimed more than once: {taken}"
    # PostgreSQL: a claimer that meets rows another one has locked skips them, so some of the 20
    # may come back empty while jobs are still queued. Drain what is left, one claim at a time.
    claims = list(first_round)
    for i in range(20, 30):
        with db.sessions() as s:
            job = store.claim(s, f"worker-{i}", lease_seconds=60)
        if job is None:
            break
        claims.append((job.id, job.lease_owner))
    assert Counter(job_id for job_id, _ in claims) == Counter(job_ids), f"each job once: {claims}"
    owner = dict(claims)
    assert len(set(owner.values())) == 5
    with db.session() as s:
        for job in s.scalars(select(Job)):
            assert (job.lease_owner, job.lease_version, job.attempts) == (owner[job.id], 1, 1)
            assert job.lease_expires_at > utcnow()


def test_requeue_expired_lease_is_recorded_as_an_event(db, tenant):
    expired, alive, exhausted = queue_jobs(db, *tenant, n=3)
    with db.session() as s:
        for _ in range(3):
            job = store.claim(s, "worker-dead", lease_seconds=60)
            store.transition(s, job, JobStatus.VALIDATING)
            store.transition(s, job, JobStatus.RUNNING)
        s.get(Job, expired).lease_expires_at = utcnow() - timedelta(seconds=5)
        gone = s.get(Job, exhausted)
        gone.lease_expires_at, gone.attempts = utcnow() - timedelta(seconds=5), 3

    with db.sessions() as s:
        touched = store.requeue_expired(s, max_attempts=3)
    assert sorted(touched) == sorted([expired, exhausted])

    with db.session() as s:
        job = s.get(Job, expired)
        assert (job.status, job.lease_owner, job.lease_expires_at) == ("queued", None, None)
        assert s.get(Job, alive).status == "running"             # its lease is still good
        assert s.get(Job, alive).lease_owner == "worker-dead"
        failed = s.get(Job, exhausted)
        assert (failed.status, failed.error_code) == ("failed", "worker_lost")
        assert failed.finished_at is not None
    assert status_events(db, expired)[-1] == {"from": "running", "to": "queued", "reason": "lease_expired"}
    assert status_events(db, exhausted)[-1] == {"from": "running", "to": "failed"}
    assert [e["to"] for e in status_events(db, alive)] == ["queued", "validating", "running"]

    with db.sessions() as s:                   # requeued: claimable again, a second attempt
        again = store.claim(s, "worker-new", lease_seconds=60)
    assert (again.id, again.attempts, again.lease_version) == (expired, 2, 2)


def test_concurrent_creates_with_one_idempotency_key_make_one_job(db, tenant):
    tenant_id, dataset_id = tenant
    for round_ in range(5):                    # a few rounds: the race has more than one outcome
        key = f"idem-{round_}"

        def create(i: int) -> tuple[str, bool]:
            with db.session() as s:
                job, created = store.create_job(s, tenant_id, JobSpec(dataset_id=dataset_id), key)
                return job.id, created

        (a, a_new), (b, b_new) = run_together(2, create)
        assert a == b
        assert sorted([a_new, b_new]) == [False, True]
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == key)) == 1
        assert status_events(db, a) == [{"to": "queued"}]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 5


def test_a_job_claimed_by_a_worker_that_died_before_starting_it_is_released(db, tenant):
    (job_id,) = queue_jobs(db, *tenant, n=1)
    with db.sessions() as s:
        assert store.claim(s, "doomed", lease_seconds=0.01).id == job_id
    time.sleep(0.05)
    with db.sessions() as s:
        assert store.requeue_expired(s) == [job_id]
    with db.sessions() as s:
        assert store.claim(s, "healthy", lease_seconds=60).id == job_id
