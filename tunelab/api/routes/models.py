"""Models: the catalog plus the tenant's tuned models; predictions from a tuned model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from ...billing.usage import NoCreditForServing, check_served, count_served
from ...strategies import task_named
from ...db.models import TunedModel
from ...models.catalog import list_models
from ...services.predictions import ImageRefused, decode_base64, model_inputs, predict, predict_images, read_images
from ...security.archives import UnsafeArchive
from ...security.weights import UnsafeWeights
from ...services import uploaded_models
from ...services.retention import drop_tuned_artifact
from ..deps import AdminDep, MemberDep, PrincipalDep, ScopeDep, SessionDep, SettingsDep, audit
from ...contract import Deleted, ImagePredictionList, Model, ModelList, PredictionList
from ..errors import AUTH, APIError, errors
from ..downloads import sealed_response, take_slot
from ..uploads import cleanup, save_upload
from .datasets import NonEmptyFile
from ..schemas import MAX_IMAGES, ImagePredictBody, PredictBody, Rename, tuned_out
from ...services.models_naming import rename_model
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/models", tags=["models"])


def catalog_out() -> list[dict]:
    return [{"id": m.name, "object": "model", "kind": "catalog", **m.to_dict()} | {"path": None}
            for m in list_models()]


@router.get("", response_model=ModelList, responses=errors(*AUTH))
def list_all(scope: ScopeDep, settings: SettingsDep):
    tuned = scope.list(TunedModel, order_by=TunedModel.created_at.desc())
    uploaded = [{"object": "model", "kind": "uploaded", **m} for m in uploaded_models.list_models(settings.home, scope.tenant_id)]
    return {"data": catalog_out() + uploaded + [tuned_out(m) for m in tuned]}


@router.post("/import", status_code=201, response_model=Model, responses=errors(*AUTH, 400, 403, 413, 422, 507))
def import_model(admin: AdminDep, settings: SettingsDep, session: SessionDep, file: UploadFile = NonEmptyFile,
                 name: str = Form("")):
    """An archive (zip or tar) of a Hugging Face model folder: safetensors weights only."""
    path = save_upload(file, settings.uploads_dir, settings.max_upload_bytes)
    try:
        meta = uploaded_models.import_model(settings.home, admin.tenant_id, path, name or file.filename or "model")
    except (UnsafeArchive, UnsafeWeights) as exc:
        raise APIError(422, exc.code, str(exc), "file") from None
    finally:
        cleanup(path)
    audit(session, admin, "model.import", meta["id"], bytes=meta["bytes"])
    return {"object": "model", "kind": "uploaded", **meta}


# Ids are one path segment (catalog names, ft:…, upload:…): with `{model_id:path}` GET /models/x/predict
# reached get_model("x/predict"), a route the document (one segment a parameter) cannot describe.
@router.get("/{model_id}/artifact", response_model=dict[str, Any], responses=errors(*AUTH, 404))
def artifact(model_id: str, scope: ScopeDep, principal: PrincipalDep, settings: SettingsDep):
    import json

    from ...security.storage import read_sealed_file

    m = scope.get(TunedModel, model_id, "model")
    slot = take_slot(settings.max_concurrent_downloads)     # reading the tar up to the manifest decrypts it
    try:
        manifest = read_sealed_file(settings.home, m.tenant_id, Path(m.artifact_path), "manifest.json")
    finally:
        slot.release()
    audit(scope.session, principal, "model.artifact_read", m.id)
    return json.loads(manifest)


@router.get("/{model_id}/download", response_class=Response, responses={
    200: {"description": "The model folder as a tar", "content": {"application/x-tar": {
        "schema": {"type": "string", "format": "binary"}}}}, **errors(*AUTH, 404)})
def download(model_id: str, scope: ScopeDep, principal: PrincipalDep, settings: SettingsDep):
    """The tuned model's folder (weights as safetensors or the adapter, tokenizer, label map,
    config, metrics, model card, manifest) as a tar, decrypted as it is sent."""
    m = scope.get(TunedModel, model_id, "model")
    slot = take_slot(settings.max_concurrent_downloads)
    audit(scope.session, principal, "model.download", m.id)
    return sealed_response(settings.home, m.tenant_id, Path(m.artifact_path), m.id.replace(":", "_") + ".tar",
                           "application/x-tar", slot)


@router.post("/{model_id}/predict", response_model=PredictionList, responses=errors(*AUTH, 400, 402, 404, 422))
async def predict_route(model_id: str, body: PredictBody, scope: ScopeDep, request: Request):
    m = scope.get(TunedModel, model_id, "model")
    try:
        check_served(scope.session, scope.tenant_id, len(body.texts))
    except NoCreditForServing as exc:
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    task = (m.metrics or {}).get("task") or "text-classification"
    if task_named(task).serving != "classify":
        raise APIError(400, "not_a_classifier", f"{m.id} is a {task_named(task).title} model: it generates text "
                       "and does not label texts (use it in the web playground or `tunelab generate`).", "model_id")
    if model_inputs(m) == "image":
        raise APIError(400, "not_a_text_model", f"{m.id} classifies images, not texts: send them to "
                       f"POST /api/v1/models/{m.id}/predict-images (base64 JSON) or .../predict-images/files "
                       "(multipart).", "model_id")
    cache = request.app.state.predictors

    def run():
        return predict(cache.get(m.artifact_path), body.texts)
    data = await asyncio.to_thread(run)
    try:        # billed per 1K requests by the worker; counted only while the credit covers it
        count_served(scope.session, scope.tenant_id, len(body.texts))
    except NoCreditForServing as exc:       # a concurrent request took the last of the credit
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    return {"model": m.id, "data": data}


def _image_model(scope, model_id: str, count: int) -> TunedModel:
    """The tenant's tuned image classifier, with credit to serve `count` images (404, 402, 400)."""
    m = scope.get(TunedModel, model_id, "model")
    try:
        check_served(scope.session, scope.tenant_id, count)
    except NoCreditForServing as exc:
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    if model_inputs(m) != "image":
        task = task_named((m.metrics or {}).get("task") or "text-classification")
        raise APIError(400, "not_an_image_model", f"{m.id} is a {task.title} model: it takes texts, not images "
                       f"(POST /api/v1/models/{m.id}/predict).", "model_id")
    return m


async def _classify_images(m: TunedModel, blobs: list[bytes], filenames: list[str | None] | None, scope,
                           request: Request) -> dict:
    """Decode (size- and bomb-checked), classify, count as served."""
    limit = request.app.state.settings.max_body_bytes
    cache = request.app.state.predictors

    def run():
        return predict_images(cache.get(m.artifact_path), read_images(blobs, limit), filenames)
    try:
        data = await asyncio.to_thread(run)
    except ImageRefused as exc:
        raise APIError(exc.status, exc.code, exc.message, f"images.{exc.index}" if filenames is None else "files",
                       index=exc.index) from None
    try:
        count_served(scope.session, scope.tenant_id, len(blobs))
    except NoCreditForServing as exc:
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    return {"model": m.id, "data": data}


@router.post("/{model_id}/predict-images", response_model=ImagePredictionList,
             responses=errors(*AUTH, 400, 402, 404, 413, 422))
async def predict_images_route(model_id: str, body: ImagePredictBody, scope: ScopeDep, request: Request):
    """Classify images sent as base64 (or data: URLs) with a tuned image classifier: up to 16 a
    request, the body within TUNELAB_MAX_BODY_MB (413). An image that is not one (corrupt, a
    format Pillow cannot read, animated, over the pixel limit: a decompression bomb) is 422 with
    its index; a text model is 400."""
    m = _image_model(scope, model_id, len(body.images))
    limit = request.app.state.settings.max_body_bytes
    try:
        blobs = [decode_base64(v, i, limit) for i, v in enumerate(body.images)]
    except ImageRefused as exc:
        raise APIError(exc.status, exc.code, exc.message, f"images.{exc.index}", index=exc.index) from None
    return await _classify_images(m, blobs, None, scope, request)


ImageFiles = File(..., description=f"the images (PNG, JPEG, ...), up to {MAX_IMAGES}",
                  json_schema_extra={"minItems": 1, "maxItems": MAX_IMAGES})


@router.post("/{model_id}/predict-images/files", response_model=ImagePredictionList,
             responses=errors(*AUTH, 400, 402, 404, 413, 422))
async def predict_image_files(model_id: str, scope: ScopeDep, request: Request, files: list[UploadFile] = ImageFiles):
    """The same as predict-images, the images sent as multipart files (`files`, repeated)."""
    if not 1 <= len(files) <= MAX_IMAGES:
        raise APIError(422, "validation_error", f"files: send 1 to {MAX_IMAGES} images.", "files")
    m = _image_model(scope, model_id, len(files))
    limit = request.app.state.settings.max_body_bytes
    blobs = [await f.read(limit + 1) for f in files]        # the body is capped already (api/bodies.py)
    return await _classify_images(m, blobs, [f.filename for f in files], scope, request)


@router.get("/{model_id}", response_model=Model, responses=errors(*AUTH, 404))
def get_model(model_id: str, scope: ScopeDep, settings: SettingsDep):
    for m in catalog_out() + [{"object": "model", "kind": "uploaded", **m}
                              for m in uploaded_models.list_models(settings.home, scope.tenant_id)]:
        if m["id"] == model_id:
            return m
    return tuned_out(scope.get(TunedModel, model_id, "model"))


@router.patch("/{model_id}", response_model=Model, responses=errors(*AUTH, 400, 403, 404, 422))
def rename(model_id: str, body: Rename, scope: ScopeDep, principal: MemberDep):
    """A tuned model's new name (the id stays: the API, the SDK and the OpenAI routes keep using it)."""
    row, old = rename_model(scope, model_id, body.name)
    audit(scope.session, principal, "model.rename", row.id, old=old, new=row.name)
    return tuned_out(row)


@router.delete("/{model_id}", response_model=Deleted, responses=errors(*AUTH, 403, 404))
def delete_model(model_id: str, scope: ScopeDep, principal: MemberDep, request: Request, settings: SettingsDep):
    if model_id.startswith(uploaded_models.PREFIX):
        if principal.role != "admin":
            raise APIError(403, "forbidden", "Only admins delete uploaded models.")
        if not uploaded_models.delete_model(settings.home, scope.tenant_id, model_id):
            raise APIError(404, "not_found", f"No model with id {model_id!r}.")
        audit(scope.session, principal, "model.delete", model_id)
        return {"id": model_id, "object": "model", "deleted": True}
    m = scope.get(TunedModel, model_id, "model")
    request.app.state.predictors.forget(m.artifact_path)
    scope.delete(m)
    drop_tuned_artifact(scope.session, settings.home, scope.tenant_id, m.artifact_path)    # its sealed file too
    audit(scope.session, principal, "model.delete", model_id)
    return {"id": model_id, "object": "model", "deleted": True}
