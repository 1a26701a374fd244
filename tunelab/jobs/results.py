"""A finished training job's metrics as OpenAI's `result_files`: one CSV a job, a step a row
(step, train_loss, train_accuracy, valid_loss, valid_mean_token_accuracy), stored encrypted like
every file and readable through /v1/files/{id}/content."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Dataset, Job, JobEvent
from ..security.storage import dataset_store

PURPOSE = "fine-tune-results"
KIND = "results"
COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def metrics_csv(session: Session, job: Job) -> bytes | None:
    """The job's training progress, one row a step it reported; None when it trained nothing."""
    rows: dict[int, dict] = {}
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "progress")
                             .order_by(JobEvent.id))
    for e in events:
        d = e.data or {}
        if d.get("phase") != "train" or d.get("step") is None or d.get("loss") is None:
            continue
        row = rows.setdefault(int(d["step"]), {"step": int(d["step"])})
        row["train_loss"] = d["loss"]
        if d.get("eval_loss") is not None:
            row["valid_loss"] = d["eval_loss"]
    if not rows:
        return None
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for step in sorted(rows):
        writer.writerow(rows[step])
    return out.getvalue().encode()


def store_result_file(session: Session, home, job: Job) -> str | None:
    """The job's metrics CSV as one of the tenant's files (purpose fine-tune-results): its id."""
    data = metrics_csv(session, job)
    if data is None:
        return None
    stored = dataset_store(home, job.tenant_id).import_bytes(data, "step_metrics.csv", KIND)
    row = Dataset(tenant_id=job.tenant_id, filename=f"{job.id}-step_metrics.csv", purpose=PURPOSE, bytes=len(data),
                  sha256=stored.sha256, status="processed", rows=data.count(b"\n") - 1,
                  report={"kind": KIND, "job_id": job.id}, stats={})
    session.add(row)
    session.flush()
    return row.id
