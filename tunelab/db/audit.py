"""The audit log table: append-only, one hash chain per tenant (and one for the platform).

`seq` is unique within a chain, so two concurrent writers cannot both extend the same link:
one of them retries on the new head. Rows outlive their tenant (no foreign key): the trail of
what happened to a deleted tenant's data stays verifiable, and it holds no data, only ids.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("chain", "seq", name="uq_audit_chain_seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(40), index=True)       # tenant id, or "platform"
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))                  # user id, "cli", "worker"
    action: Mapped[str] = mapped_column(String(60))                  # e.g. "api_key.revoke"
    target: Mapped[str] = mapped_column(String(200), default="")
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
