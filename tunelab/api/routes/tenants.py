"""The caller's tenant."""

from __future__ import annotations

from fastapi import APIRouter

from ...db.models import Tenant
from ...settings import get_settings
from ..deps import PrincipalDep, SessionDep
from ..schemas import ts

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])


@router.get("/me")
def me(principal: PrincipalDep, session: SessionDep):
    t = session.get(Tenant, principal.tenant_id)
    return {"id": t.id, "name": t.name, "created_at": ts(t.created_at),
            "you": {"user_id": principal.user_id, "role": principal.role},
            "insecure_mode": get_settings().insecure_mode}
