"""Deployments: tuned models served from model server processes of their own (created, listed,
deleted like every tenant resource), and classifications through a deployment's server."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request

from ...billing.usage import NoCreditForServing, check_served
from ...contract import Deleted, DeploymentCreate, PredictionList
from ...contract import Deployment as DeploymentOut
from ...contract import DeploymentList
from ...serving.errors import ServingError
from ...services import deployments as svc
from ..deps import MemberDep, ScopeDep, SettingsDep, audit
from ..errors import AUTH, APIError, errors
from ..routing import ContractRoute
from ..schemas import PredictBody

log = logging.getLogger("tunelab.api")
SERVER_BATCH = 256      # texts in one request to a model server (serving/process.py MAX_ITEMS)
router = APIRouter(route_class=ContractRoute, prefix="/api/v1/deployments", tags=["deployments"])


def refused(exc: svc.DeploymentRefused) -> APIError:
    return APIError(exc.status, exc.code, exc.message, exc.param)


def served_error(exc: ServingError) -> APIError:
    return APIError(exc.status, exc.code, exc.message)


def no_credit(exc: NoCreditForServing) -> APIError:
    return APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict())


def supervisor_of(request: Request):
    return getattr(request.app.state, "supervisor", None)


def running_supervisor(request: Request):
    """The supervisor, to answer through; 503 where this server cannot run model servers."""
    supervisor = supervisor_of(request)
    if supervisor is None:
        raise APIError(503, "model_server_unavailable", "This server cannot run model servers: they must run "
                       "sandboxed (install bubblewrap) or an admin must set TUNELAB_INSECURE_MODE=1.")
    return supervisor


@router.post("", status_code=201, response_model=DeploymentOut, responses=errors(*AUTH, 400, 403, 404, 422))
def create(body: DeploymentCreate, scope: ScopeDep, principal: MemberDep, settings: SettingsDep, request: Request):
    """Serve the tenant's tuned models (generative ones of one base: its adapters, on one loaded
    copy of the base), one classifier, or one catalog causal LM. The servers start loading now."""
    try:
        row = svc.create_deployment(scope.session, scope.tenant_id, body, settings)
    except svc.DeploymentRefused as exc:
        raise refused(exc) from None
    audit(scope.session, principal, "deployment.create", row.id, models=list(row.models), engine=row.engine)
    supervisor = supervisor_of(request)
    if supervisor is not None:
        scope.session.commit()          # the row is there before its servers are
        try:
            supervisor.ensure(svc.plan_for(row, settings))
        except (svc.DeploymentRefused, ServingError) as exc:    # created: the first request says why it cannot load
            log.warning("deployment not started", extra={"deployment": row.id, "reason": str(exc)})
    return svc.view(row, supervisor)


@router.get("", response_model=DeploymentList, responses=errors(*AUTH))
def list_all(scope: ScopeDep, request: Request):
    supervisor = supervisor_of(request)
    return {"object": "list", "data": [svc.view(r, supervisor) for r in svc.list_deployments(scope.session, scope.tenant_id)]}


@router.get("/{deployment_id}", response_model=DeploymentOut, responses=errors(*AUTH, 404))
def get_one(deployment_id: str, scope: ScopeDep, request: Request):
    try:
        row = svc.get_deployment(scope.session, scope.tenant_id, deployment_id)
    except svc.DeploymentRefused as exc:
        raise refused(exc) from None
    return svc.view(row, supervisor_of(request))


@router.delete("/{deployment_id}", response_model=Deleted, responses=errors(*AUTH, 403, 404))
def delete(deployment_id: str, scope: ScopeDep, principal: MemberDep, request: Request):
    """Stops its servers and forgets it (the tuned models stay)."""
    try:
        svc.delete_deployment(scope.session, scope.tenant_id, deployment_id, supervisor_of(request))
    except svc.DeploymentRefused as exc:
        raise refused(exc) from None
    audit(scope.session, principal, "deployment.delete", deployment_id)
    return {"id": deployment_id, "object": "deployment", "deleted": True}


@router.post("/{deployment_id}/predict", response_model=PredictionList,
             responses=errors(*AUTH, 400, 402, 404, 409, 422, 429, 503))
async def predict(deployment_id: str, body: PredictBody, scope: ScopeDep, settings: SettingsDep, request: Request):
    """Labels for texts from a classifier deployment: the answer of /api/v1/models/{id}/predict,
    computed in the deployment's server (concurrent requests micro-batched into one forward)."""
    try:
        row = svc.get_deployment(scope.session, scope.tenant_id, deployment_id)
        if row.kind != "classify" or not svc.takes_texts(scope.session, row):
            raise APIError(400, "not_a_text_classifier", f"{row.id} serves {', '.join(row.models)}, which does not "
                           "label texts: generative deployments answer POST /v1/chat/completions.", "deployment_id")
        check_served(scope.session, scope.tenant_id, len(body.texts))
        supervisor = running_supervisor(request)
        client = await supervisor.client(svc.plan_for(row, settings))
        labels, probs = [], []
        for start in range(0, len(body.texts), SERVER_BATCH):
            answer = await client.classify(row.models[0], texts=body.texts[start:start + SERVER_BATCH])
            labels, probs = answer["labels"], probs + answer["probs"]
        svc.record_usage(scope.session, scope.tenant_id, row, requests=len(body.texts))
    except svc.DeploymentRefused as exc:
        raise refused(exc) from None
    except NoCreditForServing as exc:
        raise no_credit(exc) from None
    except ServingError as exc:
        raise served_error(exc) from None
    return {"model": row.models[0], "deployment": row.id,
            "data": svc.classifier_rows(body.texts, labels, probs)}
