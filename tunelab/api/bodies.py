"""Request bodies: capped by route, and refused before they are read.

FastAPI reads and parses a request's body before the route's dependencies (where the API key is
checked) run, so the checks that must come first live here, in front of the app (`BodyGate`):

- every body is capped by route: by its Content-Length before a byte is read, or, when there is
  none (chunked) or it lies, while it streams. Uploads may send TUNELAB_MAX_UPLOAD_MB, everything
  else TUNELAB_MAX_BODY_MB; the UI adds its own rules (the sign-in form: a few KB);
- a rule's `gate` runs after the headers and before the first byte of the body: on the API, a body
  is read only from a client that sent something shaped like an API key, from an address not
  blocked for guessing, and on the upload routes only once the key is checked in the database. So a
  client without a key cannot make the server read, parse or spool anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from ..security.keys import parse_prefix
from .errors import APIError, error_body

Scope = dict
Gate = Callable[[Scope], Awaitable[Response | None]]
API_PATHS = ("/api/", "/v1/")
OPERATOR_PATHS = ("/api/v1/admin/",)     # the operator's key: checked and throttled by its routes


def body_too_large(limit: int) -> APIError:
    return APIError(413, "body_too_large", f"The request body is larger than the limit of {limit / 1e6:.1f} MB "
                                           "(TUNELAB_MAX_BODY_MB).")


@dataclass(frozen=True)
class BodyRule:
    """The cap (and who may send a body at all) for requests to these exact paths."""
    paths: tuple[str, ...]
    limit: Callable[[], int]
    gate: Gate | None = None
    error: Callable[[int], APIError] = body_too_large
    methods: tuple[str, ...] = ("POST",)
    slack: int = 0                     # multipart boundaries and part headers around an upload's file


class _TooLarge(Exception):
    pass


class BodyGate:
    """ASGI middleware: the first rule naming the request's path and method applies, else `default`.
    `rules` is a list the UI extends when it is mounted (read per request)."""

    def __init__(self, app, *, default: BodyRule, rules: list[BodyRule]):
        self.app, self.default, self.rules = app, default, rules

    def rule(self, scope: Scope) -> BodyRule:
        path = scope["path"].rstrip("/") or "/"
        return next((r for r in self.rules if path in r.paths and scope["method"] in r.methods), self.default)

    async def __call__(self, scope, receive, send):
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or not _has_body(headers):
            return await self.app(scope, receive, send)
        rule = self.rule(scope)
        limit = rule.limit() + rule.slack
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _error(rule.error(rule.limit()))(scope, receive, send)
        refused = await rule.gate(scope) if rule.gate else None
        if refused is not None:
            return await refused(scope, receive, send)
        await self._counted(scope, receive, send, rule, limit)

    async def _counted(self, scope, receive, send, rule: BodyRule, limit: int) -> None:
        """Run the app, counting the body as it arrives; past the limit the app gets an error from
        `receive`, and whatever it answers to that is replaced by the 413."""
        state = {"seen": 0, "over": False, "started": False}

        async def counted():
            if state["over"]:
                raise _TooLarge
            message = await receive()
            state["seen"] += len(message.get("body", b""))
            if state["seen"] > limit:
                state["over"] = True
                raise _TooLarge
            return message

        async def sending(message):
            if state["over"] and not state["started"]:
                return                 # the app's answer to a cut-off body: ours is sent instead
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _error(rule.error(rule.limit()))(scope, receive, send)


def _has_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("0", "")


def _error(err: APIError, headers: dict | None = None) -> Response:
    """An error answered before the body is read: the connection is closed rather than drained."""
    return JSONResponse(error_body(err.status, err.code, err.message, err.param), status_code=err.status,
                        headers={"Connection": "close", **(headers or {})})


def credential(scope: Scope) -> str | None:
    """The key as `api.deps` reads it: `Authorization: Bearer <key>`, or `X-API-Key`."""
    headers = Headers(scope=scope)
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


def _client(scope: Scope) -> str:
    return scope["client"][0] if scope.get("client") else "?"


def _blocked(scope: Scope) -> Response | None:
    """429 for an address over its failed-attempt limit, before anything it sent is looked at."""
    wait = scope["app"].state.limits["failed_auth"].retry_after(_client(scope))
    return None if wait is None else _rate_limited(wait)


def _rate_limited(wait: float) -> Response:
    return _error(APIError(429, "rate_limited", f"Too many requests; retry in {wait:.0f} s."),
                  {"Retry-After": str(int(wait) + 1)})


def _failed(scope: Scope) -> Response:
    """A wrong key: counted against the address (429 once over the limit), else 401."""
    wait = scope["app"].state.limits["failed_auth"].hit(_client(scope))
    if wait is not None:
        return _rate_limited(wait)
    return _error(APIError(401, "invalid_api_key", "The API key is not valid (unknown or revoked)."))


async def plausible_key(scope: Scope) -> Response | None:
    """A body to a protected API route is read only from a client that sent something shaped like an
    API key (the database check follows in the route's dependencies), from an address not blocked."""
    path = scope["path"]
    if not path.startswith(API_PATHS) or path.startswith(OPERATOR_PATHS):
        return None
    key = credential(scope)
    if not key:
        return _error(APIError(401, "missing_api_key", "Send your API key as `Authorization: Bearer <key>`."))
    return _blocked(scope) or (_failed(scope) if parse_prefix(key) is None else None)


async def authenticated(scope: Scope) -> Response | None:
    """Upload routes (up to TUNELAB_MAX_UPLOAD_MB): the key is checked in the database before the
    body is read. The route's dependencies check it again (role, per-key rate)."""
    refused = await plausible_key(scope)
    if refused is not None or not scope["path"].startswith(API_PATHS):
        return refused
    found = await run_in_threadpool(_key_exists, scope["app"].state.db, credential(scope))
    return None if found else _failed(scope)


def _key_exists(db, key: str) -> bool:
    from ..services.tenants import authenticate

    with db.session() as s:
        return authenticate(s, key) is not None
