"""The tenant's audit log (admins): newest first, with each entry's hash link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...security import audit as audit_log
from ..deps import AdminDep, SessionDep
from ...contract import AuditPage
from ..errors import AUTH, errors
from ..schemas import ts
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, responses=errors(*AUTH, 403, 422))
def list_audit(session: SessionDep, admin: AdminDep, limit: int = 100, before: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None):
    rows = audit_log.entries(session, admin.tenant_id, max(1, min(limit, 1000)), before)
    return {"data": [{"seq": e.seq, "created_at": ts(e.created_at), "actor": e.actor, "action": e.action,
                      "target": e.target, "data": e.data, "hash": e.hash, "prev_hash": e.prev_hash} for e in rows],
            "total": audit_log.count(session, admin.tenant_id)}
