"""One error shape for every route, OpenAI's: {"error": {"message", "type", "param", "code"}},
with a stable `code`. Never a traceback to a client."""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..contract import ErrorBody
from ..db.scoped import NotFound
from ..jobs.status import InvalidTransition

log = logging.getLogger("tunelab.api")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error",
          507: "server_error"}


# What each error status means on this API, for the OpenAPI document (every route lists the ones it
# can answer, each with the ErrorBody schema; see `errors()`).
_MEANING = {400: "Bad request: a body that cannot be parsed, an empty file, or (on the OpenAI-compatible /v1 "
                 "routes) a request that does not validate",
            401: "No API key, or one that is unknown or revoked", 402: "Not enough credit to start the job or serve the request",
            403: "The caller's role (or key) may not do this", 404: "No such resource in the caller's tenant",
            409: "Conflicts with the resource's current state", 413: "The upload is larger than the limit",
            422: "The request does not validate, or its content cannot be used (the message and `param` say why)",
            429: "Rate limited (`Retry-After` says when to retry), or a quota is reached",
            503: "Unavailable for now: the database cannot be reached (`database_unavailable`, with "
                 "`Retry-After`), or jobs cannot run on this server (no sandbox)",
            507: "The server's storage is full: nothing of the upload was kept (`insufficient_storage`)"}
# Answered by every route that takes an API key: a missing/bad key, too many requests for the key,
# the database unavailable (the key is checked there).
AUTH = (401, 429, 503)
DATABASE_RETRY_AFTER = 5       # seconds: a restart or a failover is expected to take about that
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot answer now (down, restarting, unreachable, locked, its pool exhausted),
    as opposed to a query that is wrong: the client should retry, not report a bug."""
    return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)) or \
        (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def errors(*statuses: int) -> dict[int | str, dict]:
    """`responses=` for a route: each error status it can answer, documented with the error body."""
    return {s: {"model": ErrorBody, "description": _MEANING[s]} for s in sorted(set(statuses))}


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.extra = status, code, message, param, extra


def error_body(status: int, code: str, message: str, param: str | None = None, **extra) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code, **extra}}


def _json(status: int, code: str, message: str, param=None, headers=None, **extra) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, param, **extra), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        headers = {"Retry-After": str(int(exc.extra["retry_after"]) + 1)} if "retry_after" in exc.extra else None
        return _json(exc.status, exc.code, exc.message, exc.param, headers=headers, **exc.extra)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return _json(404, "not_found", str(exc))

    @app.exception_handler(InvalidTransition)
    async def _conflict(request: Request, exc: InvalidTransition):
        return _json(409, "invalid_state", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation(request, exc)

    def _validation(request: Request, exc):
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        param = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "header"))
        # OpenAI's routes answer a bad request with 400, as OpenAI does; tunelab's with 422.
        status = 400 if request.url.path.startswith("/v1/") else 422
        return _json(status, "validation_error", f"{param or 'request'}: {first['msg']}", param or None, details=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {400: "invalid_body", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:     # RFC 9110: list every method the resource supports
            headers["Allow"] = allowed_methods(request)
        return _json(exc.status_code, code, str(exc.detail), headers=headers or None)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception):
        return _crashed(request, exc)

    @app.exception_handler(OSError)
    async def _os(request: Request, exc: OSError):
        if exc.errno in _DISK_FULL:
            log.error("storage full", extra={"path": request.url.path, "error": _one_line(exc)})
            return _json(507, "insufficient_storage", "The server's storage is full: nothing of this request "
                         "was kept. Retry later, or ask the operator to free space.")
        return _crashed(request, exc)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        return _crashed(request, exc)


def _crashed(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After while the database is unavailable (logged without a traceback: the
    log's repeat filter collapses the outage into a line and a count); 500 for anything else."""
    if database_unavailable(exc):
        log.error("database unavailable", extra={"path": request.url.path, "error": _one_line(exc)})
        return _json(503, "database_unavailable", "The database is unavailable; retry shortly.",
                     headers={"Retry-After": str(DATABASE_RETRY_AFTER)})
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return _json(500, "internal_error", "Internal server error; it has been logged.")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's own 405 names only the first route
    that matched the path, though GET, PATCH and DELETE of one resource are separate routes."""
    scope = {**request.scope, "method": "__none__"}
    methods: set[str] = set()
    for route in _leaves(request.app.router.routes):
        match, _ = route.matches(scope)
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return ", ".join(sorted(methods))


def _leaves(routes):
    """The app's routes, flat: FastAPI keeps an included router as one entry with its routes inside."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _leaves(route.effective_candidates())
        else:
            yield getattr(route, "starlette_route", None) or route
