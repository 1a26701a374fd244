"""API keys: created (the key is shown once), listed by prefix, revoked (effective at once)."""

from __future__ import annotations

from fastapi import APIRouter

from ...db.models import ApiKey, User, utcnow
from ...services.tenants import create_key
from ..deps import PrincipalDep, ScopeDep, SessionDep, audit
from ...contract import ApiKey as ApiKeyOut, ApiKeyList
from ..errors import AUTH, APIError, errors
from ..schemas import KeyCreate, key_out
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/api-keys", tags=["api-keys"])


def _visible(scope, principal, key_id: str) -> ApiKey:
    key = scope.get(ApiKey, key_id, "API key")
    if principal.role != "admin" and key.user_id != principal.user_id:
        raise APIError(404, "not_found", f"No API key with id {key_id!r}.")
    return key


@router.get("", response_model=ApiKeyList, responses=errors(*AUTH))
def list_keys(scope: ScopeDep, principal: PrincipalDep):
    where = [] if principal.role == "admin" else [ApiKey.user_id == principal.user_id]
    return {"data": [key_out(k) for k in scope.list(ApiKey, *where, order_by=ApiKey.created_at)]}


@router.post("", status_code=201, response_model=ApiKeyOut, responses=errors(*AUTH, 400, 422))
def new_key(body: KeyCreate, scope: ScopeDep, principal: PrincipalDep, session: SessionDep):
    user = scope.get(User, principal.user_id, "user")
    key, row = create_key(session, user, body.name)
    audit(session, principal, "api_key.create", row.id, prefix=row.prefix)
    return key_out(row) | {"key": key, "note": "Store this key now: it is not shown again."}


@router.delete("/{key_id}", response_model=ApiKeyOut, responses=errors(*AUTH, 404))
def revoke_key(key_id: str, scope: ScopeDep, principal: PrincipalDep):
    key = _visible(scope, principal, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit(scope.session, principal, "api_key.revoke", key.id, prefix=key.prefix)
    return key_out(key)
