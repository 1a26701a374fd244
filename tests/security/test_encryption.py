"""Data at rest: a tenant's uploads, models and secrets are never on disk in clear; a blob moved
to another tenant does not decrypt; deleting a tenant leaves nothing readable, even to someone
holding a copy of its files and the master key; export gives everything back; the master key
rotates without re-encrypting data."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from tunelab.security.crypto import TenantKeys

from service.helpers import upload, wait_job

SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py

MARKER = "zanzibar-quokka-7781"     # a string that appears in nothing but this tenant's texts


@pytest.fixture(scope="module")
def marked_dataset(banking_subset, tmp_path_factory) -> Path:
    src = banking_subset[0]
    rows = list(csv.DictReader(open(src, newline="", encoding="utf-8")))
    for r in rows[::10]:
        r["text"] = f"{r['text']} {MARKER}"
    out = tmp_path_factory.mktemp("marked") / "marked.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    return out


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module")
def tenant_with_model(server, client_a, tenant_a, marked_dataset):
    ds = upload(client_a, marked_dataset)
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe"}).json()
    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", done
    hook = client_a.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/h"}).json()
    return {"dataset": ds, "job": done, "hook_secret": hook["secret"]}


def test_nothing_of_the_tenant_is_on_disk_in_clear(server, tenant_with_model):
    assert _files_containing(server.home, MARKER.encode()) == []
    assert _files_containing(server.home, tenant_with_model["hook_secret"].encode()) == []
    sealed = list((server.home / "jobs").rglob("*.tar.enc"))
    assert sealed and not list((server.home / "jobs").rglob("*.safetensors"))


def test_the_tenant_still_uses_its_data(client_a, tenant_with_model):
    preview = client_a.get(f"/api/v1/datasets/{tenant_with_model['dataset']['id']}/preview?limit=500").json()["data"]
    assert any(MARKER in r["text"] for r in preview)
    model = tenant_with_model["job"]["fine_tuned_model"]
    r = client_a.post(f"/api/v1/models/{model}/predict", json={"texts": ["my card has not arrived yet"]})
    assert r.status_code == 200 and r.json()["data"][0]["label"]
    import tarfile

    tar = tarfile.open(fileobj=io.BytesIO(client_a.get(f"/api/v1/models/{model}/download").content))
    names = tar.getnames()
    assert "./manifest.json" in names and "./README.md" in names, names


def test_a_blob_moved_to_another_tenant_does_not_decrypt(server, tenant_a, tenant_b, tenant_with_model):
    keys = TenantKeys(server.home)
    blob = keys.cipher(tenant_a["tenant_id"]).encrypt(b"secret")
    with pytest.raises(InvalidTag):
        keys.cipher(tenant_b["tenant_id"]).decrypt(blob)


def test_export_gives_everything_back(client_a, tenant_with_model, marked_dataset):
    r = client_a.get("/api/v1/tenants/me/export")
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = zf.namelist()
    ds_id = tenant_with_model["dataset"]["id"]
    assert zf.read(f"datasets/{ds_id}/marked.csv") == marked_dataset.read_bytes()
    assert any(n.startswith("models/") for n in names) and any(n.startswith("jobs/") for n in names)
    assert json.loads(zf.read("audit.json"))


def test_master_key_rotation_keeps_data_readable(server, client_a, tenant_a, tenant_with_model):
    dek = server.home / "tenants" / tenant_a["tenant_id"] / "dek.json"
    before = json.loads(dek.read_text())["key_id"]
    old_key = (server.home / "keys" / "master.key").read_text()
    r = server.run("admin", "rotate-master-key", check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(dek.read_text())["key_id"] != before
    assert (server.home / "keys" / "master.key").read_text() != old_key
    server.stop()            # the server holds the old key in memory: restart it
    server.start()
    preview = client_a.get(f"/api/v1/datasets/{tenant_with_model['dataset']['id']}/preview").json()["data"]
    assert preview


def test_after_tenant_deletion_no_byte_is_readable(server, client_a, tenant_a, tenant_with_model):
    tid = tenant_a["tenant_id"]
    # An attacker's backup of the tenant's encrypted files, taken before the deletion:
    backup = {p: p.read_bytes() for p in (server.home / "tenants" / tid).rglob("*") if p.is_file()
              and p.name != "dek.json"}
    sealed = next(iter((server.home / "jobs" / tid).rglob("*.tar.enc"))).read_bytes()
    r = client_a.request("DELETE", "/api/v1/tenants/me", json={"confirm": "tenant-a"})
    assert r.status_code == 200, r.text
    assert not (server.home / "tenants" / tid).exists() and not (server.home / "jobs" / tid).exists()
    assert client_a.get("/api/v1/datasets").status_code == 401          # its keys are gone too
    assert _files_containing(server.home, MARKER.encode()) == []
    # ... and that backup is noise now, even with the master key: the data key was destroyed.
    keys = TenantKeys(server.home)
    fresh = keys.cipher(tid)         # a new, different key would be created for the same id
    for blob in [*backup.values(), sealed]:
        if blob.startswith(b"TLE1"):
            with pytest.raises(InvalidTag):
                fresh.decrypt(blob)
    keys.destroy(tid)
    # No row of it remains in any table (the audit trail keeps its id and what was done, no data).
    from sqlalchemy import inspect, text

    from tunelab.db import Database

    db = Database(server.env.get("TUNELAB_DATABASE_URL") or f"sqlite:///{server.home / 'tunelab.db'}")
    with db.engine.connect() as c:
        for table in inspect(c).get_table_names():
            columns = {col["name"] for col in inspect(c).get_columns(table)}
            if "tenant_id" in columns:
                n = c.execute(text(f"SELECT COUNT(*) FROM {table} WHERE tenant_id = :t"), {"t": tid}).scalar()
                assert n == 0, f"{table} still has {n} row(s) of the deleted tenant"
        assert c.execute(text("SELECT COUNT(*) FROM tenants WHERE id = :t"), {"t": tid}).scalar() == 0
    db.engine.dispose()
