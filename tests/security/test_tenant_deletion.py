"""Deleting a tenant leaves nothing of it anywhere under TUNELAB_HOME: not its texts (in datasets,
cached embeddings, job folders, checkpoints, logs), not its uploaded model's weights, not its
metadata (a label name) in the database file's pages or write-ahead log; and a job that made its
folder read-only (so that a plain recursive delete fails on it) does not keep its files alive.
(The audit trail, append-only, keeps the tenant's chain: ids, actions, uploaded file names.)"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import pytest

from service.helpers import upload, wait_job
from service.server_proc import ServerProcess

SQLITE_ONLY = True   # the database file under TUNELAB_HOME is SQLite's; PostgreSQL's lives elsewhere

MARKER = "okapi-marmalade-5521"            # in the tenant's texts only
META_MARKER = "wombat-ledger-0937"         # a label name: metadata, kept in the database in clear
WEIGHTS = struct.pack("<16f", *[1.0 + i / 7 for i in range(16)])   # 64 bytes no other file has


def _safetensors(data: bytes) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [0, len(data)]}}).encode()
    return struct.pack("<Q", len(header)) + header + data


def _model_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
        zf.writestr("model.safetensors", _safetensors(WEIGHTS * 64))
    return buf.getvalue()


def _holding(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """Every file under root (the database and its WAL included) holding any of the needles."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits = [n.decode(errors="replace") for n in needles if n in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


@pytest.fixture(scope="module")
def marked_dataset(banking_subset, tmp_path_factory) -> Path:
    rows = list(csv.DictReader(open(banking_subset[0], newline="", encoding="utf-8")))
    for r in rows[::5]:
        r["text"] = f"{r['text']} {MARKER}"
    renamed = rows[0]["category"]
    for r in rows:
        if r["category"] == renamed:
            r["category"] = META_MARKER
    out = tmp_path_factory.mktemp("doomed") / "doomed.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    return out


@pytest.fixture(scope="module")
def doomed(server, client_a, tenant_a, marked_dataset):
    """A tenant with a bit of everything: a dataset, a finished linear-probe (its cached features,
    its sealed model), an uploaded base model, a cancelled job and its checkpoint."""
    ds = upload(client_a, marked_dataset)
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe"}).json()
    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", done
    r = client_a.post("/api/v1/models/import", files={"file": ("mine.zip", _model_archive())}, data={"name": "mine"})
    assert r.status_code == 201, r.text
    uploaded = r.json()["id"]
    cancelled = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "full"}).json()
    assert client_a.post(f"/api/v1/jobs/{cancelled['id']}/cancel").status_code == 200
    cancelled = wait_job(client_a, cancelled["id"], timeout=300)
    assert cancelled["status"] == "cancelled", cancelled
    tid = tenant_a["tenant_id"]
    # What a cancelled fine-tune leaves behind (its checkpoint, from its texts), in a folder the
    # job itself made read-only, as code running in its sandbox may: a plain recursive delete
    # that ignores errors then keeps all of it (when the server does not run as root).
    work = server.home / "jobs" / tid / cancelled["id"] / "work" / "checkpoint-1"
    work.mkdir(parents=True, exist_ok=True)
    (work / "trainer_state.json").write_text(json.dumps({"sample": f"my card {MARKER}"}))
    (work / "model.safetensors").write_bytes(_safetensors(WEIGHTS * 8))
    os.chmod(work, 0o500)
    os.chmod(work.parent, 0o500)
    return {"dataset": ds, "uploaded": uploaded, "tenant_id": tid}


def test_the_tenant_owns_plenty_before_deletion(server, doomed):
    tid = doomed["tenant_id"]
    assert list((server.home / "jobs" / tid).rglob("*.tar.enc"))
    assert list((server.home / "tenants" / tid / "runtime").rglob("*.safetensors")), "no cached features"
    assert (server.home / "jobs" / tid).is_dir() and (server.home / "tenants" / tid / "models").is_dir()


def test_after_deletion_nothing_of_the_tenant_is_left_under_home(server, client_a, doomed):
    tid = doomed["tenant_id"]
    needles = [MARKER.encode(), META_MARKER.encode(), WEIGHTS]
    before = _holding(server.home, needles)
    assert any(name.startswith("tunelab.db") for name in before), before     # its label name, in clear
    r = client_a.request("DELETE", "/api/v1/tenants/me", json={"confirm": "tenant-a"})
    assert r.status_code == 200, r.text
    assert not (server.home / "tenants" / tid).exists()
    assert not (server.home / "jobs" / tid).exists()
    assert _holding(server.home, needles) == {}


def test_a_master_key_inside_home_is_warned_about_and_a_key_file_outside_it_is_used(server, tmp_path, banking_subset):
    """A backup of TUNELAB_HOME must not hold the key that unlocks it: the default (a file in the
    home) is warned about at startup; TUNELAB_MASTER_KEY_FILE puts it elsewhere."""
    assert "master key is a file inside TUNELAB_HOME" in server.tail(10**7)
    outside = tmp_path / "secrets" / "master.key"
    home = tmp_path / "home"
    other = ServerProcess(home, worker=False, master_key_file=outside).start()
    try:
        tenant = other.create_tenant("keyed", "k@k.test")
        with other.client(tenant["api_key"]) as c:
            upload(c, banking_subset[0])
        assert outside.is_file() and oct(outside.stat().st_mode & 0o777) == "0o600"
        assert not (home / "keys" / "master.key").exists()
        assert "master key is a file inside TUNELAB_HOME" not in other.tail(10**7)
        key = outside.read_bytes().strip()
        assert _holding(home, [key]) == {}
    finally:
        other.stop()
