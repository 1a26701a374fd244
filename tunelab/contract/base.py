"""What every response shares: objects that keep fields a newer server adds, and the one error shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Obj(BaseModel):
    """A response object. Unknown fields are kept (as extras), not refused: a client built against
    an older document still reads a newer server's answers."""
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ErrorDetail(Obj):
    message: str
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, not_found_error")
    param: str | None = Field(None, description="the offending field, dotted (`hyperparameters.n_epochs`)")
    code: str = Field(description="stable machine-readable code, e.g. validation_error, not_found, rate_limited")


class ErrorBody(Obj):
    """Every error (4xx and 5xx), in OpenAI's shape; some codes add fields (`issues` for a file that
    does not validate, `missing` for insufficient credit, `quota` and `limit` for a quota)."""
    error: ErrorDetail


class Deleted(Obj):
    id: str
    deleted: bool
    object: str | None = None
