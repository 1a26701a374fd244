"""What `tunelab demo` sets up: a demo tenant with a fresh key, every sample dataset, and one example
run, so that a newcomer opens a working product with something finished to look at."""

from __future__ import annotations

import json

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from ..db.models import Dataset, Job, Tenant, User
from ..jobs.spec import JobSpec
from ..jobs.status import JobStatus
from .datasets import import_dataset
from .tenants import create_key, create_tenant

# (file, the file whose test set it is): uploaded in this order; a missing file is skipped.
SAMPLES: list[tuple[str, str | None]] = [("sms_spam.tsv", None), ("banking77_train.csv", None),
                                          ("banking77_test.csv", "banking77_train.csv"),
                                          ("financial_phrasebank.csv", None)]
# The example run: the cheapest strategy that gives a real model on the first sample, so that it
# is finished by the time the user has signed in (~30 s on 2 CPU cores).
# The example run the demo queues (a data file, like the catalogs): the strategy that answers in
# seconds on the sample that shows it best.
EXAMPLE = json.loads((Path(__file__).with_name("demo.json")).read_text())


@dataclass
class DemoReady:
    key: str
    samples: list[str] = field(default_factory=list)          # what the tenant has, as shown to the user
    first_dataset: str | None = None
    example_job_id: str | None = None
    example_what: str = ""
    example_state: str = ""
    problems: list[str] = field(default_factory=list)


def _tenant(session: Session) -> tuple[Tenant, str]:
    tenant = session.query(Tenant).filter_by(name="demo").first()
    if tenant is None:
        tenant, _user, key = create_tenant(session, "demo", "demo@example.com")
        return tenant, key
    user = session.query(User).filter_by(tenant_id=tenant.id, role="admin").first()
    key, _ = create_key(session, user, "demo")
    return tenant, key


def _import_samples(session: Session, home: Path, tenant_id: str, folder: Path, ready: DemoReady) -> dict[str, Dataset]:
    have = {d.filename: d for d in session.query(Dataset).filter_by(tenant_id=tenant_id)}
    if not folder.is_dir():
        ready.problems.append(f"no sample folder at {folder} (set TUNELAB_SAMPLES): upload your own files")
    for name, test_of in SAMPLES:
        src = folder / name
        if name not in have and src.is_file():
            tmp = Path(tempfile.mkdtemp()) / name
            shutil.copy(src, tmp)
            try:
                have[name] = import_dataset(session, tenant_id, home, tmp, name)
            except Exception as exc:     # a sample that does not import is not fatal to a demo
                ready.problems.append(f"sample {name} not imported: {exc}")
            finally:
                shutil.rmtree(tmp.parent, ignore_errors=True)
        if name in have:
            ready.samples.append(f"{name} (the test set of {test_of})" if test_of else name)
    return have


def _example_job(session: Session, tenant_id: str, datasets: dict[str, Dataset], insecure: bool,
                 ready: DemoReady) -> None:
    from ..jobs.executors import SandboxUnavailable, executor_for
    from .jobs import JobRejected, submit

    try:
        executor_for(insecure)
    except SandboxUnavailable as exc:
        ready.problems.append(f"{exc} Run `scripts/system-deps demo`.")
        return
    source = datasets.get(EXAMPLE["file"])
    if source is None:
        return
    ready.example_what = f"{EXAMPLE['strategy']} on {EXAMPLE['file']}"
    job = (session.query(Job).filter(Job.tenant_id == tenant_id)
           .order_by(Job.created_at).first())
    if job is None:
        spec = JobSpec(kind="train", dataset_id=source.id, strategy=EXAMPLE["strategy"], suffix=EXAMPLE["suffix"])
        try:
            job, _ = submit(session, tenant_id, spec, idempotency_key="demo-example")
        except (JobRejected, ValueError) as exc:
            ready.problems.append(f"the example run was not started: {exc}")
            return
    ready.example_job_id = job.id
    ready.example_what = f"{(job.spec or {}).get('strategy') or 'compare'} on {source.filename}"
    if job.status == JobStatus.SUCCEEDED:
        ready.example_state = "finished"
    elif not JobStatus(job.status).is_terminal:
        ready.example_state = "training now, finished within a minute or two"
    else:
        ready.example_state = job.status


def prepare_demo(session: Session, home: Path, samples: Path) -> DemoReady:
    from ..settings import get_settings

    tenant, key = _tenant(session)
    ready = DemoReady(key=key)
    datasets = _import_samples(session, home, tenant.id, samples, ready)
    ready.first_dataset = next(iter(datasets), None)
    session.flush()
    _example_job(session, tenant.id, datasets, get_settings().insecure_mode, ready)
    return ready
