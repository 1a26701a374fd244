"""Dependencies: the database session, the authenticated principal, its tenant scope, roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Iterator

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from ..db import Database
from ..db.scoped import TenantScope
from ..services.tenants import authenticate
from ..settings import Settings
from .errors import APIError

# A row id a client sends (a cursor such as `after`): bounded to what a database integer holds;
# a larger one overflowed SQLite's and answered 500.
RowId = Annotated[int, Query(ge=-(2**63), le=2**63 - 1)]

_RANK = {"viewer": 0, "member": 1, "admin": 2}


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


def _limited(request: Request, name: str, key: str) -> None:
    wait = request.app.state.limits[name].hit(key)
    if wait is not None:
        raise APIError(429, "rate_limited", f"Too many requests; retry in {wait:.0f} s.", retry_after=round(wait, 1))


def get_principal(request: Request, session: SessionDep) -> Principal:
    key = _bearer(request)
    client = request.client.host if request.client else "?"
    if not key:
        raise APIError(401, "missing_api_key", "Send your API key as `Authorization: Bearer <key>`.")
    found = authenticate(session, key)
    if found is None:            # guessing keys: a few tries a minute per address, then 429
        _limited(request, "failed_auth", client)
        raise APIError(401, "invalid_api_key", "The API key is not valid (unknown or revoked).")
    row, user = found
    _limited(request, "per_key", row.prefix)
    return Principal(user.tenant_id, user.id, user.role, row.id)


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
