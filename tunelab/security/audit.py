"""Recording and verifying the audit log (see db/audit.py; its key and anchors: audit_anchors.py).

Each entry's MAC (HMAC-SHA256 under a key kept outside the database, wrapped by the master key)
covers its chain, sequence number, time, actor, action, target, data and the previous entry's
MAC: editing an entry breaks its MAC, removing one breaks the sequence and the next entry's
link, and without the key a rewritten tail cannot be re-chained. After each commit that appended
entries, the new heads are anchored in a signed file outside the database: removing the newest
entries, or rewriting them, disagrees with the anchors.

Entries written before the key existed hold a plain SHA-256 hash. When the key is made, each
chain's head is anchored as a "legacy" anchor: plain hashes are accepted up to that entry only
(the anchor pins them), never after it, so a tail rehashed without the key shows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.audit import AuditEvent
from ..db.models import utcnow
from .audit_anchors import (Anchor, AuditKeys, append_anchors, key_lock, load_key, publish_key, read_anchors,
                            staged_key)

GENESIS = "0" * 64
PLATFORM = "platform"
_PENDING = "tunelab.audit.heads"        # session.info: {chain: (seq, mac, keys)} appended in this transaction
_KEYS: dict[Path, AuditKeys] = {}
_KEYS_LOCK = threading.Lock()
log = logging.getLogger("tunelab.audit")


def _body(e: AuditEvent) -> bytes:
    return json.dumps([e.chain, e.seq, e.created_at.isoformat(timespec="microseconds"), e.actor, e.action,
                       e.target, e.data, e.ip, e.prev_hash], sort_keys=True, separators=(",", ":"),
                      default=str).encode()


def _legacy_digest(e: AuditEvent) -> str:
    return hashlib.sha256(_body(e)).hexdigest()


def _settings():
    from ..settings import get_settings

    return get_settings()


def keys_for(session: Session) -> AuditKeys:
    """This home's audit keys, made on first use (anchoring the unkeyed chains' heads)."""
    home = _settings().home
    with _KEYS_LOCK:
        if home not in _KEYS:
            _KEYS[home] = AuditKeys.derive(load_key(home) or _first_key(session, home))
        return _KEYS[home]


def _first_key(session: Session, home: Path) -> bytes:
    with key_lock(home):
        key = load_key(home)          # another process may have made it while we waited
        if key is None:
            key = staged_key(home)
            append_anchors(_settings().audit_anchors_path, AuditKeys.derive(key), _heads(session),
                           utcnow().isoformat(), kind="legacy")
            publish_key(home)
            log.info("audit log keyed: earlier entries anchored", extra={"home": str(home)})
        return key


def _heads(session: Session) -> list[tuple[str, int, str]]:
    newest = select(AuditEvent.chain, func.max(AuditEvent.seq).label("seq")).group_by(AuditEvent.chain).subquery()
    rows = session.execute(select(AuditEvent.chain, AuditEvent.seq, AuditEvent.hash)
                           .join(newest, (AuditEvent.chain == newest.c.chain) & (AuditEvent.seq == newest.c.seq)))
    return [tuple(r) for r in rows]


def record(session: Session, chain: str | None, actor: str, action: str, target: str = "", *,
           ip: str | None = None, **data) -> AuditEvent:
    """Append an entry in the caller's transaction (it commits or rolls back with the action);
    the commit anchors it."""
    chain = chain or PLATFORM
    keys = keys_for(session)
    for _ in range(20):
        head = session.scalars(select(AuditEvent).where(AuditEvent.chain == chain)
                               .order_by(AuditEvent.seq.desc()).limit(1)).first()
        e = AuditEvent(chain=chain, seq=(head.seq + 1) if head else 1, created_at=utcnow(),
                       actor=actor, action=action, target=target, data=data, ip=ip,
                       prev_hash=head.hash if head else GENESIS)
        e.hash = keys.mac(_body(e))
        try:
            with session.begin_nested():
                session.add(e)
                session.flush()
            session.info.setdefault(_PENDING, {})[chain] = (e.seq, e.hash, keys)
            return e
        except IntegrityError:          # another writer took this seq: chain onto the new head
            continue
    raise RuntimeError("audit log busy: could not append after 20 tries")


@event.listens_for(Session, "after_commit")
def _anchor_after_commit(session: Session) -> None:
    if session.in_nested_transaction():     # a savepoint released (record's own): not yet committed
        return
    heads = session.info.pop(_PENDING, None)
    if not heads:
        return
    try:
        anchor_heads(session.get_bind(), heads)
    except Exception:                   # noqa: BLE001 - the action is committed; verify reports the gap
        log.error("audit anchor not written", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def anchor_heads(bind, heads: dict[str, tuple[int, str, AuditKeys]]) -> None:
    """Anchor the entries this transaction committed (read back: a savepoint rolled back under
    the caller must not be anchored)."""
    committed, keys = [], None
    with bind.connect() as c:
        for chain, (seq, mac, keys) in heads.items():
            stored = c.scalar(select(AuditEvent.hash).where(AuditEvent.chain == chain, AuditEvent.seq == seq))
            if stored == mac:
                committed.append((chain, seq, mac))
    if committed:
        append_anchors(_settings().audit_anchors_path, keys, committed, utcnow().isoformat())


@dataclass
class Problem:
    chain: str
    seq: int
    what: str


def verify(session: Session) -> tuple[int, list[Problem]]:
    """(entries checked, problems). A problem is an edited entry, a gap (removed entry), a broken
    link, a chain shorter than its anchor (truncated), an entry unlike its anchor (rewritten), a
    chain with no anchor, or an anchor line that is not signed with the key."""
    keys = keys_for(session)
    anchors, bad_lines = read_anchors(_settings().audit_anchors_path, keys)
    problems = [Problem("anchors", line, f"anchor line {line} {why}") for line, why in bad_lines]
    by_chain: dict[str, list[Anchor]] = {}
    for a in anchors:
        by_chain.setdefault(a.chain, []).append(a)
    count = 0
    chains = set(session.scalars(select(AuditEvent.chain).distinct())) | set(by_chain)
    for chain in sorted(chains):
        mine = by_chain.get(chain, [])
        legacy_upto = max((a.seq for a in mine if a.kind == "legacy"), default=0)
        macs = _check_chain(session, keys, chain, legacy_upto, problems)
        count += len(macs)
        problems.extend(_check_anchors(chain, macs, mine))
    return count, problems


def _check_chain(session: Session, keys: AuditKeys, chain: str, legacy_upto: int, problems: list) -> dict[int, str]:
    """Walk one chain in order; {seq: mac} of its entries."""
    prev_hash, expected, macs = GENESIS, 1, {}
    for e in session.scalars(select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)):
        if e.seq != expected:
            problems.append(Problem(chain, expected, f"entries {expected}..{e.seq - 1} are missing"))
        if e.prev_hash != prev_hash:
            problems.append(Problem(chain, e.seq, "does not link to the entry before it"))
        if not hmac.compare_digest(keys.mac(_body(e)), e.hash):
            if _legacy_digest(e) != e.hash:
                problems.append(Problem(chain, e.seq, f"was edited ({e.action} {e.target})"))
            elif e.seq > legacy_upto:
                problems.append(Problem(chain, e.seq, f"was edited and rehashed without the audit key "
                                                      f"({e.action} {e.target})"))
        macs[e.seq] = e.hash
        prev_hash, expected = e.hash, e.seq + 1
    return macs


def _check_anchors(chain: str, macs: dict[int, str], anchors: list[Anchor]) -> list[Problem]:
    if not anchors:
        return [Problem(chain, max(macs), f"has {len(macs)} entries but no anchor (anchors file removed?)")] \
            if macs else []
    out = []
    newest = max(anchors, key=lambda a: a.seq)
    last = max(macs, default=0)
    if newest.seq > last:
        out.append(Problem(chain, last + 1, f"truncated: entries {last + 1}..{newest.seq} were removed "
                                            f"(anchored at {newest.at})"))
    differing = sorted((a for a in anchors if a.seq in macs and macs[a.seq] != a.mac), key=lambda a: a.seq)
    if differing:
        a = differing[0]
        out.append(Problem(chain, a.seq, f"rewritten: entry {a.seq} is not the one anchored at {a.at}"))
    return out


def entries(session: Session, chain: str, limit: int = 200, before: int | None = None) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.chain == chain)
    if before:
        q = q.where(AuditEvent.seq < before)
    return list(session.scalars(q.order_by(AuditEvent.seq.desc()).limit(limit)))


def count(session: Session, chain: str) -> int:
    return session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.chain == chain)) or 0
