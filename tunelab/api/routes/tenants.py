"""The caller's tenant."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from ...db.models import Tenant
from ...settings import get_settings
from ..deps import AdminDep, PrincipalDep, SessionDep, SettingsDep, audit
from ...contract import Deleted, Tenant as TenantOut
from ..errors import AUTH, APIError, errors
from ..schemas import Body, ts
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/tenants", tags=["tenants"])


@router.get("/me", response_model=TenantOut, responses=errors(*AUTH))
def me(principal: PrincipalDep, session: SessionDep):
    t = session.get(Tenant, principal.tenant_id)
    return {"id": t.id, "name": t.name, "created_at": ts(t.created_at),
            "you": {"user_id": principal.user_id, "role": principal.role},
            "insecure_mode": get_settings().insecure_mode}


class DeleteBody(Body):
    confirm: str


@router.get("/me/export", response_class=Response, responses={
    200: {"description": "Everything the tenant owns, as a zip", "content": {"application/zip": {
        "schema": {"type": "string", "format": "binary"}}}}, **errors(*AUTH, 403)})
def export(admin: AdminDep, session: SessionDep, settings: SettingsDep):
    """Everything the tenant owns, decrypted, as one zip."""
    from ...services.export import export_tenant

    path = export_tenant(session, settings.home, admin.tenant_id)
    audit(session, admin, "tenant.export", admin.tenant_id)
    return FileResponse(path, filename=path.name, media_type="application/zip",
                        background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True))


@router.delete("/me", response_model=Deleted, responses=errors(*AUTH, 400, 403, 422))
def delete_me(body: DeleteBody, admin: AdminDep, session: SessionDep, settings: SettingsDep, request: Request):
    """Delete the tenant and all its data, for good: its key is destroyed first."""
    from ...services.tenants import delete_tenant

    tenant = session.get(Tenant, admin.tenant_id)
    if body.confirm != tenant.name:
        raise APIError(422, "confirmation_mismatch", "Send {\"confirm\": \"<your tenant's name>\"} to delete it.",
                       "confirm")
    request.app.state.predictors.forget_prefix(str(settings.home / "jobs" / admin.tenant_id))
    delete_tenant(session, settings.home, admin.tenant_id, actor=admin.user_id)
    return {"id": admin.tenant_id, "deleted": True}
