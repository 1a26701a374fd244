"""Creating and cancelling jobs for a tenant, with everything checkable checked up front: a job
that would fail on the user's input is refused at creation (422), never queued to fail later."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..data.minimums import TOO_LITTLE, planned_issues
from ..db.models import Dataset, Job
from ..db.scoped import TenantScope
from ..jobs import store
from ..jobs.spec import BUDGET_ON_TRAIN, NOT_ON_BENCH, TRAINING_ON_BENCH, JobSpec
from ..jobs.status import InvalidTransition, JobStatus
from ..models import resolve_model
from ..models.catalog import catalog_spec, is_catalog_name, list_models
from .datasets import dataset_task as dataset_names
from ..strategies import (ConfigError, Task, available, default_compare, default_strategy, get_strategy, parse_params,
                          resolve, task_named)


class JobRejected(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_job"):
        super().__init__(message)
        self.param, self.code = param, code


def dataset_task(row: Dataset) -> Task:
    """The Task a stored dataset is for (recorded at upload; older rows are classification tables)."""
    return task_named(dataset_names(row)[0])


def default_strategies(scope: TenantScope, dataset_id: str) -> list[str]:
    """What a comparison runs when nobody chose: its dataset's task's default comparison."""
    row = scope.find(Dataset, dataset_id)
    return default_compare(dataset_task(row) if row is not None else task_named("text-classification"))


def resolved(scope: TenantScope, spec: JobSpec) -> JobSpec:
    """The spec in the dataset's task's terms: a default model for the task when none was named,
    the task's default comparison when none was asked, strategy aliases ("lora" on conversations)
    replaced by the strategy they mean. Unknown names are left for check_spec to refuse. A hardware
    benchmark has no dataset: its spec is what runs."""
    if spec.is_bench or spec.is_batch:
        return spec
    train = scope.find(Dataset, spec.dataset_id)
    if train is None:
        return spec
    task = dataset_task(train)
    update: dict = {}
    if "model" not in spec.model_fields_set:
        update["model"] = task.default_model

    def canonical(name: str) -> str:
        try:
            return resolve(name, task).name
        except ConfigError:
            return name
    if spec.kind == "compare":
        names = spec.strategies or default_compare(task)
        update["strategies"] = list(dict.fromkeys(canonical(n) for n in names))
        update["strategy_params"] = {canonical(k): v for k, v in spec.strategy_params.items()}
    else:
        update["strategy"] = canonical(spec.strategy) if spec.strategy else default_strategy(task)
    return spec.model_copy(update=update)


def check_spec(scope: TenantScope, spec: JobSpec) -> JobSpec:
    """JobRejected for a job that would fail on the user's input; else the spec in its dataset's
    task's terms (see `resolved`), which is what runs, is estimated and is stored. A hardware
    benchmark job has nothing of the tenant's to check (the spec refuses a dataset, a strategy, a
    budget on it); it is admitted like any job: quotas, then credit."""
    spec = resolved(scope, spec)
    if spec.is_bench:
        return _check_bench(spec)
    if spec.is_batch:
        from . import batch_predictions

        try:
            return batch_predictions.check(scope, spec)
        except batch_predictions.JobRejected as exc:
            raise JobRejected(str(exc), exc.param, exc.code) from None
    train = scope.find(Dataset, spec.dataset_id)
    if train is None:
        raise JobRejected(f"No dataset with id {spec.dataset_id!r}.", "dataset_id", "dataset_not_found")
    if train.purpose == "fine-tune-results":
        raise JobRejected(f"{train.id} holds a job's results, not data to train on.", "dataset_id", "invalid_training_file")
    if train.purpose == "batch":
        raise JobRejected(f"{train.id} holds texts to label (a batch prediction's input), not training data.",
                          "dataset_id", "invalid_training_file")
    if train.status != "processed":
        problems = "; ".join(i["message"] for i in train.report.get("issues", []) if i.get("severity") == "error")
        raise JobRejected(f"The dataset {train.id} has errors: {problems or 'see its report'}.", "dataset_id",
                          "invalid_training_file")
    test_row = scope.find(Dataset, spec.test_dataset_id) if spec.test_dataset_id else None
    if spec.test_dataset_id and test_row is None:
        raise JobRejected(f"No dataset with id {spec.test_dataset_id!r}.", "test_dataset_id", "dataset_not_found")
    check_enough_rows(train, test_row, spec.limit)
    # Through the service a base model is a catalog name, never a server path: a path would let
    # a tenant read another tenant's artifacts or any folder the server can see.
    if spec.model.startswith("upload:"):
        from ..settings import get_settings
        from .uploaded_models import find_model

        if find_model(get_settings().home, scope.tenant_id, spec.model) is None:
            raise JobRejected(f"No uploaded model with id {spec.model!r}.", "model", "model_not_found")
    elif not is_catalog_name(spec.model):
        raise JobRejected(f"Unknown model {spec.model!r}: use a catalog model ({', '.join(m.name for m in list_models())}).",
                          "model", "model_not_found")
    elif catalog_spec(spec.model) is None:      # in the catalog, its weights not installed here
        try:
            resolve_model(spec.model)     # says which package to install
        except (LookupError, ValueError, FileNotFoundError) as exc:
            raise JobRejected(f"Unknown model {spec.model!r}: {exc}", "model", "model_not_found") from None
    if spec.kind == "train" and spec.has_budget_fields():   # the spec refuses it; a copy made with
        raise JobRejected(BUDGET_ON_TRAIN, "budget_seconds")   # model_copy(update=) skips validators
    task = dataset_task(train)
    _check_model_kind(spec, task)
    names = spec.strategies if spec.kind == "compare" else [spec.strategy]
    if spec.kind == "compare":     # parameters for a known strategy are checked even when it is not
        known = set(available())   # compared: the API's document describes them all
        names = list(dict.fromkeys([*names, *(n for n in spec.strategy_params if n in known)]))
    field = "strategy" if spec.kind == "train" else "strategies"
    run = set(names if spec.kind == "train" else spec.strategies)
    for name in names:
        try:
            # what runs must be of the dataset's task; other parameters only well-formed
            strategy = resolve(name, task) if name in run else get_strategy(name)
            parse_params(strategy, spec.params if spec.kind == "train" else spec.strategy_params.get(name))
        except (ConfigError, ValueError) as exc:
            raise JobRejected(str(exc), field) from None
        problem = strategy.unavailable() if spec.kind == "train" else None
        if problem:
            raise JobRejected(problem, "strategy", "cuda_required")
        if spec.kind == "train" and spec.processes > 1 and not strategy.distributed:
            from ..strategies import strategies_of

            spread = ", ".join(s.name for s in strategies_of(task) if s.distributed and not s.unavailable())
            raise JobRejected(f"{strategy.name} has no training loop to spread over {spec.processes} processes: "
                              f"leave `processes` out (or 1), or choose a strategy that has one ({spread or 'none here'}).",
                              "processes")
    return spec


def check_enough_rows(train: Dataset, test: Dataset | None, limit: int | None) -> None:
    """JobRejected (too_little_data) when a labelled dataset's split, known from its label counts,
    is below data/minimums.py's minimums: refused at submission, not a job that fails or "succeeds"
    on 1 test row. Datasets without label counts (conversations, preference pairs) pass."""
    counts = (train.stats or {}).get("label_counts")
    if not counts:
        return
    test_rows = None
    if test is not None:
        known = set(counts)
        test_rows = sum(int(c) for lab, c in ((test.stats or {}).get("label_counts") or {}).items() if lab in known)
    applied = limit if limit and limit < sum(int(c) for c in counts.values()) else None
    errors = [i for i in planned_issues(counts, test_rows=test_rows, limit=applied) if i.severity == "error"]
    if errors:
        raise JobRejected(" ".join(f"{i.message} {i.fix}" for i in errors), "limit" if applied else "dataset_id",
                          TOO_LITTLE)


def _check_bench(spec: JobSpec) -> JobSpec:
    """A benchmark job as created through a copy that skipped the validators (model_copy) is refused
    the same way; else it runs as given."""
    given = {f: getattr(spec, f) for f in NOT_ON_BENCH if getattr(spec, f) != NOT_ON_BENCH[f]}
    if given:
        field = next(iter(given))
        raise JobRejected(f"`{field}` {TRAINING_ON_BENCH}", field)
    return spec


def _check_model_kind(spec: JobSpec, task: Task) -> None:
    """A chat dataset needs a causal LM: refused at creation, not when the job runs."""
    if not task.model_kind or spec.model.startswith("upload:"):
        return
    found = catalog_spec(spec.model)      # declared: no first-use import of its weights in a request
    if found is None:
        return
    kind = found.kind
    if kind != task.model_kind:
        raise JobRejected(f"{spec.model} is not a {task.model_kind} model, and this dataset is for "
                          f"{task.title}: use {task.default_model} or another {task.model_kind} model.",
                          "model", "invalid_model")


def submit(session: Session, tenant_id: str, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
    scope = TenantScope(session, tenant_id)
    # Checked before the replay lookup: a reused Idempotency-Key returns the first job, but never
    # makes an invalid spec look accepted.
    spec = check_spec(scope, spec)
    if idempotency_key:
        existing = session.query(Job).filter_by(tenant_id=tenant_id, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    from . import billing    # quotas, then credit: raises QuotaExceeded / InsufficientCredit

    estimate = billing.admit(session, tenant_id, spec)
    job, created = store.create_job(session, tenant_id, spec, idempotency_key)
    if created:
        billing.open_reservation(session, job, estimate)
    return job, created


def cancel(session: Session, job: Job) -> Job:
    status = JobStatus(job.status)
    if status.is_terminal:
        raise InvalidTransition(status, JobStatus.CANCELLED)
    if status in (JobStatus.QUEUED, JobStatus.PAUSED):
        store.transition(session, job, JobStatus.CANCELLED, "Cancelled by the user before it ran.")
        from ..jobs import webhooks

        webhooks.enqueue(session, job, "cancelled")
    elif not job.cancel_requested:
        job.cancel_requested = True
        store.add_event(session, job, "log", "Cancel requested by the user.")
    return job
