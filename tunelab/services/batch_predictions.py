"""Batch predictions for a tenant: a file of texts labelled by one of its tuned classifiers, as a
job (kind batch-predict, run by the worker: jobs/batch_predict.py).

Everything checkable is checked when the job is created: the tuned model is the tenant's (another
tenant's is a missing one: 404) and labels texts (its task serves `classify`, as the task registry
says); the file is the tenant's. The file of texts is stored like any upload (encrypted, a
`batch` file: it is input, never training data) or an existing file is named; its rows are
counted for the estimate. The output is read back streamed, decrypted a piece at a time."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy.orm import Session

from ..billing.estimate import Estimate, batch_estimate
from ..db.models import Dataset, Job, TunedModel
from ..db.scoped import TenantScope
from ..jobs import batch_predict
from ..jobs.spec import BATCH, JobSpec
from ..strategies import ConfigError, task_named


class JobRejected(ValueError):
    """What services.jobs.JobRejected says (it converts this one): the job cannot run, why, and the
    field at fault."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_job"):
        super().__init__(message)
        self.param, self.code = param, code

PURPOSE = "batch"              # OpenAI's purpose for a batch's input file
INPUT_KIND = "batch-input"
SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json")
DEFAULT_PARAMS = 110_000_000


def model_task(model: TunedModel):
    """The Task a tuned model was trained for (older rows: classification)."""
    return task_named((model.metrics or {}).get("task") or "text-classification")


def is_classifier(model: TunedModel) -> bool:
    try:
        return model_task(model).serving == "classify"
    except (ConfigError, KeyError, ValueError):
        return False


def check(scope: TenantScope, spec: JobSpec) -> JobSpec:
    """JobRejected unless the spec can run for this tenant: its model, then its file."""
    model = scope.find(TunedModel, spec.tuned_model)
    if model is None:
        raise JobRejected(f"No tuned model with id {spec.tuned_model!r}.", "tuned_model", "model_not_found")
    if not is_classifier(model):
        raise JobRejected(f"{model.id} is a {model_task(model).title} model: it generates text and does not label "
                          "texts; batch predictions need a classifier.", "tuned_model", "not_a_classifier")
    from .predictions import model_inputs

    if model_inputs(model) == "image":
        raise JobRejected(f"{model.id} classifies images: batch predictions on image files are not supported yet; "
                          f"use the predict API (POST /api/v1/models/{model.id}/predict-images, 16 images a call).",
                          "tuned_model", "not_a_text_model")
    row = scope.find(Dataset, spec.dataset_id)
    if row is None:
        raise JobRejected(f"No file with id {spec.dataset_id!r}.", "dataset_id", "dataset_not_found")
    if row.purpose == "fine-tune-results" or not row.sha256:
        raise JobRejected(f"{row.id} holds a job's results, not texts to label.", "dataset_id", "invalid_input_file")
    return spec


def _params(model: TunedModel) -> int:
    from ..models.catalog import catalog_spec

    try:
        found = catalog_spec(model.base_model)
        return int(found.parameters or DEFAULT_PARAMS) if found is not None else DEFAULT_PARAMS
    except (LookupError, ValueError, TypeError):
        return DEFAULT_PARAMS


def estimate(session: Session, tenant_id: str, spec: JobSpec) -> Estimate:
    scope = TenantScope(session, tenant_id)
    model, row = scope.find(TunedModel, spec.tuned_model), scope.find(Dataset, spec.dataset_id)
    return batch_estimate(session, int(row.rows or 0) if row else 0, _params(model) if model else DEFAULT_PARAMS)


def count_rows(path: Path, text_column: str | None = None) -> int:
    """Rows to label in a file (read as the job will read it); BatchInputError when it cannot be."""
    return sum(1 for _ in batch_predict.read_texts(path, text_column))


def store_input(session: Session, tenant_id: str, home: Path, path: Path, filename: str,
                text_column: str | None = None) -> Dataset:
    """An uploaded file of texts stored (encrypted) as the tenant's `batch` file. ValueError (with
    what to do) when it holds no text or is not a format the job reads."""
    from ..security.storage import dataset_store
    from .datasets import upload_name

    name = upload_name(filename)
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{name}: upload a CSV, TSV, JSONL or text file (one text a line), not {suffix or 'a file without a suffix'}.")
    named = path.with_name(path.name + suffix)
    path.rename(named)
    try:
        rows = count_rows(named, text_column)
        data = named.read_bytes()
    except (ValueError, UnicodeError, csv.Error) as exc:       # BatchInputError is a ValueError
        raise ValueError(f"{name} could not be read as texts: {exc}") from None
    finally:
        named.rename(path)
    if rows == 0:
        raise ValueError(f"{name} holds no text to label.")
    stored = dataset_store(home, tenant_id).import_bytes(data, name, INPUT_KIND)
    row = Dataset(filename=name, purpose=PURPOSE, bytes=len(data), sha256=stored.sha256, status="processed",
                  rows=rows, text_column=text_column, report={"kind": INPUT_KIND}, stats={})
    return TenantScope(session, tenant_id).add(row)


def spec_for(model_id: str, file_id: str, top_k: int, fmt: str, text_column: str | None) -> JobSpec:
    return JobSpec(kind=BATCH, tuned_model=model_id, dataset_id=file_id, top_k=top_k, output_format=fmt,
                   text_column=text_column or None)


class OutputNotReady(LookupError):
    pass


def output_of(job: Job) -> dict:
    """The job's output (path, filename, media type); OutputNotReady before it succeeded."""
    out = (job.result or {}).get("output") if job.kind == BATCH else None
    if job.status != "succeeded" or not isinstance(out, dict) or not out.get("path"):
        raise OutputNotReady(f"{job.id} has no output to download"
                             + ("" if job.kind == BATCH else ": it is not a batch-prediction job")
                             + (f" (it is {job.status})." if job.kind == BATCH else "."))
    return out


def download_name(job: Job, out: dict) -> str:
    return f"{job.id}-{out.get('filename') or 'predictions.csv'}"


def output_chunks(home: Path, job: Job):
    out = output_of(job)
    return batch_predict.output_chunks(home, job.tenant_id, Path(out["path"]), out["filename"])


def output_preview(home: Path, job: Job, limit: int = 10) -> list[str]:
    try:
        return batch_predict.preview(output_chunks(home, job), limit)
    except (OutputNotReady, OSError):
        return []
