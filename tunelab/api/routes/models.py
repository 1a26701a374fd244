"""Models: the catalog plus the tenant's tuned models; predictions from a tuned model."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request

from ...db.models import TunedModel
from ...models.catalog import list_models
from ...services.predictions import predict
from ..deps import MemberDep, ScopeDep
from ..schemas import PredictBody, tuned_out

router = APIRouter(prefix="/api/v1/models", tags=["models"])


def catalog_out() -> list[dict]:
    return [{"id": m.name, "object": "model", "kind": "catalog", **m.to_dict()} | {"path": None}
            for m in list_models()]


@router.get("")
def list_all(scope: ScopeDep):
    tuned = scope.list(TunedModel, order_by=TunedModel.created_at.desc())
    return {"data": catalog_out() + [tuned_out(m) for m in tuned]}


@router.get("/{model_id:path}/artifact")
def artifact(model_id: str, scope: ScopeDep):
    from ...artifacts.store import read_manifest

    m = scope.get(TunedModel, model_id, "model")
    return read_manifest(Path(m.artifact_path))


@router.post("/{model_id:path}/predict")
async def predict_route(model_id: str, body: PredictBody, scope: ScopeDep, request: Request):
    m = scope.get(TunedModel, model_id, "model")
    cache = request.app.state.predictors

    def run():
        return predict(cache.get(m.artifact_path), body.texts)
    return {"model": m.id, "data": await asyncio.to_thread(run)}


@router.get("/{model_id:path}")
def get_model(model_id: str, scope: ScopeDep):
    for m in catalog_out():
        if m["id"] == model_id:
            return m
    return tuned_out(scope.get(TunedModel, model_id, "model"))


@router.delete("/{model_id:path}")
def delete_model(model_id: str, scope: ScopeDep, principal: MemberDep, request: Request):
    m = scope.get(TunedModel, model_id, "model")
    request.app.state.predictors.forget(m.artifact_path)
    scope.delete(m)
    return {"id": model_id, "object": "model", "deleted": True}
