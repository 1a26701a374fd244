"""The name a tuned model gets when its job succeeds: the job's `model_name` when a train job
gave one, else "<dataset name> — <strategy>" (people rename it later; the id stays)."""

from __future__ import annotations

from ..db.models import MAX_NAME, Dataset, Job
from .spec import JobSpec


def strategy_words(strategy: str) -> str:
    """A strategy's name as words ("linear-probe" -> "linear probe")."""
    return str(strategy).replace("-", " ").replace("_", " ")


def default_model_name(dataset_name: str | None, strategy: str) -> str:
    return f"{dataset_name or 'Model'} — {strategy_words(strategy)}"[:MAX_NAME].strip()


def tuned_model_name(session, job: Job, spec: JobSpec, strategy: str) -> str:
    if spec.kind == "train" and spec.model_name:
        return spec.model_name[:MAX_NAME]
    ds = session.get(Dataset, spec.dataset_id) if spec.dataset_id else None
    name = ds.name if ds is not None and ds.tenant_id == job.tenant_id else None
    return default_model_name(name, strategy)
