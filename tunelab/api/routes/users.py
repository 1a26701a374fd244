"""Members of the caller's tenant (admins manage them)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from ...db.models import User
from ...security.keys import hash_password
from ...services.tenants import create_key
from ..deps import AdminDep, ScopeDep, SessionDep, audit
from ...contract import ApiKey, Deleted, User as UserOut, UserList
from ..errors import AUTH, APIError, errors
from ..schemas import KeyCreate, UserCreate, UserUpdate, key_out, user_out
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/users", tags=["users"])


@router.get("", response_model=UserList, responses=errors(*AUTH))
def list_users(scope: ScopeDep):
    return {"data": [user_out(u) for u in scope.list(User, order_by=User.created_at)]}


@router.post("", status_code=201, response_model=UserOut, responses=errors(*AUTH, 400, 403, 409, 422))
def create_user(body: UserCreate, scope: ScopeDep, admin: AdminDep):
    if scope.list(User, User.email == body.email):
        raise APIError(409, "user_exists", f"{body.email} is already a member.", "email")
    user = User(email=body.email, role=body.role,
                password_hash=hash_password(body.password) if body.password else None)
    try:
        out = user_out(scope.add(user))
        audit(scope.session, admin, "user.create", out["id"], role=body.role)
        return out
    except IntegrityError:
        raise APIError(409, "user_exists", f"{body.email} is already a member.", "email") from None


@router.get("/{user_id}", response_model=UserOut, responses=errors(*AUTH, 404))
def get_user(user_id: str, scope: ScopeDep):
    return user_out(scope.get(User, user_id, "user"))


@router.patch("/{user_id}", response_model=UserOut, responses=errors(*AUTH, 400, 403, 404, 422))
def update_user(user_id: str, body: UserUpdate, scope: ScopeDep, admin: AdminDep):
    user = scope.get(User, user_id, "user")
    audit(scope.session, admin, "user.role_change", user.id, old=user.role, new=body.role)
    user.role = body.role
    return user_out(user)


@router.delete("/{user_id}", response_model=Deleted, responses=errors(*AUTH, 403, 404, 409))
def delete_user(user_id: str, scope: ScopeDep, admin: AdminDep):
    if user_id == admin.user_id:
        raise APIError(409, "cannot_remove_self", "Admins cannot remove themselves.")
    scope.delete(scope.get(User, user_id, "user"))
    audit(scope.session, admin, "user.delete", user_id)
    return {"id": user_id, "deleted": True}


@router.post("/{user_id}/api-keys", status_code=201, response_model=ApiKey,
             responses=errors(*AUTH, 400, 403, 404, 422))
def issue_key(user_id: str, body: KeyCreate, scope: ScopeDep, admin: AdminDep, session: SessionDep):
    """An admin onboards a member: the member's first key, shown once (to hand over securely)."""
    key, row = create_key(session, scope.get(User, user_id, "user"), body.name)
    audit(session, admin, "api_key.create", row.id, prefix=row.prefix, for_user=user_id)
    return key_out(row) | {"key": key, "note": "Store this key now: it is not shown again."}
