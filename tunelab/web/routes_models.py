"""Models (the catalog's cards, the tenant's uploaded and tuned models; admins import a
bring-your-own model) and the playgrounds: a classifier's (a text in, the predicted class and its
probabilities out) and a chat model's (a message in, the answer streamed as it is written)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes.models import delete_model, import_model, list_all, predict_image_files, predict_route
from ..api.schemas import PredictBody
from ..billing.usage import NoCreditForServing, check_served, count_served
from ..services import generation
from ..services.generation import GenerationRefused, is_generative
from ..db.models import TunedModel
from ..db.scoped import TenantScope
from ..services.models_naming import describe, describe_all
from ..services.predictions import model_inputs
from .image_pages import image_preview
from ..models.catalog import list_models
from .deps import PageError, UserDep, checked_form, is_htmx, need, render
from .routes_jobs import quality

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
    # the best model of each dataset first (marked "best for <dataset>"), then the rest newest first
    described = describe_all(TenantScope(session, user.tenant_id))
    tuned = [d.model for d in described]
    return render(request, "models.html", {"catalog": list_models(), "tuned": tuned,
                                           "described": {d.id: d for d in described},
                                           "quality": {m.id: quality(m.metrics or {}) for m in tuned},
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
                error: str | None = None, status: int = 200, image_result=None, image_error: str | None = None):
    everything = _tuned(session, user)
    if model_id and not any(m.id == model_id for m in everything):
        raise PageError(404, "Not found", f"There is no model {model_id!r} in your organisation.")
    if model_id and any(m.id == model_id and is_generative(m) for m in everything):
        return RedirectResponse(f"/playground/chat?model={quote(model_id, safe='')}", status_code=303)
    # the select lists the best model of each dataset first, and starts on the best of the latest dataset;
    # texts and images each have their own form (a classifier takes one or the other)
    described = [d for d in describe(TenantScope(session, user.tenant_id), everything) if not is_generative(d.model)]
    texts = [d for d in described if model_inputs(d.model) != "image"]
    images = [d for d in described if model_inputs(d.model) == "image"]
    chosen = model_id if model_id and any(d.id == model_id for d in texts) else None
    chosen_image = model_id if model_id and any(d.id == model_id for d in images) else None
    ctx = {"tuned": [d.model for d in texts], "described": {d.id: d for d in described},
           "model_id": chosen or _best_first(texts), "text": text,
           "image_models": [d.model for d in images], "image_model_id": chosen_image or _best_first(images),
           "image_result": image_result, "image_error": image_error, "max_image_mb": _image_limit(request) / 1e6,
           "result": result, "error": error, "chat_models": len(everything) - len(described)}
    if is_htmx(request):
        return render(request, "_image_prediction.html" if image_result or image_error else "_prediction.html",
                      ctx, status=status)
    return render(request, "playground.html", ctx, status=status)


def _image_limit(request) -> int:
    """An image sent to the playground: the request body's cap (TUNELAB_MAX_BODY_MB) less the form."""
    return max(request.app.state.settings.max_body_bytes - 16 * 1024, 1)


def _best_first(described) -> str | None:
    """The model a playground starts on: the best model of the dataset trained on last (not the
    newest model: a quick baseline run after a good one does not take its place)."""
    if not described:
        return None
    newest = max(described, key=lambda d: d.model.created_at.timestamp() if d.model.created_at else 0.0)
    return next((d.id for d in described if d.best and d.dataset_id == newest.dataset_id), newest.id)


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
    if is_generative(m):
        return _playground(request, user, session, None, text, status=409,
                           error="This is a chat model: talk to it in the chat playground (/playground/chat).")
    try:         # the API's own predict route: the same model cache, the same checks
        out = (await predict_route(model_id, PredictBody(texts=[text]), scope, request))["data"][0]
    except (FileNotFoundError, ValueError) as exc:
        return _playground(request, user, session, model_id, text, status=409,
                           error=f"This model's files cannot be loaded ({exc}). Train it again.")
    except APIError as exc:          # 402: no credit left to serve it
        return _playground(request, user, session, model_id, text, status=exc.status, error=exc.message)
    scores = sorted(out["scores"].items(), key=lambda kv: -kv[1])
    result = {"label": out["label"], "score": out["score"], "model": m,
              "scores": [{"label": k, "value": f"{v:.1%}", "pct": round(100 * v, 1)} for k, v in scores]}
    return _playground(request, user, session, model_id, text, result=result)


@router.post("/playground/image")
async def playground_image(request: Request, user: UserDep, session: SessionDep):
    """An image classifier's answer for one uploaded image (the API's own route: the same model
    cache, the same checks: size, pixel limit, one frame; billed as a served request)."""
    form = await checked_form(request, user)
    model_id, file = str(form.get("model", "")), form.get("image")
    if not isinstance(file, UploadFile) or not file.filename:
        return _playground(request, user, session, model_id or None, image_error="Choose an image to classify.",
                           status=422)
    m = TenantScope(session, user.tenant_id).get(TunedModel, model_id, "model")
    try:
        out = (await predict_image_files(model_id, TenantScope(session, user.tenant_id), request, files=[file]))
    except (FileNotFoundError, ValueError) as exc:
        return _playground(request, user, session, model_id, status=409,
                           image_error=f"This model's files cannot be loaded ({exc}). Train it again.")
    except APIError as exc:          # 400 a text model, 402 no credit, 413/422 not an image it can read
        return _playground(request, user, session, model_id, status=exc.status, image_error=exc.message)
    await file.seek(0)
    first = out["data"][0]
    scores = sorted(first["scores"].items(), key=lambda kv: -kv[1])
    result = {"label": first["label"], "score": first["score"], "model": m, "filename": file.filename,
              "preview": await run_in_threadpool(image_preview, await file.read(_image_limit(request) + 1)),
              "scores": [{"label": k, "value": f"{v:.1%}", "pct": round(100 * v, 1)} for k, v in scores]}
    return _playground(request, user, session, model_id, image_result=result)


# ---- the chat playground: a tuned generative model answers, streamed piece by piece ------------

def _chat_models(session, user) -> list[TunedModel]:
    return [m for m in _tuned(session, user) if is_generative(m)]


def _chat(request, user, session, model_id: str | None, prompt: str = "", answer: str | None = None,
          form: dict | None = None, error: str | None = None, status: int = 200):
    models = _chat_models(session, user)
    if model_id and not any(m.id == model_id for m in models):
        raise PageError(404, "Not found", f"There is no chat model {model_id!r} in your organisation.")
    return render(request, "playground_chat.html", {
        "models": models, "model_id": model_id or (models[0].id if models else None), "prompt": prompt,
        "answer": answer, "error": error, "form": form or {}, "max_new_tokens": generation.MAX_NEW_TOKENS,
        "default_new_tokens": generation.DEFAULT_NEW_TOKENS, "max_prompt": generation.MAX_PROMPT_CHARS},
        status=status)


@router.get("/playground/chat")
def chat_playground(request: Request, user: UserDep, session: SessionDep, model: str | None = None):
    return _chat(request, user, session, model)


async def _answer(request, user, session, form) -> tuple[TunedModel, "generation.Answer"]:
    """The checked request's model, loaded (once per process), and its answer, not yet written."""
    if not user.can("member"):
        raise GenerationRefused(403, f"Generating answers needs the member role; you are a {user.role}.")
    model_id = str(form.get("model", ""))
    m = next((m for m in _chat_models(session, user) if m.id == model_id), None)
    if m is None:
        raise GenerationRefused(404, f"There is no chat model {model_id!r} in your organisation.")
    settings = generation.settings_from(form.get("max_new_tokens"), form.get("temperature"), form.get("top_p"))
    prompt = generation.check_prompt(str(form.get("prompt", "")))
    try:         # billed per 1K requests, like a prediction: never served on credit that is gone
        check_served(session, user.tenant_id, 1)
        lm = await run_in_threadpool(generation.load, request.app.state.predictors, m.artifact_path)
        answer = await run_in_threadpool(generation.start, lm, prompt, settings)
    except NoCreditForServing as exc:
        raise GenerationRefused(402, str(exc)) from None
    try:
        count_served(session, user.tenant_id, 1)
    except NoCreditForServing as exc:     # a concurrent request took the last of the credit
        answer.close()                    # its generation slot back
        raise GenerationRefused(402, str(exc)) from None
    return m, answer


@router.post("/playground/chat")
async def chat_answer(request: Request, user: UserDep, session: SessionDep):
    """Without JavaScript: the whole answer, in the page."""
    form = await checked_form(request, user)
    values = {k: str(form.get(k) or "") for k in ("model", "prompt", "max_new_tokens", "temperature")}
    try:
        _, answer = await _answer(request, user, session, form)
        text = await run_in_threadpool(answer.text)
    except GenerationRefused as exc:
        if exc.status == 404:
            raise PageError(404, "Not found", exc.message) from None
        return _chat(request, user, session, values["model"] or None, values["prompt"], form=values,
                     error=exc.message, status=exc.status)
    return _chat(request, user, session, values["model"], values["prompt"], answer=text, form=values)


@router.post("/playground/chat/stream")
async def chat_stream(request: Request, user: UserDep, session: SessionDep):
    """The answer as chunked plain text, each piece sent as the model writes it (the page's script
    reads it with fetch); a refusal is a plain-text sentence with its status."""
    form = await checked_form(request, user)
    try:
        _, answer = await _answer(request, user, session, form)
    except GenerationRefused as exc:
        return PlainTextResponse(exc.message, status_code=exc.status)
    return StreamingResponse(iter(answer), media_type="text/plain; charset=utf-8",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no",
                                      "X-Prompt-Tokens": str(answer.prompt_tokens)})
