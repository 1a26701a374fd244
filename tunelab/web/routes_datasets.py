"""Datasets: upload (drag and drop, with progress), the validation report with each problem's
lines and fix, stats, a preview, delete. A text+label table shows its labels and text lengths;
generative data (conversations, plain text, preference pairs) its turns, tokens per role and
conversation lengths, and a preview of the conversations; an archive of images its images per
class, sizes, aspect ratios, colour modes and a grid of thumbnails per class."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from pydantic import ValidationError
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes.datasets import choose_columns, delete_dataset, drop_error_rows, ingest, preview_dataset
from ..api.schemas import ColumnChoice, Rename
from ..api.routes.datasets import rename as rename_dataset
from .naming import NAME_RULE, checked_name, rename_form
from ..db.models import Dataset, Job
from ..db.scoped import TenantScope
from ..services.dataset_fixes import ROW_ERRORS, rows_with_errors
from ..services.datasets import dataset_task
from ..services.image_datasets import is_image_row
from .image_pages import dataset_context
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
    sheet = str(form.get("sheet") or "").strip()[:100] or None        # an Excel workbook's sheet
    name = str(form.get("name") or "").strip() or None
    if name is not None and checked_name(name) is None:
        return _list_page(request, user, session, error=NAME_RULE, filename=file.filename, status=422)
    try:
        row = await run_in_threadpool(ingest, session, settings, user.principal, file, "fine-tune",
                                      text_column, label_column, name, sheet)
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
async def dataset_page(dataset_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep,
                       dropped: str | None = None, columns: str | None = None, renamed: str | None = None):
    notice = "Renamed: the id stays the same for the API." if renamed else None
    if dropped is not None and dropped.isdigit() and len(dropped) < 10:
        notice = f"{int(dropped):,} row(s) with errors were dropped; the original dataset is kept as it was."
    elif columns:
        notice = "Columns saved: the dataset was checked again with them."
    return await _dataset_page(dataset_id, request, user, session, settings, notice=notice)


async def _dataset_page(dataset_id: str, request: Request, user, session, settings, *, notice: str | None = None,
                        error: str | None = None, status: int = 200):
    scope = TenantScope(session, user.tenant_id)
    row = scope.get(Dataset, dataset_id, "dataset")
    images = is_image_row(row)          # an archive of images: stats and thumbnails instead of rows
    sample = [] if images else (await run_in_threadpool(preview_dataset, row.id, scope, settings, PREVIEW_ROWS))["data"]
    label_bars, more_labels = bars(row.stats.get("label_counts") or {})
    used_by = scope.list(Job, order_by=Job.created_at.desc(), limit=200)
    used_by = [j for j in used_by if j.spec.get("dataset_id") == row.id][:10]
    issues = row.report.get("issues", [])
    task, kind = dataset_task(row)
    roles = [{"role": name, **info} for name, info in (row.stats.get("roles") or {}).items()]
    bad_rows = [] if task != "text-classification" else await run_in_threadpool(
        rows_with_errors, settings.home, row, parsers=settings.upload_parsers)
    error_lines = {ln for i in issues if i.get("severity") == "error" for ln in i.get("lines") or []}
    warning_lines = {ln for i in issues if i.get("severity") == "warning" for ln in i.get("lines") or []}
    row_errors = [i for i in issues if i.get("severity") == "error" and i.get("code") in ROW_ERRORS]
    # Distinct rows (a row can have an empty text and no label); line lists are capped on big files.
    fixable = len({ln for i in row_errors for ln in i.get("lines") or []})
    if any((i.get("count") or 0) > len(i.get("lines") or []) for i in row_errors):
        fixable = max(fixable, max(i.get("count") or 0 for i in row_errors))
    return render(request, "dataset.html", {
        "notice": notice, "error": error, "bad_rows": bad_rows, "error_lines": error_lines,
        "warning_lines": warning_lines, "fixable": fixable, "derived": row.stats.get("derived_from"),
        "columns": row.report.get("columns") or [], "sheets": row.report.get("sheets") or [],
        "generic_columns": any(c.startswith("column_") and c[7:].isdigit() for c in row.report.get("columns") or []),
        "d": row, "issues": issues, "sample": sample, "label_bars": label_bars, "more_labels": more_labels,
        "hist": histogram(row.stats), "jobs": used_by, "length": row.stats.get("length") or {},
        "unit": row.stats.get("length_unit", "tokens"), "task": task, "kind": kind,
        "generative": task != "text-classification" and not images, "roles": roles,
        "turns": row.stats.get("turns") or {}, "images": images,
        **(await run_in_threadpool(dataset_context, settings.home, row) if images else {})},
        status=status)


@router.post("/datasets/{dataset_id}/drop-error-rows")
async def drop_rows(dataset_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """A new dataset without the rows that have errors (the API's own route: audited the same way)."""
    need(user, "member")
    await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    try:
        new = await run_in_threadpool(drop_error_rows, dataset_id, scope, user.principal, settings)
    except APIError as exc:
        if exc.status == 404:
            raise
        return await _dataset_page(dataset_id, request, user, session, settings, error=exc.message, status=exc.status)
    return RedirectResponse(f"/datasets/{new['id']}?dropped={new['stats']['derived_from']['dropped_rows']}",
                            status_code=303)


@router.post("/datasets/{dataset_id}/columns")
async def set_columns(dataset_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """Which column is the text and which the label: the dataset is checked again with them."""
    need(user, "member")
    form = await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    text, label = (str(form.get(k) or "").strip()[:200] for k in ("text_column", "label_column"))
    if not text or not label:
        return await _dataset_page(dataset_id, request, user, session, settings, status=422,
                                   error="Choose a text column and a label column.")
    names = {k[5:]: str(v).strip() for k, v in list(form.multi_items())[:200] if k.startswith("name:")}
    try:
        choice = ColumnChoice(text_column=text, label_column=label,
                              names={c: n for c, n in names.items() if n} if names else None)
    except ValidationError:
        return await _dataset_page(dataset_id, request, user, session, settings, status=422,
                                   error="A column's name is 1 to 60 characters, on one line.")
    try:
        await run_in_threadpool(choose_columns, dataset_id, choice, scope, user.principal, settings)
    except APIError as exc:
        if exc.status == 404:
            raise
        return await _dataset_page(dataset_id, request, user, session, settings, error=exc.message, status=exc.status)
    return RedirectResponse(f"/datasets/{dataset_id}?columns=saved", status_code=303)


@router.post("/datasets/{dataset_id}/rename")
async def rename(dataset_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """A new name (the API's own PATCH: the same checks, the same audit entry); the id stays."""
    scope, name = await rename_form(request, user, session, Dataset, dataset_id, "dataset")
    if name is None:
        return await _dataset_page(dataset_id, request, user, session, settings, error=NAME_RULE, status=422)
    rename_dataset(dataset_id, Rename(name=name), scope, user.principal)
    return RedirectResponse(f"/datasets/{dataset_id}?renamed=1", status_code=303)


@router.post("/datasets/{dataset_id}/delete")
async def delete(dataset_id: str, request: Request, user: UserDep, session: SessionDep):
    need(user, "member")
    await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    row = scope.get(Dataset, dataset_id, "dataset")
    name = row.name or row.filename
    delete_dataset(dataset_id, scope, user.principal, request.app.state.settings)   # the API's own delete: audited the same way
    return RedirectResponse(f"/datasets?deleted={quote(name)}", status_code=303)
