"""Infrastructure: this machine's hardware benchmark (`tunelab bench hardware`), its history and
what its speed costs. The figures are the machine's, not a tenant's: any valid key reads them (no
tenant data is involved, so there is nothing to scope), a missing or bad key gets 401.

`POST /api/v1/infrastructure/benchmarks` runs the benchmark as a job (kind bench-hardware) on a
worker, where training jobs run: the tenant's job, created, billed and readable like any other
(POST /api/v1/jobs with `{"kind": "bench-hardware"}` is the same); its result is stored as the
worker's newest run, which this page then shows."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter, Header
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...contract import Infrastructure, InfrastructureExport
from ...contract import Job as JobOut
from ...jobs.spec import BENCH, JobSpec
from ...services import infrastructure as service
from ..deps import MemberDep, PrincipalDep, SessionDep, SettingsDep
from ..errors import AUTH, APIError, errors
from ..routing import ContractRoute
from ..schemas import job_out
from .jobs import CREATE_ERRORS, create

router = APIRouter(route_class=ContractRoute, tags=["infrastructure"])
P = "/api/v1/infrastructure"
MEDIA = {"csv": "text/csv", "json": "application/json"}


def _worker(settings, worker: str | None) -> str | None:
    try:
        return service.pick_worker(settings.home, worker)
    except service.UnknownWorker as exc:
        raise APIError(404, "not_found", str(exc), "worker") from None


@router.get(P, response_model=Infrastructure, responses=errors(*AUTH, 404, 422))
def infrastructure(principal: PrincipalDep, session: SessionDep, settings: SettingsDep, worker: str | None = None):
    """The machine's inventory, its latest benchmark (figures, model throughput, regressions against
    the run before), each figure's history, the cost of its speed, and the billing estimate of a
    typical job per catalog model. `worker` picks another machine's results (`workers` lists them).
    With nothing stored, `has_results` is false and `message` says what to run."""
    return service.overview(settings.home, session, _worker(settings, worker))


@router.get(f"{P}/export", response_class=Response, responses={
    200: {"model": InfrastructureExport,
          "description": "The latest run's figures and model table: CSV (a `section` column: figure or model) "
                         "or JSON",
          "content": {"text/csv": {"schema": {"type": "string"}}}},
    **errors(*AUTH, 404, 422)})
def export(principal: PrincipalDep, settings: SettingsDep, format: Literal["csv", "json"] = "csv",
           worker: str | None = None):
    """The latest run as a file to download (`format`: csv or json; anything else is 422)."""
    chosen = _worker(settings, worker)
    name = f"tunelab-infrastructure-{re.sub(r'[^A-Za-z0-9._-]+', '-', chosen or 'none')}.{format}"
    return Response(service.export(format, settings.home, chosen), media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class BenchmarkRequest(BaseModel):
    """What to measure: the same choices as `tunelab bench hardware [--quick]`."""
    model_config = ConfigDict(extra="forbid")

    quick: bool = Field(True, strict=True, description="fewer repetitions and only the default model's quick rows "
                                                       "(about 90 s); false: every catalog model (about 15 min)")
    sweep: bool = Field(True, strict=True, description="also time short real training runs of the models; false: "
                                                       "the device figures only (about 15 s)")


@router.post(f"{P}/benchmarks", status_code=201, response_model=JobOut, responses=CREATE_ERRORS)
def run_benchmark(session: SessionDep, principal: MemberDep, body: BenchmarkRequest | None = None,
                  idempotency_key: str | None = Header(None, max_length=200)):
    """Measure the worker's machine: a job of kind bench-hardware (the same as `POST /api/v1/jobs`
    with `{"kind": "bench-hardware", "quick": ..., "sweep": ...}`), estimated, billed and followed like
    any job (GET /api/v1/jobs/{id}, its events and stream). Once it succeeds its result is this
    page's latest run, compared with the one before. Members and admins; 402 without the credit."""
    body = body or BenchmarkRequest()
    job, _ = create(session, principal, JobSpec(kind=BENCH, quick=body.quick, sweep=body.sweep), idempotency_key)
    return job_out(job)
