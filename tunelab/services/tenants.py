"""Tenants, users and API keys: creation and lookup (the routes and `tunelab admin` use these)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import ApiKey, Tenant, User, utcnow
from ..security.keys import generate_key

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
    """The key's row and its user (sign-in, the upload gate); None for a bad key. The rules (format,
    revoked, constant-time compare, the use mark) are key_auth.check_key's, which the API's hot path
    calls without the ORM."""
    from .key_auth import check_key

    owner = check_key(session.connection(), key)
    if owner is None:
        return None
    return session.get(ApiKey, owner.key_id), session.get(User, owner.user_id)


def delete_tenant(session: Session, home, tenant_id: str, actor: str = "cli") -> None:
    """Crypto-shred first (its data key), then its files, then its rows (foreign keys cascade).
    Its files go for good or the deletion stops (a folder its jobs made read-only is opened
    first, never followed through a link); its rows are overwritten in the database file, not
    only unlinked (SQLite's secure_delete: call `scrub_database` after the commit for the WAL).
    The audit trail keeps ids and actions only, on the platform chain."""
    from pathlib import Path

    from ..db.models import TENANT_OWNED
    from ..security.audit import record
    from ..security.storage import tenant_keys

    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"No tenant {tenant_id!r}.")
    home = Path(home)
    tenant_keys(home).destroy(tenant_id)
    for folder in tenant_folders(home, tenant_id):
        remove_tree(folder)
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("PRAGMA secure_delete = ON")   # zero what is deleted
    for model in reversed(TENANT_OWNED):     # explicit, not only ON DELETE CASCADE: any backend
        session.query(model).filter(model.tenant_id == tenant_id).delete(synchronize_session=False)
    session.delete(tenant)
    record(session, None, actor, "tenant.delete", tenant_id)


def tenant_folders(home, tenant_id: str) -> list:
    """Every folder under TUNELAB_HOME that holds a tenant's files: its own (data key, datasets,
    uploaded models, its jobs' feature cache) and its jobs' (sealed models, checkpoints, logs)."""
    from pathlib import Path

    if not tenant_id.replace("_", "").isalnum():
        raise ValueError(f"bad tenant id {tenant_id!r}")
    return [Path(home) / "tenants" / tenant_id, Path(home) / "jobs" / tenant_id]


def remove_tree(folder) -> None:
    """Delete `folder` and everything in it, or raise. A job's code may have left folders without
    write or read permission (a plain rmtree ignoring errors would keep all of it): every folder
    is given back its owner's permissions first, links never followed."""
    import os
    import shutil

    if not os.path.lexists(folder):
        return
    _reopen_folders(folder)
    shutil.rmtree(folder)
    if os.path.lexists(folder):
        raise OSError(f"could not delete {folder}")


def _reopen_folders(folder) -> None:
    import os
    import stat

    stack = [os.fspath(folder)]
    while stack:
        path = stack.pop()
        mode = os.lstat(path).st_mode
        if not stat.S_ISDIR(mode):          # a link or a file: deleted as it is, never followed
            continue
        if mode & 0o700 != 0o700:
            os.chmod(path, 0o700)
        with os.scandir(path) as entries:
            stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))


def scrub_database(session: Session) -> None:
    """After a deletion committed, on SQLite: old copies of the deleted pages stay in the write-ahead
    log until a checkpoint; copy it back and truncate it (best effort: a long reader may hold it)."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        session.commit()
