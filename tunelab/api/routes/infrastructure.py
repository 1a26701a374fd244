"""Infrastructure: this machine's hardware benchmark (`tunelab bench hardware`), its history and
what its speed costs. The figures are the machine's, not a tenant's: any valid key reads them (no
tenant data is involved, so there is nothing to scope), a missing or bad key gets 401."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response

from ...contract import Infrastructure, InfrastructureExport
from ...services import infrastructure as service
from ..deps import PrincipalDep, SessionDep, SettingsDep
from ..errors import AUTH, APIError, errors
from ..routing import ContractRoute

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
