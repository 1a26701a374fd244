"""The declarative base every table derives from, and the column helpers the table modules share
(models.py, ledger.py, audit.py import it; it imports none of them)."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on every backend: SQLite hands back naive datetimes otherwise, and
    comparing those with aware ones (lease expiry) raises."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON, list: JSON}


class TenantOwned:
    """Mixin: the column the data-access layer scopes every query by."""
    tenant_id: Mapped[str] = mapped_column(String(40), ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
