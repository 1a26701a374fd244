"""Request bodies (validated, extra fields refused) and the JSON shapes of tunelab's own API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..db.models import ApiKey, Dataset, Job, JobEvent, TunedModel, User, Webhook, WebhookDelivery
from ..jobs.spec import ModelName
from ..jobs.webhooks import EVENTS, excerpt

# The job events a webhook can subscribe to, as an enum in the document (not only a check in code).
WebhookEvent = Literal[EVENTS]


class Body(BaseModel):
    # strict: a JSON body is taken as the document types it (no `true` for an integer, no `"1"`
    # for a boolean), so what the schema calls invalid is refused
    model_config = ConfigDict(extra="forbid", strict=True)


class UserCreate(Body):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    role: str = Field(default="member", pattern="^(admin|member|viewer)$")
    password: str | None = Field(default=None, min_length=8)


class UserUpdate(Body):
    role: str = Field(pattern="^(admin|member|viewer)$")


class KeyCreate(Body):
    name: str = Field(default="", max_length=200)


class WebhookCreate(Body):
    # The route also refuses internal addresses (security/egress.py); delivery checks them again.
    url: str = Field(pattern=r"^https?://", max_length=2000, description="a public http(s) URL")
    events: list[WebhookEvent] = Field(default_factory=list, description="none: every event")


class Rename(Body):
    """A new human name (a dataset's, a tuned model's); the id stays."""
    name: ModelName = Field(description="1-120 printable characters, trimmed")


ColumnKey = Annotated[str, Field(min_length=1, max_length=200)]
ColumnName = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")]


class ColumnChoice(Body):
    """Which of a table's columns holds the text and which the label (the dataset is validated again)."""
    text_column: str = Field(min_length=1, max_length=200, description="a column of the file (`report.columns`)")
    label_column: str = Field(min_length=1, max_length=200, description="another column of the file")
    names: dict[ColumnKey, ColumnName] | None = Field(
        None, max_length=50, description="names to show for columns (e.g. a file without a header: "
        '{"column_1": "category"}); the file keeps its columns, `report.column_names` keeps these')


class PredictBody(Body):
    texts: list[str] = Field(min_length=1, max_length=1000)


# An image as base64 (standard alphabet, padding optional), bare or as a data: URL; what it holds is
# checked when it is decoded (services/predictions.py), after the body's size cap (api/bodies.py).
BASE64_IMAGE = r"^(data:image/[A-Za-z0-9.+-]+;base64,)?[A-Za-z0-9+/]+={0,2}$"
MAX_IMAGES = 16          # a request's images: CPU inference time stays in a request's range


class ImagePredictBody(Body):
    images: list[Annotated[str, Field(min_length=4, pattern=BASE64_IMAGE)]] = Field(
        min_length=1, max_length=MAX_IMAGES, description="each image file (PNG, JPEG, ...) as base64, "
        "or as a data: URL; the whole body is capped by TUNELAB_MAX_BODY_MB")


def ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def user_out(u: User) -> dict:
    return {"id": u.id, "email": u.email, "role": u.role, "created_at": ts(u.created_at)}


def key_out(k: ApiKey) -> dict:
    return {"id": k.id, "name": k.name, "prefix": f"tl-{k.prefix}", "user_id": k.user_id,
            "created_at": ts(k.created_at), "last_used_at": ts(k.last_used_at), "revoked_at": ts(k.revoked_at)}


def dataset_out(d: Dataset, full: bool = False) -> dict:
    out = {"id": d.id, "name": d.name, "filename": d.filename, "purpose": d.purpose, "bytes": d.bytes, "status": d.status,
           "rows": d.rows, "text_column": d.text_column, "label_column": d.label_column,
           "labels": d.stats.get("num_labels"), "created_at": ts(d.created_at)}
    if full:
        out.update(report=d.report, stats=d.stats)
    return out


def job_out(j: Job) -> dict:
    return {"id": j.id, "kind": j.kind, "status": j.status, "spec": j.spec, "attempts": j.attempts,
            "progress": j.progress, "result": j.result, "fine_tuned_model": j.fine_tuned_model,
            "error": {"code": j.error_code, "message": j.error_message} if j.error_code else None,
            "cancel_requested": j.cancel_requested, "created_at": ts(j.created_at),
            "started_at": ts(j.started_at), "finished_at": ts(j.finished_at),
            "billing": job_billing_out(j.billing) if getattr(j, "billing", None) is not None else None,
            "placement": j.placement or None, **resume_fields(j)}


def resume_fields(j) -> dict:
    """Whether the job can be resumed (services.job_resume): attached by the read that loaded it
    (`j.resumability`), else read through the row's own session (a checkpoint matters only for
    a cancelled or paused run)."""
    from sqlalchemy.orm import object_session
    from sqlalchemy.orm.exc import UnmappedInstanceError

    from ..services import job_resume

    found = getattr(j, "resumability", None)
    if found is None:
        try:
            session = object_session(j)
        except UnmappedInstanceError:
            session = None
        found = job_resume.describe(session.connection(), j) if session is not None else \
            job_resume.assess(j.kind, j.status, None)
    return {"resumable": found.resumable, "resume_from_step": found.step, "resume_note": found.reason}


def job_billing_out(jb) -> dict:
    """The job's estimate (shown before it starts) and, as it runs and once it ends, its cost."""
    from ..billing.reports import job_summary

    return job_summary(jb)


def event_out(e: JobEvent) -> dict:
    return {"id": e.id, "job_id": e.job_id, "type": e.type, "level": e.level, "message": e.message,
            "data": e.data, "created_at": e.created_at.isoformat()}


def tuned_out(m: TunedModel) -> dict:
    return {"id": m.id, "name": m.name, "object": "model", "kind": "tuned", "base_model": m.base_model, "strategy": m.strategy,
            "job_id": m.job_id, "metrics": m.metrics, "created_at": ts(m.created_at)}


def webhook_out(w: Webhook, secret: bool = False) -> dict:
    out = {"id": w.id, "url": w.url, "events": w.events, "created_at": ts(w.created_at)}
    if secret:
        out["secret"] = w.secret
    return out


def delivery_out(d: WebhookDelivery) -> dict:
    return {"id": d.id, "webhook_id": d.webhook_id, "job_id": d.job_id, "event": d.event, "status": d.status,
            "attempts": d.attempts, "response_status": d.response_status, "response_body": excerpt(d.response_body),
            "duration_ms": d.duration_ms, "last_attempt_at": ts(d.last_attempt_at), "payload": d.payload}
