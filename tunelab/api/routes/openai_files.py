"""OpenAI-compatible /v1/files: a file here is a tenant's dataset (same ids)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import Response

from ...services.datasets import delete_dataset, stored_dataset
from ...db.models import Dataset
from ..deps import MemberDep, PrincipalDep, ScopeDep, SessionDep, SettingsDep, audit
from ...contract import FileDeleted, FileList, FileObject
from ..errors import AUTH, APIError, errors
from ..schemas import ts
from .datasets import NonEmptyFile, ingest
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/v1/files", tags=["openai"])
PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "user_data", "evals", "vision")
# Required, and one of OpenAI's purposes: an enum in the document, not only a check in code.
Purpose = Literal[PURPOSES]


def file_out(d: Dataset) -> dict:
    errors = [i["message"] for i in d.report.get("issues", []) if i.get("severity") == "error"]
    return {"id": d.id, "object": "file", "bytes": d.bytes, "created_at": ts(d.created_at), "filename": d.filename,
            "purpose": d.purpose, "status": d.status, "status_details": "; ".join(errors) or None,
            "expires_at": None}


@router.post("", response_model=FileObject, responses=errors(*AUTH, 400, 403, 413, 422, 507))
def create_file(session: SessionDep, settings: SettingsDep, principal: MemberDep,
                file: UploadFile = NonEmptyFile, purpose: Purpose = Form(...)):
    if purpose not in PURPOSES:
        raise APIError(400, "invalid_purpose", f"Unknown purpose {purpose!r}.", "purpose")
    return file_out(ingest(session, settings, principal, file, purpose, None, None))


@router.get("", response_model=FileList, responses=errors(*AUTH, 400))
def list_files(scope: ScopeDep, purpose: str | None = None, limit: int = 10000, after: str | None = None,
               order: str = "desc"):
    where = [Dataset.purpose == purpose] if purpose else []
    key = Dataset.created_at.desc() if order == "desc" else Dataset.created_at
    rows = list(scope.list(Dataset, *where, order_by=key))
    if after:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    page = rows[:max(1, min(limit, 10000))]
    return {"object": "list", "data": [file_out(d) for d in page], "has_more": len(rows) > len(page),
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}


@router.get("/{file_id}", response_model=FileObject, responses=errors(*AUTH, 404))
def retrieve_file(file_id: str, scope: ScopeDep):
    return file_out(scope.get(Dataset, file_id, "file"))


@router.get("/{file_id}/content", response_class=Response, responses={
    200: {"description": "The file's bytes", "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}, **errors(*AUTH, 404)})
def file_content(file_id: str, scope: ScopeDep, settings: SettingsDep, principal: PrincipalDep):
    row = scope.get(Dataset, file_id, "file")
    audit(scope.session, principal, "dataset.download", row.id)
    stored = stored_dataset(settings.home, row)
    if stored is None:
        raise APIError(404, "not_found", f"The content of {file_id} is gone.")
    return Response(stored.read(), media_type="application/octet-stream",
                    headers={"Content-Disposition": attachment(row.filename)})


def attachment(filename: str) -> str:
    """RFC 6266's percent-encoded form: a user's file name with quotes or non-Latin-1 letters
    can neither break the header nor fail to encode it (a 500)."""
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


@router.delete("/{file_id}", response_model=FileDeleted, responses=errors(*AUTH, 403, 404))
def delete_file(file_id: str, scope: ScopeDep, principal: MemberDep, settings: SettingsDep):
    scope.get(Dataset, file_id, "file")          # a missing id is "file", not "dataset"
    delete_dataset(scope, settings.home, file_id)
    audit(scope.session, principal, "dataset.delete", file_id)
    return {"id": file_id, "object": "file", "deleted": True}
