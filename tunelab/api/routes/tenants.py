"""The caller's tenant."""

from __future__ import annotations

import os
import shutil

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ...db.models import Tenant
from ...settings import get_settings
from ..downloads import take_slot
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

    slot = take_slot(settings.max_concurrent_downloads)     # it decrypts every model the tenant has
    try:
        path = export_tenant(session, settings.home, admin.tenant_id)
    finally:
        slot.release()
    # The zip is all the tenant's data in clear: its name goes from the disk at once (the open
    # file is sent, then closed), so no crash or dropped connection can leave it behind.
    try:
        src = open(path, "rb")
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    size = os.fstat(src.fileno()).st_size
    audit(session, admin, "tenant.export", admin.tenant_id)
    return StreamingResponse(_sent_and_closed(src), media_type="application/zip", headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{path.name}"'})


def _sent_and_closed(src):
    with src:
        yield from iter(lambda: src.read(1 << 20), b"")


@router.delete("/me", response_model=Deleted, responses=errors(*AUTH, 400, 403, 422))
def delete_me(body: DeleteBody, admin: AdminDep, session: SessionDep, settings: SettingsDep, request: Request):
    """Delete the tenant and all its data, for good: its key is destroyed first."""
    from ...services.tenants import delete_tenant, scrub_database

    tenant = session.get(Tenant, admin.tenant_id)
    if body.confirm != tenant.name:
        raise APIError(422, "confirmation_mismatch", "Send {\"confirm\": \"<your tenant's name>\"} to delete it.",
                       "confirm")
    request.app.state.predictors.forget_prefix(str(settings.home / "jobs" / admin.tenant_id))
    delete_tenant(session, settings.home, admin.tenant_id, actor=admin.user_id)
    session.commit()
    scrub_database(session)         # the deleted rows' old pages out of SQLite's write-ahead log
    return {"id": admin.tenant_id, "deleted": True}
