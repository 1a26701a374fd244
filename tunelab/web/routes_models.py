"""Models (the catalog's cards, the tenant's uploaded and tuned models; admins import a
bring-your-own model) and the playground (a text in, the predicted class and its probabilities out)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes.models import delete_model, import_model, list_all, predict_route
from ..api.schemas import PredictBody
from ..db.models import TunedModel
from ..db.scoped import TenantScope
from ..models.catalog import list_models
from .deps import PageError, UserDep, checked_form, is_htmx, need, render

router = APIRouter(include_in_schema=False)
MAX_TEXT = 5000


def _tuned(session, user) -> list[TunedModel]:
    return list(TenantScope(session, user.tenant_id).list(TunedModel, order_by=TunedModel.created_at.desc()))


def uploaded(session, user, settings) -> list[dict]:
    """The tenant's own base models (archives imported by an admin), as the API lists them."""
    listed = list_all(TenantScope(session, user.tenant_id), settings)["data"]
    return [m for m in listed if m.get("kind") == "uploaded"]


def _models_page(request, user, session, settings, *, error: str | None = None, notice: str | None = None,
                 status: int = 200):
    return render(request, "models.html", {"catalog": list_models(), "tuned": _tuned(session, user),
                                           "uploaded": uploaded(session, user, settings), "error": error,
                                           "notice": notice}, status=status)


@router.get("/models")
def models(request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    return _models_page(request, user, session, settings)


@router.post("/models/import")
async def import_archive(request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    need(user, "admin")
    form = await checked_form(request, user)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return _models_page(request, user, session, settings, error="Choose an archive to upload.", status=422)
    try:
        meta = await run_in_threadpool(import_model, user.principal, settings, session, file,
                                       str(form.get("name") or ""))
    except APIError as exc:
        return _models_page(request, user, session, settings, error=exc.message, status=exc.status)
    return _models_page(request, user, session, settings,
                        notice=f"Imported {meta.get('name')} as {meta['id']}: choose it in the wizard.")


@router.post("/models/{model_id:path}/delete")
async def delete(model_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    need(user, "member")
    await checked_form(request, user)
    try:         # the API's own delete: the same checks, the same audit entry
        delete_model(model_id, TenantScope(session, user.tenant_id), user.principal, request, settings)
    except APIError as exc:
        raise PageError(exc.status, "Could not delete", exc.message) from None
    return RedirectResponse("/models", status_code=303)


def _playground(request, user, session, model_id: str | None, text: str = "", result=None,
                error: str | None = None, status: int = 200):
    tuned = _tuned(session, user)
    if model_id and not any(m.id == model_id for m in tuned):
        raise PageError(404, "Not found", f"There is no model {model_id!r} in your organisation.")
    ctx = {"tuned": tuned, "model_id": model_id or (tuned[0].id if tuned else None), "text": text,
           "result": result, "error": error}
    if is_htmx(request):
        return render(request, "_prediction.html", ctx, status=status)
    return render(request, "playground.html", ctx, status=status)


@router.get("/playground")
def playground(request: Request, user: UserDep, session: SessionDep, model: str | None = None):
    return _playground(request, user, session, model)


@router.post("/playground")
async def playground_predict(request: Request, user: UserDep, session: SessionDep):
    form = await checked_form(request, user)
    model_id, text = str(form.get("model", "")), str(form.get("text", "")).strip()
    if not text:
        return _playground(request, user, session, model_id, text, error="Type a text to classify.", status=422)
    if len(text) > MAX_TEXT:
        return _playground(request, user, session, model_id, text[:MAX_TEXT],
                           error=f"Texts are limited to {MAX_TEXT:,} characters here.", status=422)
    scope = TenantScope(session, user.tenant_id)
    m = scope.get(TunedModel, model_id, "model")
    try:         # the API's own predict route: the same model cache, the same checks
        out = (await predict_route(model_id, PredictBody(texts=[text]), scope, request))["data"][0]
    except (FileNotFoundError, ValueError) as exc:
        return _playground(request, user, session, model_id, text, status=409,
                           error=f"This model's files cannot be loaded ({exc}). Train it again.")
    scores = sorted(out["scores"].items(), key=lambda kv: -kv[1])
    result = {"label": out["label"], "score": out["score"], "model": m,
              "scores": [{"label": k, "value": f"{v:.1%}", "pct": round(100 * v, 1)} for k, v in scores]}
    return _playground(request, user, session, model_id, text, result=result)
