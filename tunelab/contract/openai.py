"""The OpenAI-compatible shapes (/v1): files, fine-tuning jobs, their events and checkpoints, models,
chat completions and completions (requests and answers, streamed chunks included)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import Obj
from .deployments import json_int


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


# ---- /v1/chat/completions and /v1/completions ---------------------------------------------------

MAX_TOKENS = 2048             # generated tokens one request may ask for
MAX_PROMPT_CHARS = 32_000     # one message's or one prompt's text
MAX_MESSAGES = 256
SEED_MAX = 2**63 - 1

Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
StopText = Annotated[str, Field(min_length=1, max_length=200)]


class _Request(BaseModel):
    # strict: the body is taken as the document types it; unknown fields are refused (400), not ignored
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text
    name: str | None = Field(None, max_length=64, description="accepted, not used")


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=200, description="a deployed tuned model id, or a deployed catalog LM")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: json_int(ge=1, le=MAX_TOKENS) | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy (the default)")
    top_p: float | None = Field(None, gt=0, le=1)
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = None
    seed: json_int(ge=0, le=SEED_MAX) | None = None
    n: json_int(ge=1, le=128, description="only 1 is served") | None = None
    user: str | None = Field(None, max_length=256, description="accepted, not used")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: json_int(ge=1, le=MAX_TOKENS, description="the newer name of max_tokens") | None = None


class CompletionRequest(_Sampling):
    prompt: Text


class Usage(Obj):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(Obj):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(Obj):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletion(Obj):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(Obj):
    role: str | None = None
    content: str | None = None


class ChunkChoice(Obj):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Obj):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(Obj):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Completion(Obj):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
