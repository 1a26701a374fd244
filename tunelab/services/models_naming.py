"""Names people give datasets and tuned models (the ids stay for the API), and which tuned model
is the best of each dataset: the lists and the playground put it first, marked "best for <dataset>".

"Best" is the comparison's measure: the model's task quality metric (macro-F1 for a classifier,
token F1 or preference accuracy for a generative model; higher is better), a tie going to the newer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..db.models import MAX_NAME, Dataset, Job, TunedModel
from ..db.scoped import TenantScope
from ..strategies import task_named


def clean_name(name: str) -> str:
    """The name as stored: trimmed, at most MAX_NAME characters (the API's body checked the rest)."""
    return name.strip()[:MAX_NAME].strip()


def rename_dataset(scope: TenantScope, dataset_id: str, name: str) -> tuple[Dataset, str]:
    """(the renamed row, its old name); NotFound for an id that is not the tenant's."""
    row = scope.get(Dataset, dataset_id, "dataset")
    old, row.name = row.name, clean_name(name)
    return row, old


def rename_model(scope: TenantScope, model_id: str, name: str) -> tuple[TunedModel, str]:
    row = scope.get(TunedModel, model_id, "model")
    old, row.name = row.name, clean_name(name)
    return row, old


def quality_of(metrics: dict | None) -> float | None:
    """The model's task quality (what a comparison ranks by), or None when it has none."""
    metrics = metrics or {}
    try:
        task = task_named(metrics.get("task") or "text-classification")
    except KeyError:
        task = task_named("text-classification")
    value = metrics.get(task.quality)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Described:
    """A tuned model as the pages show it: its name, its dataset's, whether it is that dataset's best."""
    model: TunedModel
    name: str
    dataset_id: str | None = None
    dataset_name: str | None = None
    quality: float | None = None
    best: bool = False

    @property
    def id(self) -> str:
        return self.model.id


def display_name(m: TunedModel) -> str:
    return m.name or m.id


def describe(scope: TenantScope, models: Sequence[TunedModel]) -> list[Described]:
    """The models, best of each dataset first (each dataset's group in the order its best came),
    then the rest newest first. Two queries, whatever the number of models."""
    jobs = {j.id: j for j in scope.list(Job, Job.id.in_({m.job_id for m in models}))} if models else {}
    ds_ids = {(jobs[m.job_id].spec or {}).get("dataset_id") for m in models if m.job_id in jobs}
    ds_ids.discard(None)
    names = {d.id: d.name or d.filename for d in scope.list(Dataset, Dataset.id.in_(ds_ids))} if ds_ids else {}
    out = []
    for m in models:
        ds = (jobs[m.job_id].spec or {}).get("dataset_id") if m.job_id in jobs else None
        out.append(Described(m, display_name(m), ds, names.get(ds), quality_of(m.metrics)))
    newest = sorted(out, key=_created, reverse=True)
    best: dict[str, Described] = {}
    for d in newest:           # newest first: a tie keeps the newer
        if d.dataset_id is not None and d.quality is not None and (
                d.dataset_id not in best or d.quality > best[d.dataset_id].quality):
            best[d.dataset_id] = d
    for d in best.values():
        d.best = True
    return [d for d in newest if d.best] + [d for d in newest if not d.best]


def _created(d: Described) -> float:
    return d.model.created_at.timestamp() if d.model.created_at else 0.0


def describe_all(scope: TenantScope) -> list[Described]:
    return describe(scope, scope.list(TunedModel))
