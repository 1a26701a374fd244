"""Comparisons: a compare job seen as its table and recommendation."""

from __future__ import annotations

from fastapi import APIRouter, Header
from pydantic import Field

from ...db.models import Job
from ...db.scoped import NotFound
from ...jobs.spec import JobSpec
from ..deps import MemberDep, ScopeDep, SessionDep
from ..schemas import Body, job_out
from .jobs import create

router = APIRouter(prefix="/api/v1/comparisons", tags=["comparisons"])


class ComparisonCreate(Body):
    dataset_id: str
    test_dataset_id: str | None = None
    model: str = "minilm"
    strategies: list[str] = Field(default_factory=lambda: ["zero-shot", "few-shot", "linear-probe", "lora"])
    strategy_params: dict[str, dict[str, object]] = Field(default_factory=dict)
    limit: int | None = Field(default=None, gt=0)
    seed: int = 0


def comparison_out(job: Job) -> dict:
    result = job.result or {}
    return {"id": job.id, "status": job.status, "spec": job.spec, "results": result.get("results", []),
            "recommended": result.get("recommended"), "reason": result.get("reason"),
            "models": result.get("models", {}), "job": job_out(job)}


@router.post("", status_code=201)
def create_comparison(body: ComparisonCreate, session: SessionDep, principal: MemberDep,
                      idempotency_key: str | None = Header(None, max_length=200)):
    spec = JobSpec(kind="compare", **body.model_dump())
    job, _ = create(session, principal, spec, idempotency_key)
    return comparison_out(job)


@router.get("")
def list_comparisons(scope: ScopeDep):
    jobs = scope.list(Job, Job.kind == "compare", order_by=Job.created_at.desc(), limit=100)
    return {"data": [comparison_out(j) for j in jobs]}


@router.get("/{job_id}")
def get_comparison(job_id: str, scope: ScopeDep):
    job = scope.get(Job, job_id, "comparison")
    if job.kind != "compare":
        raise NotFound("comparison", job_id)
    return comparison_out(job)
