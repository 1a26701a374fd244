"""Batch predictions: a file of texts labelled by a tuned classifier, as a job (kind batch-predict).

`POST /api/v1/batch-predictions` takes the file (CSV, TSV, JSONL or text, one text a line) and the
tuned model; it answers the job. A file already uploaded is labelled with `POST /api/v1/jobs` and
`{"kind": "batch-predict", "tuned_model": ..., "dataset_id": ...}`. Either is estimated, billed per
prediction and followed like any job (its events, its stream, cancel). `GET
/api/v1/jobs/{id}/output` streams the finished output: one row per input row, in order, with the
label, its probability and the top k labels."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, File, Form, Header, UploadFile
from fastapi.responses import StreamingResponse

from ...contract import Job as JobOut
from ...db.models import Job, TunedModel
from ...db.scoped import TenantScope
from ...services import batch_predictions as service
from ..deps import MemberDep, PrincipalDep, ScopeDep, SessionDep, SettingsDep, audit
from ..downloads import release_with, take_slot
from ..errors import AUTH, APIError, errors
from ..routing import ContractRoute
from ..schemas import job_out
from ..uploads import cleanup, save_upload
from .jobs import CREATE_ERRORS, create

router = APIRouter(route_class=ContractRoute, tags=["batch predictions"])
P = "/api/v1/batch-predictions"


@router.post(P, status_code=201, response_model=JobOut, responses={**CREATE_ERRORS, **errors(413)})
def create_batch(session: SessionDep, settings: SettingsDep, principal: MemberDep,
                 model: str = Form(..., min_length=1, max_length=200, description="the tuned model (ft:…)"),
                 file: UploadFile = File(..., json_schema_extra={"minLength": 1},
                                         description="the texts: CSV, TSV, JSONL or text (one a line)"),
                 top_k: int = Form(3, ge=1, le=20, description="labels (with probabilities) listed per row"),
                 format: Literal["csv", "jsonl"] = Form("csv", description="the output file's format"),
                 text_column: str | None = Form(None, min_length=1, max_length=200,
                                                description="the column or JSON field of the texts (detected "
                                                            "when left out)"),
                 idempotency_key: str | None = Header(None, max_length=200)):
    """Label every text of a file with a tuned classifier: a job of kind batch-predict. 404: no such
    model for this tenant; 422: a model that does not label texts, or a file with no text in it; 402
    without the credit for its estimate; 413 over the upload limit."""
    scope = TenantScope(session, principal.tenant_id)
    found = scope.find(TunedModel, model)
    if found is None:
        raise APIError(404, "model_not_found", f"No tuned model with id {model!r}.", "model")
    if not service.is_classifier(found):
        raise APIError(422, "not_a_classifier", f"{found.id} generates text and does not label texts; batch "
                       "predictions need a classifier.", "model")
    path = save_upload(file, settings.uploads_dir, settings.max_upload_bytes)
    try:
        row = service.store_input(session, principal.tenant_id, settings.home, path, file.filename or "texts.txt",
                                  text_column)
    except ValueError as exc:
        raise APIError(422, "invalid_file", str(exc), "file") from None
    finally:
        cleanup(path)
    audit(session, principal, "dataset.upload", row.id, filename=row.filename, bytes=row.bytes, purpose="batch")
    job, _ = create(session, principal, service.spec_for(model, row.id, top_k, format, text_column), idempotency_key)
    return job_out(job)


@router.get("/api/v1/jobs/{job_id}/output", response_class=StreamingResponse, responses={
    200: {"description": "A batch-prediction job's output: CSV (row, text, label, probability, then each of "
                         "the top k labels and its probability) or JSONL (the same, an object a row)",
          "content": {"text/csv": {"schema": {"type": "string"}},
                      "application/jsonl": {"schema": {"type": "string"}}}},
    **errors(*AUTH, 404, 409)}, tags=["jobs"])
def job_output(job_id: str, scope: ScopeDep, principal: PrincipalDep, settings: SettingsDep):
    """The finished output of a batch-prediction job, decrypted as it is sent. 409 while the job has
    not succeeded (or is of another kind)."""
    job = scope.get(Job, job_id, "job")
    try:
        out = service.output_of(job)
    except service.OutputNotReady as exc:
        raise APIError(409, "no_output", str(exc), "job_id") from None
    slot = take_slot(settings.max_concurrent_downloads)
    audit(scope.session, principal, "job.output_download", job.id)
    return StreamingResponse(release_with(service.output_chunks(settings.home, job), slot),
                             media_type=out.get("media_type") or "text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{service.download_name(job, out)}"'})
