"""Recording and verifying the audit log (see db/audit.py). Each entry's hash covers its chain,
sequence number, time, actor, action, target, data and the previous entry's hash: editing any
entry breaks its hash, removing one breaks the sequence and the next entry's link."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.audit import AuditEvent
from ..db.models import utcnow

GENESIS = "0" * 64
PLATFORM = "platform"


def _digest(e: AuditEvent) -> str:
    body = json.dumps([e.chain, e.seq, e.created_at.isoformat(timespec="microseconds"), e.actor, e.action,
                       e.target, e.data, e.ip, e.prev_hash], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def record(session: Session, chain: str | None, actor: str, action: str, target: str = "", *,
           ip: str | None = None, **data) -> AuditEvent:
    """Append an entry in the caller's transaction (it commits or rolls back with the action)."""
    chain = chain or PLATFORM
    for _ in range(20):
        head = session.scalars(select(AuditEvent).where(AuditEvent.chain == chain)
                               .order_by(AuditEvent.seq.desc()).limit(1)).first()
        e = AuditEvent(chain=chain, seq=(head.seq + 1) if head else 1, created_at=utcnow(),
                       actor=actor, action=action, target=target, data=data, ip=ip,
                       prev_hash=head.hash if head else GENESIS)
        e.hash = _digest(e)
        try:
            with session.begin_nested():
                session.add(e)
                session.flush()
            return e
        except IntegrityError:          # another writer took this seq: chain onto the new head
            continue
    raise RuntimeError("audit log busy: could not append after 20 tries")


@dataclass
class Problem:
    chain: str
    seq: int
    what: str


def verify(session: Session) -> tuple[int, list[Problem]]:
    """(entries checked, problems). A problem is an edited entry, a gap (removed entry) or a
    broken link."""
    problems, count = [], 0
    chains = session.scalars(select(AuditEvent.chain).distinct()).all()
    for chain in chains:
        prev_hash, expected = GENESIS, 1
        for e in session.scalars(select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)):
            count += 1
            if e.seq != expected:
                problems.append(Problem(chain, expected, f"entries {expected}..{e.seq - 1} are missing"))
            if e.prev_hash != prev_hash:
                problems.append(Problem(chain, e.seq, "does not link to the entry before it"))
            if _digest(e) != e.hash:
                problems.append(Problem(chain, e.seq, f"was edited ({e.action} {e.target})"))
            prev_hash, expected = e.hash, e.seq + 1
    return count, problems


def entries(session: Session, chain: str, limit: int = 200, before: int | None = None) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.chain == chain)
    if before:
        q = q.where(AuditEvent.seq < before)
    return list(session.scalars(q.order_by(AuditEvent.seq.desc()).limit(limit)))


def count(session: Session, chain: str) -> int:
    return session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.chain == chain)) or 0
