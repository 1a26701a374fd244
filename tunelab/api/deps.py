"""Dependencies: the database session, the authenticated principal, its tenant scope, roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, Iterator, TypeVar

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from ..db import Database
from ..db.scoped import TenantScope
from ..security.keys import parse_prefix
from ..services.key_auth import KeyOwner, owner_and
from ..settings import Settings
from .errors import APIError

# A row id a client sends (a cursor such as `after`): bounded to what a database integer holds;
# a larger one overflowed SQLite's and answered 500.
RowId = Annotated[int, Query(ge=-(2**63), le=2**63 - 1)]

_RANK = {"viewer": 0, "member": 1, "admin": 2}
T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.db.session() as s:
        yield s


# scope="function": commit before the response is sent, so the next request sees the change
# (FastAPI otherwise closes yield-dependencies after responding: a revoked key could still work).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    role: str
    key_id: str | None


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def _rate_limited(wait: float) -> APIError:
    return APIError(429, "rate_limited", f"Too many requests; retry in {wait:.0f} s.", retry_after=round(wait, 1))


def _limited(request: Request, name: str, key: str) -> None:
    wait = request.app.state.limits[name].hit(key)
    if wait is not None:
        raise _rate_limited(wait)


def _presented(request: Request) -> tuple[str, str]:
    """The key sent and the caller's address, before the database is asked anything: 401 without a
    key; 429 for an address blocked for guessing (its guess is not even looked at: a right one
    would tell) and for a key over its request rate (it costs no query)."""
    key = _bearer(request)
    client = request.client.host if request.client else "?"
    if not key:
        raise APIError(401, "missing_api_key", "Send your API key as `Authorization: Bearer <key>`.")
    limits = request.app.state.limits
    wait = limits["failed_auth"].retry_after(client)
    if wait is None:
        wait = limits["per_key"].retry_after(parse_prefix(key) or "")
    if wait is not None:
        raise _rate_limited(wait)
    return key, client


def _admitted(request: Request, key: str, client: str, owner: KeyOwner | None) -> Principal:
    if owner is None:            # guessing keys: a few tries a minute per address, then 429
        _limited(request, "failed_auth", client)
        raise APIError(401, "invalid_api_key", "The API key is not valid (unknown or revoked).")
    _limited(request, "per_key", parse_prefix(key))     # counted once the key is known good
    return Principal(owner.tenant_id, owner.user_id, owner.role, owner.key_id)


async def get_principal(request: Request) -> Principal:
    """The caller, from its API key: one indexed query on a connection of its own, in one hop to a
    worker thread (no request session: a route that needs none never opens one)."""
    key, client = _presented(request)
    owner, _ = await run_in_threadpool(owner_and, request.app.state.db, key, None)
    return _admitted(request, key, client, owner)


async def principal_and(request: Request, read: Callable[..., T], *args) -> tuple[Principal, T | None]:
    """get_principal and then `read(connection, tenant_id, *args)` for that principal, in one hop to
    a worker thread and on one connection: for the calls clients repeat (a job's status), where a
    second hop cost as much CPU as the query. The same checks, limits and answers as PrincipalDep."""
    key, client = _presented(request)
    owner, value = await run_in_threadpool(owner_and, request.app.state.db, key, read, *args)
    return _admitted(request, key, client, owner), value


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_scope(principal: PrincipalDep, session: SessionDep) -> TenantScope:
    return TenantScope(session, principal.tenant_id)


ScopeDep = Annotated[TenantScope, Depends(get_scope)]


def require(role: str):
    """Depends(require("member")): viewers read, members create and run, admins manage."""
    def check(principal: PrincipalDep) -> Principal:
        if _RANK.get(principal.role, -1) < _RANK[role]:
            raise APIError(403, "forbidden", f"This needs the {role} role; you are {principal.role}.")
        return principal
    return check


MemberDep = Annotated[Principal, Depends(require("member"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]


def audit(session: Session, principal: Principal, action: str, target: str = "", **data) -> None:
    """One audit entry on the caller's tenant chain, in the request's transaction."""
    from ..security.audit import record

    record(session, principal.tenant_id, principal.user_id, action, target, key=principal.key_id, **data)
