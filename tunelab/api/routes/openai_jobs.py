"""OpenAI-compatible /v1/fine_tuning/jobs, on tunelab's jobs.

Mapping (also in the README):
- `model`: a catalog name (`minilm`, ...) or a tenant's tuned model id.
- `training_file`: a file id from /v1/files; `validation_file`: the held-out file the job is
  evaluated on (tunelab carves its early-stopping split from the training file).
- `method.type`: `supervised` and `dpo` -> the strategy of the training file's task that
  declares that OpenAI method (`lora` for a classification file, `sft-lora` for chat JSONL,
  `dpo` for preference pairs); any tunelab strategy name (`full`, `sft-full`, `linear-probe`, ...)
  selects it directly (`full` on chat data is `sft-full`); `reinforcement` is refused.
- hyperparameters (top level or `method.<type>.hyperparameters`): `n_epochs` -> `epochs`,
  `batch_size` -> `batch_size`, `learning_rate_multiplier` -> the strategy's default learning
  rate times it; "auto" keeps tunelab's default; tunelab's own parameter names pass through.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ...db.models import Dataset, Job, JobEvent, TunedModel
from ...jobs.spec import JobSpec, JsonInt, json_int
from ...services.billing import model_parameters
from ...services.jobs import cancel, dataset_task
from ...strategies import (ConfigError, Task, all_strategies, available, get_strategy, parse_params, resolve, strategies_of,
                           task_named)
from ..deps import MemberDep, ScopeDep, SessionDep, audit
from ...contract import (FineTuningCheckpointList, FineTuningEventList, FineTuningJob, FineTuningJobList)
from ..errors import AUTH, APIError, errors
from ..schemas import ts
from .jobs import create
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/v1/fine_tuning/jobs", tags=["openai"])
OPENAI_STATUS = {"validating": "validating_files", "queued": "queued", "running": "running", "paused": "paused",
                 "succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}
# An event id in a cursor: ASCII digits that fit a database integer (`isdigit()` took "²", and
# 20 digits overflowed SQLite's integer: both answered 500).
_CURSOR = re.compile(r"[0-9]{1,18}")
_LEVEL = {"info": "info", "warning": "warn", "error": "error"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)      # as the document types it


class Hyperparameters(Strict):
    model_config = ConfigDict(extra="allow")      # tunelab's own names pass through
    n_epochs: json_int(ge=1) | Literal["auto"] | None = None
    batch_size: json_int(ge=1) | Literal["auto"] | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0)] | Literal["auto"] | None = None


def _method_types(schema: dict) -> None:
    """An OpenAI method a strategy implements (supervised, dpo) or a registered strategy."""
    methods = {s.openai_method for s in map(get_strategy, available()) if s.openai_method}
    schema["properties"]["type"]["enum"] = sorted(methods | set(available()))


class MethodBody(Strict):
    # {"type": "lora", "lora": {"hyperparameters": ...}}
    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_method_types)
    type: str


class CreateJob(Strict):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: MethodBody | None = None
    suffix: str | None = Field(default=None, max_length=40)
    seed: JsonInt | None = None
    metadata: dict[str, str] | None = None
    # Refused when not empty (nothing leaves your machines): the document says so with maxItems 0.
    integrations: list[dict] | None = Field(None, json_schema_extra={"maxItems": 0})


def _strategy(method: MethodBody | None, task: Task, model_parameters: int) -> tuple[str, dict]:
    """The strategy a method means on the training file's task (for this size of model: full
    fine-tuning for a small chat model, LoRA above), and the method's hyperparameters."""
    kind = method.type if method else "supervised"
    implementing = [s for s in strategies_of(task) if s.openai_method == kind]
    if implementing:
        name = min(implementing, key=lambda s: s.method_priority(model_parameters)).name
    elif kind in available():
        try:
            name = resolve(kind, task).name
        except ConfigError as exc:
            raise APIError(400, "invalid_method", str(exc), "method.type") from None
    else:
        methods = sorted({s.openai_method for s in strategies_of(task) if s.openai_method})
        elsewhere = sorted({s.task.title for s in all_strategies() if s.openai_method == kind})
        raise APIError(400, "unsupported_method", f"method {kind!r} does not apply to this training file, which "
                       f"is for {task.title}: use {' or '.join(methods) or 'a strategy name'}"
                       + (f" ({kind} takes a file for {' or '.join(elsewhere)})." if elsewhere else "."),
                       "method.type")
    extra = (method.model_extra or {}) if method else {}
    block = extra.get(kind) or {}
    return name, dict(block.get("hyperparameters") or {}) if isinstance(block, dict) else {}


def to_params(strategy: str, hp: dict, model_parameters: int = 0) -> dict:
    fields = get_strategy(strategy).Params.model_fields
    params = {}
    for key, value in hp.items():
        if value is None or value == "auto":
            continue
        if key == "n_epochs":
            key = "epochs"
        if key == "learning_rate_multiplier":
            default = get_strategy(strategy).default_learning_rate(model_parameters)
            if "learning_rate" not in fields:
                raise APIError(400, "invalid_hyperparameter", f"{strategy} has no learning rate.",
                               "hyperparameters.learning_rate_multiplier")
            params["learning_rate"] = float(value) * (default or 2e-4)
            continue
        if key not in fields:
            raise APIError(400, "invalid_hyperparameter", f"{strategy} has no hyperparameter {key!r}; it takes "
                           f"{', '.join(sorted(fields))}.", f"hyperparameters.{key}")
        params[key] = value
    try:
        parse_params(get_strategy(strategy), params)
    except ValueError as exc:
        raise APIError(400, "invalid_hyperparameter", str(exc), "hyperparameters") from None
    return params


def job_object(job: Job) -> dict:
    spec = job.spec
    params = spec.get("params") or {}
    error = {"code": job.error_code, "message": job.error_message or "", "param": None} if job.error_code else None
    return {"object": "fine_tuning.job", "id": job.id, "model": spec.get("model"), "created_at": ts(job.created_at),
            "finished_at": ts(job.finished_at), "fine_tuned_model": job.fine_tuned_model,
            "organization_id": job.tenant_id, "result_files": (job.result or {}).get("result_files") or [], "status": OPENAI_STATUS[job.status],
            "validation_file": spec.get("test_dataset_id"), "training_file": spec.get("dataset_id"),
            "hyperparameters": {"n_epochs": params.get("epochs", "auto"), "batch_size": params.get("batch_size", "auto"),
                                "learning_rate_multiplier": "auto" if "learning_rate" not in params else params["learning_rate"]},
            "trained_tokens": (job.result or {}).get("metrics", {}).get("tokens_processed"),
            "error": error, "seed": spec.get("seed", 0), "estimated_finish": None, "integrations": [],
            "metadata": spec.get("metadata"), "user_provided_suffix": spec.get("suffix"),
            "method": {"type": _method_of(spec.get("strategy"))}}


def _method_of(strategy: str | None) -> str | None:
    """OpenAI's name for what a job runs: the method its strategy implements, else the strategy."""
    try:
        return get_strategy(strategy or "").openai_method or strategy
    except ConfigError:
        return strategy


@router.post("", response_model=FineTuningJob, responses=errors(*AUTH, 400, 402, 403, 404, 422, 503))
def create_job(body: CreateJob, session: SessionDep, principal: MemberDep, scope: ScopeDep,
               idempotency_key: str | None = Header(None, max_length=200)):
    if body.integrations:
        raise APIError(400, "unsupported_integration", "Integrations (e.g. wandb) are not available: "
                       "tunelab keeps data on your machines.", "integrations")
    model = body.model
    tuned = scope.find(TunedModel, model)
    if tuned is not None:
        model = tuned.base_model       # continue from a tuned model: its base, trained again on the new data
    training = scope.find(Dataset, body.training_file)
    task = dataset_task(training) if training is not None else task_named("text-classification")
    size = model_parameters(principal.tenant_id, model)
    strategy, method_hp = _strategy(body.method, task, size)
    hp = {**(body.hyperparameters.model_dump(exclude_none=True) | (body.hyperparameters.model_extra or {})
             if body.hyperparameters else {}), **method_hp}
    spec = JobSpec(kind="train", dataset_id=body.training_file, test_dataset_id=body.validation_file, model=model,
                   strategy=strategy, params=to_params(strategy, hp, size), seed=body.seed or 0, suffix=body.suffix,
                   metadata=body.metadata)
    job, _ = create(session, principal, spec, idempotency_key)
    return job_object(job)


def _page(rows: list, after: str | None, limit: int, key=lambda r: r.id) -> tuple[list, bool]:
    if after:
        ids = [key(r) for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    limit = max(1, min(limit, 100))
    return rows[:limit], len(rows) > limit


@router.get("", response_model=FineTuningJobList, responses=errors(*AUTH, 400))
def list_jobs(scope: ScopeDep, after: str | None = None, limit: int = 20):
    rows = list(scope.list(Job, Job.kind == "train", order_by=Job.created_at.desc()))
    page, more = _page(rows, after, limit)
    return {"object": "list", "data": [job_object(j) for j in page], "has_more": more}


@router.get("/{job_id}", response_model=FineTuningJob, responses=errors(*AUTH, 404))
def retrieve_job(job_id: str, scope: ScopeDep):
    return job_object(scope.get(Job, job_id, "fine-tuning job"))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, responses=errors(*AUTH, 403, 404, 409))
def cancel_job(job_id: str, scope: ScopeDep, session: SessionDep, principal: MemberDep):
    job = cancel(session, scope.get(Job, job_id, "fine-tuning job"))
    audit(session, principal, "job.cancel", job.id)
    return job_object(job)


def _openai_metrics(d: dict) -> dict:
    """tunelab's progress data with OpenAI's metric names added (step, train_loss, valid_loss,
    full_valid_loss: the loss over the whole validation split, which is what tunelab evaluates)."""
    out = dict(d)
    if d.get("loss") is not None:
        out["train_loss"] = d["loss"]
    if d.get("eval_loss") is not None:
        out["valid_loss"] = out["full_valid_loss"] = d["eval_loss"]
    return out


def event_object(e: JobEvent) -> dict:
    metrics = e.type in ("progress", "metrics", "checkpoint")
    data = _openai_metrics(e.data or {}) if metrics else (e.data or None)
    message = e.message
    if e.type == "progress" and not message:
        d = e.data
        message = f"Step {d.get('step')}/{d.get('total_steps')}" + (
            f": training loss={d['loss']:.4f}" if d.get("loss") is not None else "")
    return {"object": "fine_tuning.job.event", "id": f"ftevent-{e.id}", "created_at": ts(e.created_at),
            "level": _LEVEL.get(e.level, "info"), "message": message, "data": data,
            "type": "metrics" if metrics else "message"}


@router.get("/{job_id}/events", response_model=FineTuningEventList, responses=errors(*AUTH, 400, 404))
def list_events(job_id: str, scope: ScopeDep, session: SessionDep, after: str | None = None, limit: int = 20):
    scope.get(Job, job_id, "fine-tuning job")
    q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc())
    if after and _CURSOR.fullmatch(after[8:]) and after.startswith("ftevent-"):
        q = q.where(JobEvent.id < int(after[8:]))
    limit = max(1, min(limit, 1000))
    rows = session.scalars(q.limit(limit + 1)).all()
    return {"object": "list", "data": [event_object(e) for e in rows[:limit]], "has_more": len(rows) > limit}


@router.get("/{job_id}/checkpoints", response_model=FineTuningCheckpointList, responses=errors(*AUTH, 400, 404))
def list_checkpoints(job_id: str, scope: ScopeDep, session: SessionDep, after: str | None = None, limit: int = 10):
    job = scope.get(Job, job_id, "fine-tuning job")
    q = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "checkpoint").order_by(JobEvent.id.desc())
    if after and _CURSOR.fullmatch(after[7:]) and after.startswith("ftckpt-"):
        q = q.where(JobEvent.id < int(after[7:]))
    limit = max(1, min(limit, 100))
    rows = session.scalars(q.limit(limit + 1)).all()
    base = job.fine_tuned_model or f"ft:{job.spec.get('model')}:{job.id}"
    data = [{"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{e.id}", "created_at": ts(e.created_at),
             "fine_tuned_model_checkpoint": f"{base}:ckpt-step-{e.data.get('step')}", "fine_tuning_job_id": job.id,
             "step_number": e.data.get("step"),
             "metrics": {"step": e.data.get("step"), "train_loss": e.data.get("loss")}} for e in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
