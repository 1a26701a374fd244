"""Datasets: upload (drag and drop, with progress), the validation report with each problem's
lines and fix, stats, a preview, delete. A text+label table shows its labels and text lengths;
generative data (conversations, plain text, preference pairs) its turns, tokens per role and
conversation lengths, and a preview of the conversations."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes.datasets import delete_dataset, ingest, preview_dataset
from ..db.models import Dataset, Job
from ..db.scoped import TenantScope
from ..services.datasets import dataset_task
from .deps import UserDep, checked_form, need, render

router = APIRouter(include_in_schema=False)
PREVIEW_ROWS = 20


def _list_page(request, user, session, *, error: str | None = None, issues: list | None = None,
               filename: str | None = None, status: int = 200, notice: str | None = None):
    rows = TenantScope(session, user.tenant_id).list(Dataset, order_by=Dataset.created_at.desc())
    return render(request, "datasets.html", {"datasets": rows, "error": error, "issues": issues or [],
                                             "filename": filename, "notice": notice}, status=status)


@router.get("/datasets")
def datasets(request: Request, user: UserDep, session: SessionDep, deleted: str | None = None):
    return _list_page(request, user, session, notice=f"Deleted {deleted}." if deleted else None)


@router.post("/datasets/upload")
async def upload(request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    need(user, "member")
    form = await checked_form(request, user)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return _list_page(request, user, session, error="Choose a file to upload.", status=422)
    text_column = str(form.get("text_column") or "").strip() or None
    label_column = str(form.get("label_column") or "").strip() or None
    try:
        row = await run_in_threadpool(ingest, session, settings, user.principal, file, "fine-tune",
                                      text_column, label_column)
    except APIError as exc:
        return _list_page(request, user, session, error=exc.message, issues=exc.extra.get("issues"),
                          filename=file.filename, status=exc.status)
    return RedirectResponse(f"/datasets/{row.id}", status_code=303)


def bars(counts: dict, top: int = 40) -> tuple[list[dict], int]:
    items = list(counts.items())
    peak = max((c for _, c in items), default=1) or 1
    shown = [{"label": k or "(missing)", "count": c, "pct": round(100 * c / peak, 1)} for k, c in items[:top]]
    return shown, max(0, len(items) - top)


def histogram(stats: dict) -> list[dict]:
    h = stats.get("histogram") or {}
    edges, counts = h.get("bins") or [], h.get("counts") or []
    peak = max(counts, default=1) or 1
    return [{"lo": edges[i], "hi": edges[i + 1], "count": c, "pct": round(100 * c / peak, 1)}
            for i, c in enumerate(counts) if i + 1 < len(edges)]


@router.get("/datasets/{dataset_id}")
async def dataset_page(dataset_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    scope = TenantScope(session, user.tenant_id)
    row = scope.get(Dataset, dataset_id, "dataset")
    sample = (await run_in_threadpool(preview_dataset, row.id, scope, settings, PREVIEW_ROWS))["data"]
    label_bars, more_labels = bars(row.stats.get("label_counts") or {})
    used_by = scope.list(Job, order_by=Job.created_at.desc(), limit=200)
    used_by = [j for j in used_by if j.spec.get("dataset_id") == row.id][:10]
    issues = row.report.get("issues", [])
    task, kind = dataset_task(row)
    roles = [{"role": name, **info} for name, info in (row.stats.get("roles") or {}).items()]
    return render(request, "dataset.html", {
        "d": row, "issues": issues, "sample": sample, "label_bars": label_bars, "more_labels": more_labels,
        "hist": histogram(row.stats), "jobs": used_by, "length": row.stats.get("length") or {},
        "unit": row.stats.get("length_unit", "tokens"), "task": task, "kind": kind,
        "generative": task != "text-classification", "roles": roles, "turns": row.stats.get("turns") or {}})


@router.post("/datasets/{dataset_id}/delete")
async def delete(dataset_id: str, request: Request, user: UserDep, session: SessionDep):
    need(user, "member")
    await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    name = scope.get(Dataset, dataset_id, "dataset").filename
    delete_dataset(dataset_id, scope, user.principal, request.app.state.settings)   # the API's own delete: audited the same way
    return RedirectResponse(f"/datasets?deleted={quote(name)}", status_code=303)
