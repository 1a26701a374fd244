"""Deployments in the web app: the list (state in words, what each has served, delete), a
deployment's page (its state, refreshed while it loads; its endpoint and the code that calls it,
with this server's real URL and the real model name, never a key), and "Deploy" on a finished
model's page. Creating and deleting go through the API's own routes (the same checks, the same
audit entries, the same start of the model servers)."""

from __future__ import annotations

import json
import shlex
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes import deployments as api
from ..contract.deployments import MAX_MODELS, MAX_REPLICAS, DeploymentCreate
from ..db.models import TunedModel
from ..db.scoped import NotFound, TenantScope
from ..services import deployments as svc
from ..services.generation import is_generative
from ..services.models_naming import describe, display_name
from ..services.predictions import model_inputs
from .deps import PageError, UserDep, checked_form, need, render

router = APIRouter(include_in_schema=False)

# A deployment's state as a person reads it: (words, badge colour, one sentence on what it means).
STATES = {
    "loading": ("loading", "running", "Its model server is starting and loading the weights; this page updates "
                                      "by itself. Requests sent meanwhile wait until it is ready."),
    "ready": ("ready", "ready", "Answering requests."),
    "idle-unloaded": ("unloaded while idle", "paused", "Nothing is loaded, so it uses no memory: it wakes on the "
                                                       "next request, which waits a few seconds while the model "
                                                       "loads."),
    "failed": ("failed", "failed", "Its model server could not start."),
    "stopped": ("stopped", "paused", "Its model servers are stopped: the next request starts them again."),
}
# A classifier's engines: (value, name, what choosing it means).
ENGINES = [
    ("torch", "PyTorch", "The model exactly as it was trained: the same answers as the playground."),
    ("onnx", "ONNX", "Exported once to ONNX and run by onnxruntime: usually faster on these CPUs, with the "
                     "same answers up to rounding."),
    ("onnx-int8", "ONNX int8", "ONNX with its weights stored as 8-bit integers: faster and four times smaller "
                               "again; a few answers may change (checked to cost at most 0.01 macro-F1 on the "
                               "test split)."),
]
IDLE_CHOICES = [(900, "15 minutes"), (3600, "1 hour"), (86_400, "1 day"), (0, "never")]


def state_words(view: dict) -> dict:
    """{"key", "words", "badge", "explain"} of a deployment's view: a failure says why."""
    key = view.get("state") or "idle-unloaded"
    words, badge, explain = STATES.get(key, (key, "", ""))
    if key == "failed" and view.get("error"):
        explain = f"{explain} The reason: {view['error']}"
    if key == "failed":
        explain += " Delete it and deploy the model again; if it fails again, the model's files may be damaged."
    return {"key": key, "words": words, "badge": badge, "explain": explain}


def model_names(scope: TenantScope, refs: list[str]) -> list[dict]:
    """[{id, name, link}] for a deployment's models: a tuned model's name (a link to its page), a
    catalog model's name as it is, a model deleted since marked so."""
    tuned = {m.id: m for m in scope.list(TunedModel, TunedModel.id.in_(refs))} if refs else {}
    out = []
    for ref in refs:
        m = tuned.get(ref)
        if m is not None:
            out.append({"id": ref, "name": display_name(m), "link": f"/models/{quote(ref, safe='')}"})
        else:
            out.append({"id": ref, "name": ref if ":" not in ref else f"{ref} (deleted)", "link": None})
    return out


def _curl(url: str, data: str) -> dict:
    """A curl snippet that POSTs JSON with the key from the environment; `data` is already quoted for the shell."""
    return {"title": "curl", "lang": "shell", "code": (
        f"curl -s {shlex.quote(url)} \\\n"
        "  -H \"Authorization: Bearer $TUNELAB_API_KEY\" \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {data}")}


def snippets(base_url: str, view: dict) -> list[dict]:
    """[{title, lang, code}] that call a deployment: each complete, the key left to the environment."""
    base = base_url.rstrip("/")
    if view["kind"] == "generate":
        model = view["models"][0]
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64})
        return [
            _curl(base + svc.CHAT_ENDPOINTS["chat_completions"], shlex.quote(body)),
            {"title": "Python (openai client)", "lang": "python", "code": (
                "import os\n\nfrom openai import OpenAI\n\n"
                f"client = OpenAI(base_url={base + '/v1'!r}, api_key=os.environ[\"TUNELAB_API_KEY\"])\n"
                f"answer = client.chat.completions.create(model={model!r},\n"
                "                                        messages=[{\"role\": \"user\", \"content\": \"Hello\"}])\n"
                "print(answer.choices[0].message.content)")},
        ]
    predict = base + quote(view["endpoints"]["predict"], safe="/")
    if predict.endswith("/predict-images"):
        return [
            _curl(predict, "\"{\\\"images\\\": [\\\"$(base64 -w0 photo.jpg)\\\"]}\""),
            {"title": "Python (tunelab SDK)", "lang": "python", "code": (
                "import os\n\nfrom tunelab.sdk import Client\n\n"
                f"with Client({base!r}, os.environ[\"TUNELAB_API_KEY\"]) as client:\n"
                f"    for p in client.deployments.predict_images({view['id']!r}, [\"photo.jpg\", \"scan.png\"]):\n"
                "        print(p.index, p.label, round(p.score, 3))")},
        ]
    return [
        _curl(predict, "'{\"texts\": [\"first text to label\", \"second text\"]}'"),
        {"title": "Python (tunelab SDK)", "lang": "python", "code": (
            "import os\n\nfrom tunelab.sdk import Client\n\n"
            f"with Client({base!r}, os.environ[\"TUNELAB_API_KEY\"]) as client:\n"
            f"    for p in client.deployments.predict({view['id']!r}, [\"first text to label\", \"second text\"]):\n"
            "        print(p.label, round(p.score, 3), p.text)")},
    ]


def serving_available(request: Request) -> bool:
    return api.supervisor_of(request) is not None


def _shown(request: Request, scope: TenantScope, row) -> dict:
    view = svc.view(row, api.supervisor_of(request))
    return {**view, "status": state_words(view), "names": model_names(scope, view["models"]),
            "tokens": view["prompt_tokens"] + view["completion_tokens"], "created": row.created_at}


def _row(scope: TenantScope, deployment_id: str):
    try:
        return svc.get_deployment(scope.session, scope.tenant_id, deployment_id)
    except svc.DeploymentRefused:        # another tenant's is the same page as any unknown id
        raise NotFound("deployment", deployment_id) from None


@router.get("/deployments")
def deployments(request: Request, user: UserDep, session: SessionDep):
    scope = TenantScope(session, user.tenant_id)
    rows = [_shown(request, scope, r) for r in reversed(svc.list_deployments(session, user.tenant_id))]
    return render(request, "deployments.html", {"rows": rows, "available": serving_available(request)})


@router.get("/deployments/new/{model_id:path}")
def new_deployment(model_id: str, request: Request, user: UserDep, session: SessionDep):
    """The Deploy form on a page of its own (the model page has it too); errors come back here."""
    need(user, "member")
    return _deploy_page(request, TenantScope(session, user.tenant_id), model_id)


@router.get("/deployments/{deployment_id}")
def deployment_page(deployment_id: str, request: Request, user: UserDep, session: SessionDep):
    scope = TenantScope(session, user.tenant_id)
    d = _shown(request, scope, _row(scope, deployment_id))
    endpoint = str(request.base_url).rstrip("/") + (
        d["endpoints"].get("chat_completions") or d["endpoints"].get("predict") or "")
    return render(request, "deployments_detail.html", {"d": d, "endpoint": endpoint,
                                                       "available": serving_available(request),
                                                       "snippets": snippets(str(request.base_url), d)})


@router.get("/deployments/{deployment_id}/state")
def deployment_state(deployment_id: str, request: Request, user: UserDep, session: SessionDep):
    """The state panel alone: the page polls it (htmx) while the deployment loads."""
    scope = TenantScope(session, user.tenant_id)
    return render(request, "deployments_state.html", {"d": _shown(request, scope, _row(scope, deployment_id))})


@router.post("/deployments/{deployment_id}/delete")
async def delete(deployment_id: str, request: Request, user: UserDep, session: SessionDep):
    need(user, "member")
    await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    _row(scope, deployment_id)
    try:        # the API's own delete: its servers stopped, the same audit entry
        await run_in_threadpool(api.delete, deployment_id, scope, user.principal, request)
    except APIError as exc:
        raise PageError(exc.status, "Could not delete", exc.message) from None
    return RedirectResponse("/deployments?deleted=1", status_code=303)


# ---- "Deploy" on a finished model's page -----------------------------------------------------

def deploy_options(scope: TenantScope, m: TunedModel) -> dict:
    """What the Deploy form offers for model `m`: a generative model's companions (the tenant's
    other generative models of the same base, served together on one loaded copy of it); a text
    classifier's engines."""
    generative = is_generative(m)
    companions = []
    if generative:
        others = [o for o in scope.list(TunedModel, TunedModel.base_model == m.base_model, TunedModel.id != m.id)
                  if is_generative(o)]
        companions = describe(scope, others)
    engines = ENGINES if not generative and model_inputs(m) == "text" else ENGINES[:1]
    deployed = [r for r in svc.list_deployments(scope.session, scope.tenant_id) if m.id in (r.models or [])]
    return {"model": m, "generative": generative, "companions": companions, "engines": engines,
            "idle_choices": IDLE_CHOICES, "max_replicas": MAX_REPLICAS, "deployed": deployed}


def _number(value, kind, default):
    try:
        return kind(str(value)) if value not in (None, "") else default
    except ValueError:
        return None


def body_from(form, model_id: str) -> DeploymentCreate:
    """The form as the API's body: the model, the companions ticked, the choices."""
    extra = [str(v)[:200] for v in form.getlist("companion") if str(v) and str(v) != model_id]
    return DeploymentCreate(models=[model_id, *dict.fromkeys(extra)], name=str(form.get("name") or "").strip()[:120],
                            replicas=_number(form.get("replicas"), int, 1),
                            idle_seconds=_number(form.get("idle_seconds"), float, 900.0),
                            engine=str(form.get("engine") or "torch"))


def _deploy_page(request, scope, model_id: str, error: str | None = None, status: int = 200):
    m = scope.get(TunedModel, model_id, "model")
    return render(request, "deployments_new.html", {"deploy": deploy_options(scope, m), "error": error,
                                                    "available": serving_available(request)}, status=status)


@router.post("/models/{model_id:path}/deploy")
async def deploy(model_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    need(user, "member")
    form = await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    scope.get(TunedModel, model_id, "model")
    try:
        body = body_from(form, model_id)
    except ValidationError:
        return _deploy_page(request, scope, model_id, status=422, error=(
            f"Choose 1 to {MAX_REPLICAS} processes, an idle time from the list, an engine from the list, and at most "
            f"{MAX_MODELS - 1} other models."))
    try:         # the API's own create: the same checks, the audit entry, the servers start loading
        d = await run_in_threadpool(api.create, body, scope, user.principal, settings, request)
    except APIError as exc:
        return _deploy_page(request, scope, model_id, error=exc.message, status=exc.status)
    except svc.DeploymentRefused as exc:     # created, but its servers cannot be planned (a base gone)
        return _deploy_page(request, scope, model_id, error=exc.message, status=exc.status)
    return RedirectResponse(f"/deployments/{quote(d['id'], safe='')}", status_code=303)
