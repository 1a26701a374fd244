"""Two tenants: every route that takes an id answers 404 to tenant A for each of tenant B's ids,
lists never show B's rows, and ids smuggled into bodies are ignored. The table is checked
against the server's own OpenAPI paths, so a new route cannot slip through untested."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from .helpers import upload, wait_job


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def b_ids(server, client_b, tenant_b, banking_subset) -> dict:
    train, test = banking_subset
    ds = upload(client_b, train)
    # Any finished job and its model will do: the cheapest one (no training, 100 rows, no calibration).
    job = client_b.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "limit": 100,
                                              "params": {"calibration_texts": 0}}).json()
    job = wait_job(client_b, job["id"], timeout=600)
    assert job["status"] == "succeeded", job
    user = client_b.post("/api/v1/users", json={"email": "m@b.test", "role": "member"}).json()
    key = client_b.post("/api/v1/api-keys", json={"name": "second"}).json()
    hook = client_b.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/hook"}).json()
    dep = client_b.post("/api/v1/deployments", json={"models": [job["fine_tuned_model"]]}).json()
    return {"dataset": ds["id"], "job": job["id"], "model": job["fine_tuned_model"], "user": user["id"],
            "key": key["id"], "webhook": hook["id"], "deployment": dep["id"]}


# (method, path template, body) — every id-taking route of tunelab's API and OpenAI's.
PNG_B64 = base64.b64encode(_png()).decode("ascii")
FILES = object()        # a multipart body: one small PNG as `files`

ROUTES = [
    ("GET", "/api/v1/datasets/{dataset}", None),
    ("GET", "/api/v1/datasets/{dataset}/preview", None),
    ("PATCH", "/api/v1/datasets/{dataset}", {"name": "smuggled"}),
    ("POST", "/api/v1/datasets/{dataset}/drop-error-rows", None),
    ("POST", "/api/v1/datasets/{dataset}/columns", {"text_column": "text", "label_column": "label"}),
    ("DELETE", "/api/v1/datasets/{dataset}", None),
    ("GET", "/api/v1/jobs/{job}", None),
    ("POST", "/api/v1/jobs/{job}/cancel", None),
    ("POST", "/api/v1/jobs/{job}/resume", None),
    ("GET", "/api/v1/jobs/{job}/events", None),
    ("GET", "/api/v1/jobs/{job}/stream", None),
    ("GET", "/api/v1/jobs/{job}/output", None),
    ("GET", "/api/v1/comparisons/{job}", None),
    ("GET", "/api/v1/models/{model}", None),
    ("GET", "/api/v1/models/{model}/artifact", None),
    ("GET", "/api/v1/models/{model}/download", None),
    ("POST", "/api/v1/models/{model}/predict", {"texts": ["hello"]}),
    ("POST", "/api/v1/models/{model}/predict-images", {"images": [PNG_B64]}),
    ("POST", "/api/v1/models/{model}/predict-images/files", FILES),
    ("PATCH", "/api/v1/models/{model}", {"name": "smuggled"}),
    ("DELETE", "/api/v1/models/{model}", None),
    ("GET", "/api/v1/users/{user}", None),
    ("PATCH", "/api/v1/users/{user}", {"role": "viewer"}),
    ("DELETE", "/api/v1/users/{user}", None),
    ("POST", "/api/v1/users/{user}/api-keys", {"name": "smuggled"}),
    ("DELETE", "/api/v1/api-keys/{key}", None),
    ("DELETE", "/api/v1/webhooks/{webhook}", None),
    ("GET", "/api/v1/webhooks/{webhook}/deliveries", None),
    ("GET", "/api/v1/billing/jobs/{job}", None),
    ("GET", "/v1/files/{dataset}", None),
    ("GET", "/v1/files/{dataset}/content", None),
    ("DELETE", "/v1/files/{dataset}", None),
    ("GET", "/v1/fine_tuning/jobs/{job}", None),
    ("POST", "/v1/fine_tuning/jobs/{job}/cancel", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/events", None),
    ("GET", "/v1/fine_tuning/jobs/{job}/checkpoints", None),
    ("GET", "/v1/models/{model}", None),
    ("DELETE", "/v1/models/{model}", None),
    ("GET", "/api/v1/deployments/{deployment}", None),
    ("POST", "/api/v1/deployments/{deployment}/predict", {"texts": ["hello"]}),
    ("POST", "/api/v1/deployments/{deployment}/predict-images", {"images": [PNG_B64]}),
    ("DELETE", "/api/v1/deployments/{deployment}", None),
    # creating with another tenant's ids
    ("POST", "/api/v1/jobs", {"dataset_id": "{dataset}", "strategy": "linear-probe"}),
    ("POST", "/api/v1/comparisons", {"dataset_id": "{dataset}", "strategies": ["zero-shot"]}),
    ("POST", "/v1/fine_tuning/jobs", {"model": "minilm", "training_file": "{dataset}"}),
    ("POST", "/api/v1/deployments", {"models": ["{model}"]}),
]


def _fill(value, ids):
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_other_tenants_ids_are_not_found(client_a, b_ids, method, path, body):
    if body is FILES:
        r = client_a.request(method, _fill(path, b_ids), files=[("files", ("a.png", _png(), "image/png"))])
    else:
        r = client_a.request(method, _fill(path, b_ids), json=_fill(body, b_ids))
    assert r.status_code == 404, (r.status_code, r.text)
    assert r.json()["error"]["code"] in ("not_found", "dataset_not_found")


def test_table_covers_every_route_with_an_id(client_a):
    spec = client_a.get("/openapi.json").json()
    covered = {(m, re.sub(r"\{\w+\}", "{}", p)) for m, p, _ in ROUTES}
    missing = []
    for path, ops in spec["paths"].items():
        if "{" not in path:
            continue
        for method in ops:
            if (method.upper(), re.sub(r"\{[\w:]+\}", "{}", path)) not in covered:
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"routes with ids not in the BOLA table: {missing}"


def test_tenant_b_still_has_everything(client_b, b_ids):
    assert client_b.get(f"/api/v1/datasets/{b_ids['dataset']}").status_code == 200
    assert client_b.get(f"/api/v1/models/{b_ids['model']}").status_code == 200
    assert client_b.get(f"/api/v1/users/{b_ids['user']}").json()["role"] == "member"
    assert client_b.get(f"/api/v1/deployments/{b_ids['deployment']}").status_code == 200
    keys = {k["id"]: k for k in client_b.get("/api/v1/api-keys").json()["data"]}
    assert keys[b_ids["key"]]["revoked_at"] is None


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/api/v1/jobs", "/api/v1/models", "/api/v1/users",
                                  "/api/v1/api-keys", "/api/v1/webhooks", "/api/v1/comparisons", "/v1/files",
                                  "/v1/fine_tuning/jobs", "/v1/models", "/api/v1/billing/jobs",
                                  "/api/v1/billing/entries", "/api/v1/billing/export.csv", "/api/v1/deployments"])
def test_lists_show_only_own_rows(client_a, b_ids, path):
    text = client_a.get(path).text
    for ident in b_ids.values():
        assert ident not in text


def test_tenant_id_in_a_body_is_ignored(client_a, tenant_a, tenant_b, banking_subset):
    r = client_a.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/x", "tenant_id": tenant_b["tenant_id"]})
    assert r.status_code == 422      # unknown fields are refused outright, not silently applied
    with open(banking_subset[1], "rb") as f:
        r = client_a.post("/api/v1/datasets", files={"file": ("t.csv", f)}, data={"tenant_id": tenant_b["tenant_id"]})
    assert r.status_code == 201
    assert client_a.get(f"/api/v1/datasets/{r.json()['id']}").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/api/v1/jobs", "/v1/models", "/v1/fine_tuning/jobs"])
def test_unauthenticated_is_401(server, path):
    import httpx

    for headers in ({}, {"Authorization": "Bearer tl-0000000000.nope"}, {"Authorization": "Basic x"}):
        r = httpx.get(server.url + path, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
