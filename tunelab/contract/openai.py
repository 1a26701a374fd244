"""The OpenAI-compatible shapes (/v1): files, fine-tuning jobs, their events and checkpoints, models."""

from __future__ import annotations

from typing import Any, Literal

from .base import Obj


class FileObject(Obj):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int | None = None
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None


class FileList(Obj):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(Obj):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FineTuningError(Obj):
    code: str
    message: str = ""
    param: str | None = None


class FineTuningJob(Obj):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    model: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    organization_id: str
    result_files: list[str] = []
    status: str
    validation_file: str | None = None
    training_file: str | None = None
    hyperparameters: dict[str, Any]
    trained_tokens: int | None = None
    error: FineTuningError | None = None
    seed: int = 0
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = []
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    method: dict[str, Any]


class FineTuningJobList(Obj):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningEvent(Obj):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int | None = None
    level: str
    message: str
    data: dict[str, Any] | None = None
    type: str


class FineTuningEventList(Obj):
    object: Literal["list"] = "list"
    data: list[FineTuningEvent]
    has_more: bool


class FineTuningCheckpoint(Obj):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int | None = None
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int | None = None
    metrics: dict[str, Any]


class FineTuningCheckpointList(Obj):
    object: Literal["list"] = "list"
    data: list[FineTuningCheckpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class OpenAIModel(Obj):
    id: str
    object: Literal["model"] = "model"
    created: int | None = None
    owned_by: str


class OpenAIModelList(Obj):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIModelDeleted(Obj):
    id: str
    object: Literal["model"] = "model"
    deleted: bool
