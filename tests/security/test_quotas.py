"""Quotas count every byte a tenant keeps (sealed tuned models, uploaded base models, a deleted
dataset's blob until no row shares it, then it is deleted), deleting a tuned model deletes its file, and predictions are
refused (402) without credit: served requests never take the balance below zero."""

from __future__ import annotations

import io
import json
import struct
import time
import zipfile

import httpx
import pytest

from service.helpers import upload, wait_job
from service.server_proc import ServerProcess

# `make test` on SQLite; `make test-slow` on PostgreSQL too (its conditional UPDATE under concurrency).
pytestmark = pytest.mark.slow_on_postgresql

OPERATOR = "tl-operator-quota-test"
PER_REQUEST = 10          # micro-dollars: the price sheet's 10,000 per 1K requests


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from service.conftest import database_url

    home = tmp_path_factory.mktemp(f"quotas-{backend}")
    srv = ServerProcess(home, database_url(backend, "sec_quotas"), operator_api_key=OPERATOR,
                        billing_housekeeping_seconds=1).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def op(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def trained(client_a, banking_subset):
    ds = upload(client_a, banking_subset[0])
    # Any sealed model will do: the cheapest one (no training, 100 rows, no calibration).
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "limit": 100,
                                              "params": {"calibration_texts": 0}}).json()
    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", done
    return {"dataset": ds, "model": done["fine_tuned_model"]}


def _on_disk(server, tid: str) -> int:
    roots = [server.home / "tenants" / tid / "datasets", server.home / "tenants" / tid / "models",
             server.home / "jobs" / tid]
    return sum(p.lstat().st_size for r in roots for p in r.rglob("*") if p.is_file() and not p.is_symlink())


def _stored(client) -> int:
    return client.get("/api/v1/billing/quotas").json()["usage"]["storage_bytes"]


def _model_archive(n_floats: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
        zf.writestr("model.safetensors", struct.pack("<Q", len(header)) + header + b"\1" * (4 * n_floats))
    return buf.getvalue()


def test_storage_counts_sealed_models_and_uploaded_models(server, client_a, tenant_a, trained):
    tid = tenant_a["tenant_id"]
    sealed = list((server.home / "jobs" / tid).rglob("*.tar.enc"))
    assert sealed
    stored = _stored(client_a)
    assert stored >= sum(p.stat().st_size for p in sealed) + trained["dataset"]["bytes"]
    assert stored == _on_disk(server, tid)
    r = client_a.post("/api/v1/models/import", files={"file": ("m.zip", _model_archive(100_000))}, data={"name": "m"})
    assert r.status_code == 201, r.text
    assert _stored(client_a) >= stored + 400_000


def test_deleting_a_dataset_deletes_its_blob_once_no_row_shares_it(server, client_a, tenant_a, banking_subset):
    tid = tenant_a["tenant_id"]
    before = _stored(client_a)
    first, second = upload(client_a, banking_subset[1]), upload(client_a, banking_subset[1])   # one shared blob
    grown = _stored(client_a)
    assert grown > before and grown == _on_disk(server, tid)
    assert client_a.delete(f"/api/v1/datasets/{first['id']}").status_code == 200
    assert _stored(client_a) == _on_disk(server, tid) == grown       # still the other row's bytes
    assert client_a.delete(f"/v1/files/{second['id']}").status_code == 200
    assert _stored(client_a) == _on_disk(server, tid) == before       # gone from disk and from the quota


def test_zero_credit_refuses_predictions_and_the_balance_never_goes_negative(client_a, tenant_a, op, trained):
    tid, model = tenant_a["tenant_id"], trained["model"]
    predict = lambda n: client_a.post(f"/api/v1/models/{model}/predict", json={"texts": ["where is my card"] * n})  # noqa: E731
    assert predict(1).status_code == 200
    time.sleep(2.5)                      # housekeeping bills that one (every second here)
    left = client_a.get("/api/v1/billing/balance").json()["available"]
    r = op.post("/api/v1/admin/billing/adjustments", json={"tenant_id": tid, "amount_usd": f"-{left / 1e6:.6f}",
                                                           "memo": "to zero"})
    assert r.status_code == 201, r.text
    assert client_a.get("/api/v1/billing/balance").json()["available"] == 0
    r = predict(1)
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credit", r.text
    # Credit for two and a half requests: two are served, the third is refused, and so is a batch.
    r = op.post("/api/v1/admin/billing/grants", json={"tenant_id": tid, "amount_usd": "0.000025", "kind": "topup"})
    assert r.status_code == 201, r.text
    assert predict(3).status_code == 402           # a batch the credit does not cover: none of it
    assert [predict(1).status_code for _ in range(3)] == [200, 200, 402]
    time.sleep(2.5)                      # the two served are billed
    bal = client_a.get("/api/v1/billing/balance").json()
    assert bal["available"] == 25 - 2 * PER_REQUEST and not bal["in_debt"], bal
    assert predict(1).status_code == 402           # 5 left: not enough for one more (10)


def test_deleting_a_tuned_model_deletes_its_sealed_file(server, client_a, tenant_a, trained):
    tid = tenant_a["tenant_id"]
    before = {p for p in (server.home / "jobs" / tid).rglob("*.tar.enc")}
    stored = _stored(client_a)
    assert client_a.delete(f"/api/v1/models/{trained['model']}").status_code == 200
    gone = before - {p for p in (server.home / "jobs" / tid).rglob("*.tar.enc")}
    assert len(gone) == 1
    assert _stored(client_a) < stored and _stored(client_a) == _on_disk(server, tid)
