"""Deployments: the body that creates one, and what the API answers about it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .base import Obj

MAX_MODELS = 8           # adapters (or tuned models) one deployment serves
MAX_REPLICAS = 4
MAX_IDLE_SECONDS = 7 * 86_400
MAX_BATCH_WINDOW_MS = 100.0

def _json_integer(value):
    # JSON Schema's integer: 3 and 3.0, not `true` nor "3" (pydantic's lax mode takes both)
    if isinstance(value, (bool, str)):
        raise ValueError("must be an integer")
    return value


def json_int(**constraints):
    """An integer field as JSON Schema means it (the constraints before the validator, or pydantic
    writes them into the document as unknown keywords)."""
    return Annotated[int, Field(strict=False, **constraints), BeforeValidator(_json_integer)]


ModelRef = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class DeploymentCreate(BaseModel):
    """What to serve and how. `models`: the tenant's tuned model ids (generative ones sharing one
    base: its adapters; or exactly one classifier), or one catalog causal LM by name."""
    model_config = ConfigDict(extra="forbid", strict=True)
    models: list[ModelRef] = Field(min_length=1, max_length=MAX_MODELS, json_schema_extra={"uniqueItems": True})
    name: str = Field("", max_length=120, pattern=r"^[^\x00-\x1f\x7f]*$",
                      description="what people call it; the first model's name when empty")
    replicas: json_int(ge=1, le=MAX_REPLICAS, description="model server processes") = 1
    idle_seconds: float = Field(900.0, ge=0, le=MAX_IDLE_SECONDS,
                                description="unloaded after this long without a request (0: never); "
                                            "the next request loads it again")
    engine: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch", description="onnx / onnx-int8 (onnxruntime, exported at load): classifiers only")
    batch_window_ms: float = Field(5.0, ge=0, le=MAX_BATCH_WINDOW_MS,
                                   description="classifiers: concurrent requests gathered this long into one "
                                               "forward (0: off)")

    @field_validator("models")
    @classmethod
    def _once_each(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError("each model may appear once")
        return models


class Replica(Obj):
    pid: int | None = None
    state: str
    restarts: int = 0


class Deployment(Obj):
    id: str
    object: Literal["deployment"] = "deployment"
    name: str
    kind: str = Field(description="generate | classify")
    models: list[str]
    base_model: str | None = None
    state: str = Field(description="loading | ready | idle-unloaded | failed | stopped")
    error: str | None = None
    replicas: int
    replica_states: list[Replica] = []
    restarts: int = 0
    idle_seconds: float
    engine: str
    batch_window_ms: float
    requests_served: int
    prompt_tokens: int
    completion_tokens: int
    endpoints: dict[str, str] = Field(default_factory=dict, description="where to send requests")
    created_at: int | None = None


class DeploymentList(Obj):
    object: Literal["list"] = "list"
    data: list[Deployment]
