"""OpenAI-compatible /v1/models: catalog models and the tenant's tuned models."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...db.models import TunedModel
from ...models.catalog import list_models
from ...services.retention import drop_tuned_artifact
from ..deps import MemberDep, PrincipalDep, ScopeDep, SettingsDep, audit
from ...contract import OpenAIModel, OpenAIModelDeleted, OpenAIModelList
from ..errors import AUTH, APIError, errors
from ..schemas import ts
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/v1/models", tags=["openai"])


def _catalog() -> list[dict]:
    return [{"id": m.name, "object": "model", "created": 0, "owned_by": "tunelab"} for m in list_models()]


def _tuned(m: TunedModel) -> dict:
    return {"id": m.id, "object": "model", "created": ts(m.created_at), "owned_by": m.tenant_id}


@router.get("", response_model=OpenAIModelList, responses=errors(*AUTH))
def list_models_route(scope: ScopeDep):
    return {"object": "list", "data": _catalog() + [_tuned(m) for m in scope.list(TunedModel, order_by=TunedModel.created_at)]}


@router.get("/{model_id}", response_model=OpenAIModel, responses=errors(*AUTH, 404))
def retrieve_model(model_id: str, scope: ScopeDep):
    for m in _catalog():
        if m["id"] == model_id:
            return m
    return _tuned(scope.get(TunedModel, model_id, "model"))


@router.delete("/{model_id}", response_model=OpenAIModelDeleted, responses=errors(*AUTH, 403, 404))
def delete_model(model_id: str, scope: ScopeDep, principal: MemberDep, request: Request, settings: SettingsDep):
    if any(m["id"] == model_id for m in _catalog()):
        raise APIError(403, "forbidden", "Catalog models cannot be deleted; only your tuned models.", "model")
    m = scope.get(TunedModel, model_id, "model")
    request.app.state.predictors.forget(m.artifact_path)
    scope.delete(m)
    drop_tuned_artifact(scope.session, settings.home, scope.tenant_id, m.artifact_path)    # its sealed file too
    audit(scope.session, principal, "model.delete", model_id)
    return {"id": model_id, "object": "model", "deleted": True}
