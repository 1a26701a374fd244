"""What can go wrong when a deployment answers, as exceptions that carry their HTTP status and a
code: raised in the model server, sent over its socket as JSON, rebuilt on the API side."""

from __future__ import annotations


class ServingError(Exception):
    status, code = 500, "server_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class UnknownModel(ServingError):
    status, code = 404, "model_not_found"


class BadServingRequest(ServingError):
    status, code = 422, "invalid_request"


class ServerBusy(ServingError):
    status, code = 429, "model_server_busy"


class ServerUnavailable(ServingError):
    status, code = 503, "model_server_unavailable"


_BY_CODE = {c.code: c for c in (ServingError, UnknownModel, BadServingRequest, ServerBusy, ServerUnavailable)}


def error_from(code: str, message: str) -> ServingError:
    """The exception a model server's JSON error stands for (an unknown code: a plain ServingError)."""
    return _BY_CODE.get(code, ServingError)(message)
