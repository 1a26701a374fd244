"""Batch predictions in the web app: "Predict a file" (a file of texts labelled by a tuned model, as
a job: its live page, then a download), "Score a list" in the playground (up to MAX_LINES pasted
texts, a table of label and probability per line), and a batch job's page and download. Each goes
through the API's own routes (the same checks, billing and audit)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes.batch_predictions import create_batch
from ..api.routes.models import predict_route
from ..api.schemas import PredictBody
from ..db.models import Dataset, Job, TunedModel
from ..db.scoped import TenantScope
from ..jobs.spec import BATCH
from ..services import batch_predictions as service
from . import credits
from .deps import PageError, UserDep, checked_form, need, render

router = APIRouter(include_in_schema=False)
MAX_LINES = 200
MAX_TEXT = 5000


@router.post("/batch-predictions")
async def start(request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """The "Predict a file" form: the API's own route, then the job's live page."""
    need(user, "member")
    form = await checked_form(request, user)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise PageError(422, "Choose a file", "Choose a file of texts to label (CSV, TSV, JSONL or text, one a line).")
    try:
        top_k = int(str(form.get("top_k") or 3))
    except ValueError:
        top_k = 0
    fmt = str(form.get("format") or "csv")
    if not 1 <= top_k <= 20 or fmt not in ("csv", "jsonl"):
        raise PageError(422, "Invalid request", "Choose 1 to 20 labels per row and CSV or JSONL.")
    model = str(form.get("model") or "")[:200]
    column = str(form.get("text_column") or "").strip()[:200] or None
    try:
        job = await run_in_threadpool(create_batch, session, settings, user.principal, model=model, file=file,
                                      top_k=top_k, format=fmt, text_column=column,
                                      idempotency_key=None)
    except APIError as exc:
        raise PageError(exc.status, "The file could not be labelled", exc.message) from None
    return RedirectResponse(f"/jobs/{job['id']}", status_code=303)


@router.post("/playground/list")
async def score_list(request: Request, user: UserDep, session: SessionDep):
    """"Score a list": one text a line, each labelled, as a table (the API's predict route)."""
    form = await checked_form(request, user)
    model_id = str(form.get("model") or "")[:200]
    lines = [line.strip() for line in str(form.get("texts") or "").splitlines() if line.strip()]
    ctx = {"rows": [], "error": None, "max_lines": MAX_LINES}
    if not lines:
        ctx["error"] = "Paste one text a line."
    elif len(lines) > MAX_LINES:
        ctx["error"] = f"At most {MAX_LINES} lines here ({len(lines):,} pasted): use Predict a file for more."
    elif any(len(line) > MAX_TEXT for line in lines):
        ctx["error"] = f"Each line is limited to {MAX_TEXT:,} characters here."
    if ctx["error"]:
        return render(request, "_score_list.html", ctx, status=422)
    scope = TenantScope(session, user.tenant_id)
    m = scope.get(TunedModel, model_id, "model")
    if not service.is_classifier(m):
        return render(request, "_score_list.html", {**ctx, "error": "This model does not label texts."}, status=409)
    try:
        out = (await predict_route(model_id, PredictBody(texts=lines), scope, request))["data"]
    except APIError as exc:
        return render(request, "_score_list.html", {**ctx, "error": exc.message}, status=exc.status)
    except (FileNotFoundError, ValueError) as exc:
        return render(request, "_score_list.html", {**ctx, "error": f"The model cannot be loaded ({exc})."},
                      status=409)
    ctx["rows"] = [{"n": i + 1, "text": p["text"], "label": p["label"], "score": p["score"]} for i, p in enumerate(out)]
    return render(request, "_score_list.html", ctx)


def batch_context(session, user, job: Job, settings) -> dict:
    """What a batch-predict job's page shows besides the live panel (routes_jobs.job_page renders
    it): its model, its file, its result and the output's first lines, its cost."""
    scope = TenantScope(session, user.tenant_id)
    spec = job.spec or {}
    return {"chart_kind": {"metric": "f1", "caption": "Rows labelled over time (seconds since the job was created)."},
            "model": scope.find(TunedModel, spec.get("tuned_model")), "source": scope.find(Dataset, spec.get("dataset_id")),
            "result": job.result or {},
            "preview": service.output_preview(settings.home, job, 10) if job.status == "succeeded" else [],
            "cost": credits.job_cost(session, user.tenant_id, job.id)}


@router.get("/jobs/{job_id}/output")
def download(job_id: str, user: UserDep, session: SessionDep, settings: SettingsDep):
    from ..api.deps import audit
    from ..api.downloads import release_with, take_slot

    job = TenantScope(session, user.tenant_id).get(Job, job_id, "job")
    if job.kind != BATCH:
        raise PageError(404, "Not found", f"There is no batch prediction {job_id!r} in your organisation.")
    try:
        out = service.output_of(job)
    except service.OutputNotReady as exc:
        raise PageError(409, "Not ready", str(exc)) from None
    slot = take_slot(settings.max_concurrent_downloads)
    audit(session, user.principal, "job.output_download", job.id)
    return StreamingResponse(release_with(service.output_chunks(settings.home, job), slot),
                             media_type=out.get("media_type") or "text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{service.download_name(job, out)}"'})
