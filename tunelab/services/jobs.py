"""Creating and cancelling jobs for a tenant, with everything checkable checked up front: a job
that would fail on the user's input is refused at creation (422), never queued to fail later."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..db.models import Dataset, Job
from ..db.scoped import TenantScope
from ..jobs import store
from ..jobs.spec import JobSpec
from ..jobs.status import InvalidTransition, JobStatus
from ..models import resolve_model
from ..models.catalog import is_catalog_name, list_models
from ..strategies import get_strategy
from ..strategies.base import ConfigError, parse_params


class JobRejected(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str = "invalid_job"):
        super().__init__(message)
        self.param, self.code = param, code


def check_spec(scope: TenantScope, spec: JobSpec) -> None:
    train = scope.find(Dataset, spec.dataset_id)
    if train is None:
        raise JobRejected(f"No dataset with id {spec.dataset_id!r}.", "dataset_id", "dataset_not_found")
    if train.status != "processed":
        problems = "; ".join(i["message"] for i in train.report.get("issues", []) if i.get("severity") == "error")
        raise JobRejected(f"The dataset {train.id} has errors: {problems or 'see its report'}.", "dataset_id",
                          "invalid_training_file")
    if spec.test_dataset_id and scope.find(Dataset, spec.test_dataset_id) is None:
        raise JobRejected(f"No dataset with id {spec.test_dataset_id!r}.", "test_dataset_id", "dataset_not_found")
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
    else:
        try:
            resolve_model(spec.model)
        except (LookupError, ValueError, FileNotFoundError) as exc:
            raise JobRejected(f"Unknown model {spec.model!r}: {exc}", "model", "model_not_found") from None
    names = spec.strategies if spec.kind == "compare" else [spec.strategy]
    if spec.kind == "compare":     # parameters for a known strategy are checked even when it is not
        from ..strategies import available     # compared: the API's document describes them all

        names = list(dict.fromkeys([*names, *(n for n in spec.strategy_params if n in available())]))
    for name in names:
        try:
            strategy = get_strategy(name)
            overrides = spec.params if spec.kind == "train" else spec.strategy_params.get(name)
            parse_params(strategy, overrides)
        except (ConfigError, ValueError) as exc:
            raise JobRejected(str(exc), "strategy" if spec.kind == "train" else "strategies") from None
        if name == "qlora" and spec.kind == "train":
            from ..strategies.qlora import cuda_problem

            problem = cuda_problem()
            if problem:
                raise JobRejected(problem, "strategy", "cuda_required")


def submit(session: Session, tenant_id: str, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
    scope = TenantScope(session, tenant_id)
    # Checked before the replay lookup: a reused Idempotency-Key returns the first job, but never
    # makes an invalid spec look accepted.
    check_spec(scope, spec)
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
