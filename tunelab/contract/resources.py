"""tunelab's own resources (/api/v1): tenants, users, keys, datasets, jobs, comparisons, models, webhooks."""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import Field, model_validator

from .base import Obj
from .metrics import ComparisonRowObject, MetricsObject

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Tenant(Obj):
    id: str
    name: str
    created_at: int | None = None
    you: dict[str, Any] = Field(default_factory=dict, description="the caller: user_id and role")
    insecure_mode: bool = False


class User(Obj):
    id: str
    email: str
    role: str
    created_at: int | None = None


class UserList(Obj):
    data: list[User]


class ApiKey(Obj):
    id: str
    name: str = ""
    prefix: str = ""
    user_id: str | None = None
    created_at: int | None = None
    last_used_at: int | None = None
    revoked_at: int | None = None
    key: str | None = None              # only when created: it is not shown again
    note: str | None = None


class ApiKeyList(Obj):
    data: list[ApiKey]


class Dataset(Obj):
    id: str
    name: str = Field("", description="what people call it (PATCH to rename; the id stays): the file name "
                      "without its suffix unless given at upload")
    filename: str = ""
    purpose: str = ""
    bytes: int = 0
    status: str = ""
    rows: int | None = None
    task: str = Field("text-classification", description="what the data trains: text-classification, "
                      "image-classification (an archive of images), chat (conversations and plain text) or "
                      "preference (chosen/rejected pairs)")
    kind: str = Field("labelled", description="labelled (a text+label table), images, chat, plain or preference")
    text_column: str | None = None
    label_column: str | None = None
    labels: int | None = None
    created_at: int | None = None
    report: dict[str, Any] | None = None          # only from upload and get
    stats: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _task_from_report(cls, data: Any) -> Any:
        # A server that sends the report but not the fields: the report says it.
        if isinstance(data, dict) and isinstance(data.get("report"), dict):
            data = {**{k: data["report"][k] for k in ("task", "kind")
                       if data["report"].get(k) and k not in data}, **data}
        return data


class DatasetList(Obj):
    data: list[Dataset]


class PreviewMessage(Obj):
    role: str = Field(description="system, user or assistant; text for a plain-text document")
    content: str


class TextRow(Obj):
    """A row of a text+label table."""
    line: int
    text: str
    label: str


class ConversationRow(Obj):
    """A conversation (or a plain-text document: one message with the role text)."""
    line: int
    messages: list[PreviewMessage]


class PreferenceRow(Obj):
    """A preference pair: the prompt's messages, the chosen and the rejected answer."""
    line: int
    prompt: list[PreviewMessage]
    chosen: str
    rejected: str


class ImageRow(Obj):
    """An image of an archive: its member path, its label and a small thumbnail (a data: URL)."""
    line: int
    path: str
    label: str
    thumbnail: str | None = Field(None, description="a PNG thumbnail as a data: URL")


class DatasetPreview(Obj):
    data: list[TextRow | ConversationRow | PreferenceRow | ImageRow] = Field(
        description="the first rows, each with its line in the file: line, text, label for a table; "
                    "line, messages for conversations and plain text; line, prompt, chosen, rejected for "
                    "preference pairs; line, path, label, thumbnail for an image archive (a few a class)")


class JobError(Obj):
    code: str
    message: str = ""


def placement_line(placement: dict) -> str:
    """"Runs on node-1: gpu:0, gpu:1, 2 processes" (the job page says it the same way)."""
    devices = ", ".join(str(d) for d in placement.get("devices") or []) or "its CPUs"
    processes = int(placement.get("processes") or 1)
    return (f"Runs on {placement.get('node') or 'a worker'}: {devices}, {processes} process"
            f"{'' if processes == 1 else 'es'}")


class Job(Obj):
    id: str
    kind: str = Field("train", description="train, compare, bench-hardware (a hardware benchmark of the "
                                           "worker: `result.benchmark` holds its figures) or batch-predict "
                                           "(a file labelled: GET /api/v1/jobs/{id}/output)")
    status: str
    spec: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    created_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    billing: dict[str, Any] | None = None   # estimate (with its range) before it starts; cost as it runs
    resumable: bool = Field(False, description="A cancelled or paused training run with a checkpoint: "
                                               "`POST /api/v1/jobs/{id}/resume` continues it from there")
    resume_from_step: int | None = Field(None, description="The step of the checkpoint it would resume from")
    resume_note: str | None = Field(None, description="A sentence: from which step it resumes, or why it cannot")
    placement: dict[str, Any] | None = Field(None, description=(
        "Where its latest attempt runs or ran, once a worker took it: node, executor, devices "
        "(e.g. [\"gpu:0\"] or [\"cpu x8\"]), processes, threads_per_process, cpus, gpus (index, uuid, "
        "memory_mb); a cluster executor adds its node's id and address"))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class JobList(Obj):
    data: list[Job]


class JobEvent(Obj):
    id: int
    job_id: str
    type: str                           # status | progress | checkpoint | metrics | log
    level: str = "info"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None


class EventPage(Obj):
    data: list[JobEvent]
    last_id: int

    def __iter__(self) -> Iterator[JobEvent]:      # type: ignore[override]
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Model(Obj):
    id: str
    name: str | None = Field(None, description="a tuned model's human name (PATCH to rename; the id stays); "
                             "a catalog or uploaded model's name")
    object: str = "model"
    kind: str = ""                      # "tuned", "uploaded", or the catalog model's kind
    base_model: str | None = None
    strategy: str | None = None
    job_id: str | None = None
    metrics: MetricsObject | None = Field(None, description="the run's metrics on its test split, each quality "
                                          "metric with its 95% interval (`<metric>_interval`)")
    created_at: int | None = None


class ModelList(Obj):
    data: list[Model]


class Prediction(Obj):
    text: str
    label: str
    score: float
    scores: dict[str, float] = Field(default_factory=dict)


class PredictionList(Obj):
    model: str
    data: list[Prediction]


class ImagePrediction(Obj):
    """One image's class: `index` is its place in the request, `filename` the uploaded file's name
    (multipart) or null (base64 JSON)."""
    index: int
    filename: str | None = None
    label: str
    score: float
    scores: dict[str, float] = Field(default_factory=dict)


class ImagePredictionList(Obj):
    model: str
    data: list[ImagePrediction]


class Comparison(Obj):
    id: str
    status: str
    spec: dict[str, Any] = Field(default_factory=dict)
    results: list[ComparisonRowObject] = Field(default_factory=list, description=(
        "one row a strategy: its metrics, `quality` and `quality_interval` (95%), or `error`"))
    recommended: str | None = None
    reason: str | None = None
    models: dict[str, str] = Field(default_factory=dict)
    job: Job | None = None
    budget: dict[str, Any] | None = Field(None, description="what the comparison may spend: seconds and/or usd "
                                          "(with what the engine reports once it ran); null: no limit")
    exhaustive: bool = Field(False, description="every candidate runs to the end (no early stopping)")


class ComparisonList(Obj):
    data: list[Comparison]


class Webhook(Obj):
    id: str
    url: str
    events: list[str] = Field(default_factory=list)
    created_at: int | None = None
    secret: str | None = None           # only when created
    note: str | None = None


class WebhookList(Obj):
    data: list[Webhook]


class WebhookDelivery(Obj):
    id: str
    webhook_id: str
    job_id: str | None = None
    event: str = ""
    status: str = ""
    attempts: int = 0
    response_status: int | None = None
    response_body: str | None = None
    duration_ms: float | None = None
    last_attempt_at: int | None = None
    payload: dict[str, Any] | None = None


class WebhookDeliveryList(Obj):
    data: list[WebhookDelivery]


class AuditEntry(Obj):
    seq: int
    created_at: int | None = None
    actor: str | None = None
    action: str
    target: str | None = None
    data: dict[str, Any] | None = None
    hash: str
    prev_hash: str | None = None


class AuditPage(Obj):
    data: list[AuditEntry]
    total: int
