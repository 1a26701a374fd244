"""Datasets: upload (streamed, size-capped) -> validation report -> stats -> preview; delete.

A text+label table (task text-classification), an archive of images (zip or tar: one folder per
class, or a CSV/JSONL of path,label inside; task image-classification) or generative data: chat conversations (OpenAI
`messages`, ShareGPT, alpaca), plain text, preference pairs; the content decides (`task`, `kind`)."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile

from ...data import DataError
from ...data.readers import DataLimits
from ...db.models import Dataset
from ...services.billing import QuotaExceeded, check_upload
from ...services.datasets import dataset_task, import_dataset, preview
from ...services.datasets import delete_dataset as remove_dataset
from ...services.image_datasets import public_stats
from ...services.parsing import ParserCrashed
from ..deps import MemberDep, ScopeDep, SessionDep, SettingsDep, audit
from ...contract import Dataset as DatasetOut, DatasetList, DatasetPreview, Deleted
from ..errors import AUTH, APIError, errors
from ..schemas import ColumnChoice, Rename, dataset_out
from ...db.models import MAX_NAME
from ...jobs.spec import NAME_PATTERN
from ...services.models_naming import rename_dataset
from ..uploads import cleanup, save_upload
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/datasets", tags=["datasets"])


def ingest(session, settings, principal, file: UploadFile, purpose: str, text_column: str | None,
           label_column: str | None, name: str | None = None, sheet: str | None = None) -> Dataset:
    """Shared by tunelab's upload and OpenAI's /v1/files."""
    path = save_upload(file, settings.uploads_dir, settings.max_upload_bytes)
    try:
        check_upload(session, principal.tenant_id, path.stat().st_size)     # quotas: 429 naming the quota
        limits = DataLimits.from_env()
        limits = DataLimits(max_bytes=settings.max_upload_bytes, max_rows=limits.max_rows)
        row = import_dataset(session, principal.tenant_id, settings.home, path,
                             file.filename or "upload", purpose=purpose, text_column=text_column or None,
                             label_column=label_column or None, limits=limits, parsers=settings.upload_parsers,
                             name=name, sheet=sheet or None)
        audit(session, principal, "dataset.upload", row.id, filename=row.filename, bytes=row.bytes)
        return row
    except DataError as exc:
        raise APIError(422, "invalid_file", str(exc), "file",
                       issues=[i.to_dict() for i in exc.issues]) from None
    except QuotaExceeded as exc:
        raise APIError(429, "quota_exceeded", str(exc), exc.quota, **exc.to_dict()) from None
    except ParserCrashed as exc:
        raise APIError(422, "invalid_file", f"The file could not be read: {exc} (it may need more memory "
                       "than a parser has).", "file") from None
    finally:
        cleanup(path)


def out(d: Dataset, full: bool = False) -> dict:
    """The API's dataset, with the task its data is for (read from the report)."""
    task, kind = dataset_task(d)
    shown = dataset_out(d, full=full) | {"task": task, "kind": kind}
    if "stats" in shown:        # an image dataset's sealed thumbnails: GET .../preview shows them
        shown["stats"] = public_stats(shown["stats"])
    return shown


# An empty file is refused (400 empty_file): the document says so with minLength, as it does for
# the form's strings (an empty form field reads as missing).
NonEmptyFile = File(..., json_schema_extra={"minLength": 1})


@router.post("", status_code=201, response_model=DatasetOut, responses=errors(*AUTH, 400, 403, 413, 422, 507))
def upload(session: SessionDep, settings: SettingsDep, principal: MemberDep, file: UploadFile = NonEmptyFile,
           text_column: str | None = Form(None), label_column: str | None = Form(None),
           purpose: str = Form("fine-tune"),
           name: str | None = Form(None, max_length=MAX_NAME, pattern=NAME_PATTERN,
                                   description="what people call it (default: the file name without its suffix)"),
           sheet: str | None = Form(None, max_length=100, description="an Excel workbook's sheet, by name "
                                    "(default: the first sheet with data); the workbook is kept as that sheet alone")):
    return out(ingest(session, settings, principal, file, purpose, text_column, label_column, name, sheet), full=True)


@router.get("", response_model=DatasetList, responses=errors(*AUTH))
def list_datasets(scope: ScopeDep):
    return {"data": [out(d) for d in scope.list(Dataset, order_by=Dataset.created_at.desc())]}


@router.get("/{dataset_id}", response_model=DatasetOut, responses=errors(*AUTH, 404))
def get_dataset(dataset_id: str, scope: ScopeDep):
    return out(scope.get(Dataset, dataset_id, "dataset"), full=True)


@router.get("/{dataset_id}/preview", response_model=DatasetPreview, responses=errors(*AUTH, 404, 422))
def preview_dataset(dataset_id: str, scope: ScopeDep, settings: SettingsDep, limit: int = 20):
    row = scope.get(Dataset, dataset_id, "dataset")
    return {"data": preview(settings.home, row, max(1, min(limit, 500)), parsers=settings.upload_parsers)}


@router.patch("/{dataset_id}", response_model=DatasetOut, responses=errors(*AUTH, 400, 403, 404, 422))
def rename(dataset_id: str, body: Rename, scope: ScopeDep, principal: MemberDep):
    """A new name (the id stays)."""
    row, old = rename_dataset(scope, dataset_id, body.name)
    audit(scope.session, principal, "dataset.rename", row.id, old=old, new=row.name)
    return out(row, full=True)


@router.post("/{dataset_id}/drop-error-rows", status_code=201, response_model=DatasetOut,
             responses=errors(*AUTH, 403, 404, 409, 422, 429, 507))
def drop_error_rows(dataset_id: str, scope: ScopeDep, principal: MemberDep, settings: SettingsDep):
    """A new dataset: this one without the rows that have errors (empty text, no label, a label with a
    single example); the original is kept. Its `stats.derived_from` names the source and the lines dropped."""
    from ...services.dataset_fixes import NotATable, drop_error_rows as drop_rows

    source = scope.get(Dataset, dataset_id, "dataset")
    try:
        check_upload(scope.session, principal.tenant_id, source.bytes)
        row, source, dropped = drop_rows(scope, settings.home, dataset_id, parsers=settings.upload_parsers)
    except NotATable as exc:
        raise APIError(409, "not_a_table", str(exc), "dataset_id") from None
    except DataError as exc:
        status = 409 if exc.issues and exc.issues[0].code == "nothing_to_drop" else 422
        raise APIError(status, exc.issues[0].code if exc.issues else "invalid_file", str(exc), "dataset_id",
                       issues=[i.to_dict() for i in exc.issues]) from None
    except QuotaExceeded as exc:
        raise APIError(429, "quota_exceeded", str(exc), exc.quota, **exc.to_dict()) from None
    except ParserCrashed as exc:
        raise APIError(422, "invalid_file", f"The file could not be read again: {exc}.", "dataset_id") from None
    audit(scope.session, principal, "dataset.drop_error_rows", row.id, source=source.id, dropped=dropped)
    return out(row, full=True)


@router.post("/{dataset_id}/columns", response_model=DatasetOut, responses=errors(*AUTH, 400, 403, 404, 409, 422))
def choose_columns(dataset_id: str, body: ColumnChoice, scope: ScopeDep, principal: MemberDep,
                   settings: SettingsDep):
    """Choose which column is the text and which the label (from `report.columns`): the file is read
    again with them and validated again (report, stats and status follow). `names`: what to call
    columns on the pages (a file without a header has column_1, column_2, ...)."""
    from ...services.dataset_fixes import NotATable, choose_columns as choose

    try:
        row, before = choose(scope, settings.home, dataset_id, body.text_column, body.label_column,
                             names=body.names, parsers=settings.upload_parsers)
    except NotATable as exc:
        raise APIError(409, "not_a_table", str(exc), "dataset_id") from None
    except DataError as exc:
        param = next((p for p in ("label_column", "names") if f"({p})" in str(exc)), "text_column")
        raise APIError(422, exc.issues[0].code if exc.issues else "invalid_file", str(exc), param,
                       issues=[i.to_dict() for i in exc.issues]) from None
    except ParserCrashed as exc:
        raise APIError(422, "invalid_file", f"The file could not be read again: {exc}.", "dataset_id") from None
    audit(scope.session, principal, "dataset.columns", row.id, before=before,
          after={"text_column": row.text_column, "label_column": row.label_column})
    return out(row, full=True)


@router.delete("/{dataset_id}", response_model=Deleted, responses=errors(*AUTH, 403, 404))
def delete_dataset(dataset_id: str, scope: ScopeDep, principal: MemberDep, settings: SettingsDep):
    remove_dataset(scope, settings.home, dataset_id)
    audit(scope.session, principal, "dataset.delete", dataset_id)
    return {"id": dataset_id, "deleted": True}
