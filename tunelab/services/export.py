"""A tenant's export: everything it owns, decrypted, in one zip — its uploads as uploaded, its
jobs with their events and results, its tuned models' folders, its members (no secrets) and
its audit trail."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Dataset, Job, JobEvent, Tenant, TunedModel, User, Webhook
from ..security.audit import entries
from ..security.storage import cipher, dataset_store

_STR = {"default": str, "indent": 2, "ensure_ascii": False}


def _rows(session: Session, model, tenant_id: str) -> list:
    return list(session.scalars(select(model).where(model.tenant_id == tenant_id)))


def export_tenant(session: Session, home: Path, tenant_id: str) -> Path:
    """The path of a zip in a temp folder (the caller deletes it after sending it)."""
    tenant = session.get(Tenant, tenant_id)
    out = Path(tempfile.mkdtemp(prefix="tunelab-export-")) / f"tunelab-export-{tenant_id}.zip"
    store, key = dataset_store(home, tenant_id), cipher(home, tenant_id)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tenant.json", json.dumps({"id": tenant.id, "name": tenant.name, "created_at": tenant.created_at}, **_STR))
        zf.writestr("users.json", json.dumps([{"id": u.id, "email": u.email, "role": u.role}
                                              for u in _rows(session, User, tenant_id)], **_STR))
        zf.writestr("webhooks.json", json.dumps([{"id": w.id, "url": w.url, "events": w.events}
                                                 for w in _rows(session, Webhook, tenant_id)], **_STR))
        for d in _rows(session, Dataset, tenant_id):
            stored = store.get(d.sha256) if d.sha256 else None
            if stored is not None:
                zf.writestr(f"datasets/{d.id}/{Path(d.filename).name}", stored.read())
            zf.writestr(f"datasets/{d.id}/report.json", json.dumps({"report": d.report, "stats": d.stats}, **_STR))
        for j in _rows(session, Job, tenant_id):
            events = session.scalars(select(JobEvent).where(JobEvent.job_id == j.id).order_by(JobEvent.id))
            zf.writestr(f"jobs/{j.id}.json", json.dumps({
                "status": j.status, "spec": j.spec, "result": j.result, "error": j.error_message,
                "events": [{"type": e.type, "message": e.message, "data": e.data, "at": e.created_at} for e in events]},
                **_STR))
        for m in _rows(session, TunedModel, tenant_id):
            sealed = Path(m.artifact_path)
            if sealed.is_file():      # a segment at a time: a model is never whole in memory
                with open(sealed, "rb") as src, zf.open(f"models/{m.id.replace(':', '_')}.tar", "w",
                                                        force_zip64=True) as member:
                    for chunk in key.decrypt_stream(src):
                        member.write(chunk)
        zf.writestr("audit.json", json.dumps([{"seq": e.seq, "at": e.created_at, "actor": e.actor, "action": e.action,
                                               "target": e.target, "data": e.data, "hash": e.hash}
                                              for e in entries(session, tenant_id, limit=10**9)], **_STR))
    return out
