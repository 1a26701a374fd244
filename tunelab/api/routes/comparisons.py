"""Comparisons: a compare job seen as its table and recommendation."""

from __future__ import annotations

from fastapi import APIRouter, Header
from pydantic import ConfigDict, Field, ValidationError

from ...db.models import Job
from ...db.scoped import NotFound
from ...db.scoped import TenantScope
from ...jobs.spec import BudgetSeconds, BudgetUsd, JobSpec, JsonInt, json_int, model_schema, strategy_params_schemas
from ...services.jobs import default_strategies
from ..deps import MemberDep, ScopeDep, SessionDep
from ...contract import Comparison, ComparisonList
from ..errors import AUTH, APIError, errors
from ..schemas import Body, job_out
from .jobs import CREATE_ERRORS, create
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/comparisons", tags=["comparisons"])


def _document(schema: dict) -> None:
    """Registered strategy names and their hyperparameters, in the document (check_spec refuses others)."""
    names, params = strategy_params_schemas()
    props = schema["properties"]
    props["model"] = model_schema()
    props["strategies"]["items"] = {"type": "string", "enum": names}
    props["strategy_params"] = {"type": "object", "properties": params, "default": {},
                                "additionalProperties": {"type": "object"}}


class ComparisonCreate(Body):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_document)

    dataset_id: str
    test_dataset_id: str | None = None
    model: str = "minilm"
    # At least one: an empty list used to reach JobSpec inside the route and answer 500. None: the
    # default comparison of the dataset's task (each strategy declares whether it is in it).
    strategies: list[str] | None = Field(None, min_length=1)
    strategy_params: dict[str, dict[str, object]] = Field(default_factory=dict)
    limit: json_int(gt=0) | None = None
    seed: JsonInt = 0
    budget_seconds: BudgetSeconds | None = Field(
        None, description="stop the comparison after this many wall seconds (at most 7 days)")
    budget_usd: BudgetUsd | None = Field(
        None, description="stop the comparison once it has used this many dollars of compute")
    exhaustive: bool = Field(False, description="run every candidate to the end instead of stopping "
                                                "the ones that fall behind early")


def scope_of(session, principal) -> TenantScope:
    return TenantScope(session, principal.tenant_id)


def comparison_out(job: Job) -> dict:
    result, spec = job.result or {}, job.spec or {}
    return {"id": job.id, "status": job.status, "spec": job.spec, "results": result.get("results", []),
            "recommended": result.get("recommended"), "reason": result.get("reason"),
            "models": result.get("models", {}), "job": job_out(job), "budget": budget_of(spec, result),
            "exhaustive": bool(spec.get("exhaustive"))}


def budget_of(spec: dict, result: dict) -> dict | None:
    """What the comparison may spend: as the engine reported it once it ran, else as asked."""
    if result.get("budget"):
        return result["budget"]
    if spec.get("budget_seconds") is None and spec.get("budget_usd") is None:
        return None
    return {"seconds": spec.get("budget_seconds"), "usd": spec.get("budget_usd")}


@router.post("", status_code=201, response_model=Comparison, responses=CREATE_ERRORS)
def create_comparison(body: ComparisonCreate, session: SessionDep, principal: MemberDep,
                      idempotency_key: str | None = Header(None, max_length=200)):
    try:
        values = body.model_dump(exclude_unset=True) | {"dataset_id": body.dataset_id}
        values["strategies"] = body.strategies or default_strategies(scope_of(session, principal), body.dataset_id)
        spec = JobSpec(kind="compare", **values)
    except ValidationError as exc:     # the client's input, refused by the spec: 422, never a 500
        first = exc.errors()[0]
        raise APIError(422, "validation_error", first["msg"], ".".join(map(str, first["loc"])) or None) from None
    job, _ = create(session, principal, spec, idempotency_key)
    return comparison_out(job)


@router.get("", response_model=ComparisonList, responses=errors(*AUTH))
def list_comparisons(scope: ScopeDep):
    jobs = scope.list(Job, Job.kind == "compare", order_by=Job.created_at.desc(), limit=100)
    return {"data": [comparison_out(j) for j in jobs]}


@router.get("/{job_id}", response_model=Comparison, responses=errors(*AUTH, 404))
def get_comparison(job_id: str, scope: ScopeDep):
    job = scope.get(Job, job_id, "comparison")
    if job.kind != "compare":
        raise NotFound("comparison", job_id)
    return comparison_out(job)
