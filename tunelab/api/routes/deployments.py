"""Deployments: tuned models served from model server processes of their own (created, listed,
deleted like every tenant resource), and classifications through a deployment's server."""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager

from fastapi import APIRouter, Request

from ...billing.usage import NoCreditForServing, check_served
from ...contract import Deleted, DeploymentCreate, ImagePredictionList, PredictionList
from ...contract import Deployment as DeploymentOut
from ...contract import DeploymentList
from ...serving.errors import ServingError
from ...services import deployments as svc
from ...services.predictions import ImageRefused, decode_base64, read_images
from ..deps import MemberDep, ScopeDep, SettingsDep, audit
from ..errors import AUTH, APIError, errors
from ..routing import ContractRoute
from ..schemas import ImagePredictBody, PredictBody

log = logging.getLogger("tunelab.api")
SERVER_BATCH = 256      # texts in one request to a model server (serving/process.py MAX_ITEMS)
router = APIRouter(route_class=ContractRoute, prefix="/api/v1/deployments", tags=["deployments"])


def refused(exc: svc.DeploymentRefused) -> APIError:
    return APIError(exc.status, exc.code, exc.message, exc.param)


def served_error(exc: ServingError) -> APIError:
    return APIError(exc.status, exc.code, exc.message)


def no_credit(exc: NoCreditForServing) -> APIError:
    return APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict())


@contextmanager
def as_api_errors():
    """What the service, billing and the model servers refuse, as the API's statuses and codes."""
    try:
        yield
    except svc.DeploymentRefused as exc:
        raise refused(exc) from None
    except NoCreditForServing as exc:
        raise no_credit(exc) from None
    except ServingError as exc:
        raise served_error(exc) from None


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
    with as_api_errors():
        row = svc.get_deployment(scope.session, scope.tenant_id, deployment_id)
        if svc.classifier_inputs(scope.session, row) != "text":
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
    return {"model": row.models[0], "deployment": row.id,
            "data": svc.classifier_rows(body.texts, labels, probs)}


def _png_base64(images: list) -> list[str]:
    """Checked images (RGB, EXIF applied) re-encoded for the model server: it classifies exactly
    what the API decoded, never the upload's own bytes."""
    import base64
    import io

    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


@router.post("/{deployment_id}/predict-images", response_model=ImagePredictionList,
             responses=errors(*AUTH, 400, 402, 404, 409, 413, 422, 429, 503))
async def predict_images(deployment_id: str, body: ImagePredictBody, scope: ScopeDep, settings: SettingsDep,
                         request: Request):
    """Classes for images (base64 or data: URLs, up to 16) from an image classifier deployment: the
    answer of /api/v1/models/{id}/predict-images, computed in the deployment's server. Each image
    is checked here first (size, decompression bombs, one frame: 413/422 with its index)."""
    with as_api_errors():
        row = svc.get_deployment(scope.session, scope.tenant_id, deployment_id)
        if svc.classifier_inputs(scope.session, row) != "image":
            raise APIError(400, "not_an_image_classifier", f"{row.id} serves {', '.join(row.models)}, which does "
                           "not classify images: text classifiers answer POST .../predict, generative deployments "
                           "POST /v1/chat/completions.", "deployment_id")
        check_served(scope.session, scope.tenant_id, len(body.images))
        limit = settings.max_body_bytes
        try:
            blobs = [decode_base64(v, i, limit) for i, v in enumerate(body.images)]
            images = await asyncio.to_thread(read_images, blobs, limit)
        except ImageRefused as exc:
            raise APIError(exc.status, exc.code, exc.message, f"images.{exc.index}", index=exc.index) from None
        client = await running_supervisor(request).client(svc.plan_for(row, settings))
        answer = await client.classify(row.models[0], images_b64=_png_base64(images))
        svc.record_usage(scope.session, scope.tenant_id, row, requests=len(body.images))
    return {"model": row.models[0], "data": svc.image_rows(answer["labels"], answer["probs"])}
