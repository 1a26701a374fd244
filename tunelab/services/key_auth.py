"""The API-key check every request makes: one indexed query, the key's row joined to its user.

It runs on every call, so it is built for cost: a SQLAlchemy Core statement built once (the ORM's
per-query work -- statement construction, identity map, session bookkeeping -- was most of a job
status GET's CPU), on a plain connection. Nothing is cached in the process: a key revoked by any
process (another server, `tunelab admin`) is refused on the very next request.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from ..db.models import ApiKey, User, utcnow
from ..security.keys import matches, parse_prefix

# last_used_at is written at most once a minute a key: a write on every request would serialise all
# requests on one key (a row lock on PostgreSQL, the single write lock on SQLite).
TOUCH_EVERY_S = 60

_LOOKUP = (select(ApiKey.id, ApiKey.hash, ApiKey.revoked_at, ApiKey.last_used_at,
                  User.id.label("user_id"), User.tenant_id, User.role)
           .join(User, User.id == ApiKey.user_id)
           .where(ApiKey.prefix == bindparam("prefix")))
_TOUCH = update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(last_used_at=bindparam("now"))


@dataclass(frozen=True)
class KeyOwner:
    """Who a valid key speaks for."""
    key_id: str
    user_id: str
    tenant_id: str
    role: str


def check_key(conn: Connection, key: str) -> KeyOwner | None:
    """The key's owner, or None for a malformed, unknown or revoked key (compared in constant time).
    Commits only when it records the key's use (the caller's transaction otherwise stays read-only)."""
    prefix = parse_prefix(key)
    if prefix is None:
        return None
    row = conn.execute(_LOOKUP, {"prefix": prefix}).first()
    if row is None or row.revoked_at is not None or not matches(key, row.hash):
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > TOUCH_EVERY_S:
        conn.execute(_TOUCH, {"key_id": row.id, "now": now})
    return KeyOwner(row.id, row.user_id, row.tenant_id, row.role)


def owner_and(db, key: str, read=None, *args) -> tuple[KeyOwner | None, object]:
    """check_key on a connection of its own, then, for a valid key, `read(conn, tenant_id, *args)`
    on the same connection (one checkout, one commit: the use mark when due)."""
    with db.engine.begin() as conn:
        owner = check_key(conn, key)
        return owner, (read(conn, owner.tenant_id, *args) if owner is not None and read is not None else None)
