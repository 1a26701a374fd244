"""Tenants, users and API keys: creation and lookup (the routes and `tunelab admin` use these)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import ApiKey, Tenant, User, utcnow
from ..security.keys import generate_key, matches, parse_prefix

ROLES = ("admin", "member", "viewer")


class Conflict(ValueError):
    pass


def create_tenant(session: Session, name: str, admin_email: str) -> tuple[Tenant, User, str]:
    """The tenant, its first admin, and that admin's first API key (the only time it is shown)."""
    if session.scalars(select(Tenant).where(Tenant.name == name)).first() is not None:
        raise Conflict(f"A tenant named {name!r} already exists.")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    user = User(tenant_id=tenant.id, email=admin_email, role="admin")
    session.add(user)
    session.flush()
    key, _ = create_key(session, user, "first admin key")
    from ..billing.ledger import get_account

    get_account(session, tenant.id)      # its billing account, opened with the trial credit
    return tenant, user, key


def create_key(session: Session, user: User, name: str = "") -> tuple[str, ApiKey]:
    new = generate_key()
    row = ApiKey(tenant_id=user.tenant_id, user_id=user.id, name=name, prefix=new.prefix, hash=new.hash)
    session.add(row)
    session.flush()
    return new.key, row


def authenticate(session: Session, key: str) -> tuple[ApiKey, User] | None:
    prefix = parse_prefix(key)
    if prefix is None:
        return None
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None or row.revoked_at is not None or not matches(key, row.hash):
        return None
    user = session.get(User, row.user_id)
    if user is None:
        return None
    now = utcnow()
    # Written at most once a minute a key: a write on every request would serialise all requests
    # on one key (a row lock on PostgreSQL, the single write lock on SQLite).
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
    return row, user


def delete_tenant(session: Session, home, tenant_id: str, actor: str = "cli") -> None:
    """Crypto-shred first (its data key), then its files, then its rows (foreign keys cascade).
    The audit trail keeps ids and actions only, on the platform chain."""
    import shutil
    from pathlib import Path

    from ..security.audit import record
    from ..security.storage import tenant_keys

    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"No tenant {tenant_id!r}.")
    home = Path(home)
    tenant_keys(home).destroy(tenant_id)
    for folder in (home / "tenants" / tenant_id, home / "jobs" / tenant_id):
        shutil.rmtree(folder, ignore_errors=True)
    from ..db.models import TENANT_OWNED

    for model in reversed(TENANT_OWNED):     # explicit, not only ON DELETE CASCADE: any backend
        session.query(model).filter(model.tenant_id == tenant_id).delete(synchronize_session=False)
    session.delete(tenant)
    record(session, None, actor, "tenant.delete", tenant_id)
