"""Names: a dataset is named at upload (default: its file name without the suffix), a tuned model
by its job (`model_name`, default "<dataset> — <strategy>"); both are renamed with PATCH (the id
stays), refused when blank, unprintable or too long, 404 for another tenant's ids (tests/service/
test_tenancy.py), audited; the SDK's and the remote CLI's rename; and the migration names the rows that existed
before it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tunelab.db import Database
from tunelab.sdk import Client

from .conftest import database_url
from .helpers import upload, wait_job

pytestmark = pytest.mark.slow_on_postgresql    # SQLite in `make test`, PostgreSQL in `make test-slow`


@pytest.fixture(scope="module")
def world(server, client_a, banking_subset) -> dict:
    train, _ = banking_subset
    ds = upload(client_a, train)
    named = upload(client_a, train, name="  Support tickets  ")
    # the cheapest finished model (no training, 100 rows, no calibration), named by its job
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "limit": 100,
                                              "params": {"calibration_texts": 0},
                                              "model_name": "  First try  "}).json()
    plain = client_a.post("/api/v1/jobs", json={"dataset_id": named["id"], "strategy": "zero-shot", "limit": 100,
                                                "params": {"calibration_texts": 0}}).json()
    job, plain = wait_job(client_a, job["id"]), wait_job(client_a, plain["id"])
    assert job["status"] == plain["status"] == "succeeded", (job, plain)
    return {"dataset": ds, "named": named, "model": job["fine_tuned_model"], "plain": plain["fine_tuned_model"]}


def test_names_given_at_creation_and_by_default(client_a, world, banking_subset):
    assert world["dataset"]["name"] == banking_subset[0].stem          # the file name, no suffix
    assert world["named"]["name"] == "Support tickets"                  # trimmed
    assert client_a.get(f"/api/v1/models/{world['model']}").json()["name"] == "First try"
    assert client_a.get(f"/api/v1/models/{world['plain']}").json()["name"] == "Support tickets — zero shot"
    listed = {m["id"]: m for m in client_a.get("/api/v1/models").json()["data"]}
    assert listed[world["model"]]["name"] == "First try"


def test_rename_keeps_the_id_and_is_audited(client_a, world):
    ds_id, model_id = world["dataset"]["id"], world["model"]
    r = client_a.patch(f"/api/v1/datasets/{ds_id}", json={"name": "  SMS spam, March  "})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == ds_id and r.json()["name"] == "SMS spam, March"
    assert client_a.get(f"/api/v1/datasets/{ds_id}").json()["name"] == "SMS spam, March"
    r = client_a.patch(f"/api/v1/models/{model_id}", json={"name": "Spam filter v1 ✓"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == model_id and r.json()["name"] == "Spam filter v1 ✓"
    # the id still serves predictions
    assert client_a.post(f"/api/v1/models/{model_id}/predict", json={"texts": ["card lost"]}).status_code == 200
    actions = [(e["action"], e["target"], e["data"]) for e in client_a.get("/api/v1/audit").json()["data"]]
    assert any(a == "dataset.rename" and t == ds_id and d["old"] == world["dataset"]["name"]
               and d["new"] == "SMS spam, March" for a, t, d in actions)
    assert any(a == "model.rename" and t == model_id and d["new"] == "Spam filter v1 ✓" for a, t, d in actions)


@pytest.mark.parametrize("name", ["", "   ", "x" * 121, "tab\there", "nul\u0000", "esc\u001b[31m", 7, None])
def test_bad_names_are_refused(client_a, world, name):
    for path in (f"/api/v1/datasets/{world['dataset']['id']}", f"/api/v1/models/{world['model']}"):
        r = client_a.patch(path, json={"name": name})
        assert r.status_code == 422, (path, name, r.text)
    if name is not None:         # a job's model_name may be null: the default name
        r = client_a.post("/api/v1/jobs", json={"dataset_id": world["dataset"]["id"], "strategy": "zero-shot",
                                                "model_name": name})
        assert r.status_code == 422, (name, r.text)


def test_unknown_ids_and_viewers(server, client_a, tenant_a, world):
    assert client_a.patch("/api/v1/datasets/file-nope", json={"name": "x"}).status_code == 404
    assert client_a.patch("/api/v1/models/minilm", json={"name": "x"}).status_code == 404    # a catalog model
    viewer = client_a.post("/api/v1/users", json={"email": "v@a.test", "role": "viewer"}).json()
    key = client_a.post(f"/api/v1/users/{viewer['id']}/api-keys", json={"name": "v"}).json()["key"]
    with server.client(key) as c:
        assert c.patch(f"/api/v1/models/{world['model']}", json={"name": "x"}).status_code == 403


def test_sdk_rename(server, tenant_a, world):
    with Client(server.url, api_key=tenant_a["api_key"]) as client:
        assert client.datasets.rename(world["named"]["id"], "Tickets (SDK)").name == "Tickets (SDK)"
        assert client.models.rename(world["plain"], "Tickets model").name == "Tickets model"
        assert client.models.get(world["plain"]).name == "Tickets model"
    # and the remote CLI
    key = tenant_a["api_key"]
    r = server.run("--server", server.url, "--api-key", key, "datasets", "rename", world["named"]["id"],
                   "Tickets (CLI)", check=False)
    assert r.returncode == 0 and "Tickets (CLI)" in r.stdout, (r.stdout, r.stderr)
    r = server.run("--server", server.url, "--api-key", key, "models", "rename", world["plain"], "", check=False)
    assert r.returncode == 1 and "name" in r.stderr, (r.stdout, r.stderr)         # refused, with the field
    r = server.run("--server", server.url, "--api-key", key, "models", "rename", world["plain"], "Tickets (CLI)",
                   "--json", check=False)
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "Tickets (CLI)", (r.stdout, r.stderr)


def test_the_migration_names_existing_rows(backend, tmp_path):
    """Rows made before 0004: a dataset gets its file name without the suffix, a tuned model
    "<its dataset's name> — <strategy>"."""
    from alembic import command
    from alembic.config import Config

    from tunelab.db.engine import MIGRATIONS

    url = database_url(backend, "rename_migration") or f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('ten_1', 't', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO datasets (id, tenant_id, filename, purpose, bytes, status, rows, report, "
                              "stats, created_at) VALUES ('file-1', 'ten_1', 'sms_spam.csv', 'fine-tune', 1, "
                              "'processed', 1, '{}', '{}', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO jobs (id, tenant_id, kind, status, spec, attempts, lease_version, "
                              "cancel_requested, progress, result, created_at) VALUES ('ftjob-1', 'ten_1', 'train', "
                              "'succeeded', '{\"dataset_id\": \"file-1\"}', 0, 0, false, '{}', '{}', "
                              "CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO tuned_models (id, tenant_id, job_id, base_model, strategy, artifact_path, "
                              "metrics, created_at) VALUES ('ft:1', 'ten_1', 'ftjob-1', 'minilm', 'linear-probe', "
                              "'/x', '{}', CURRENT_TIMESTAMP)"))
            command.upgrade(cfg, "head")
            assert conn.execute(text("SELECT name FROM datasets")).scalar_one() == "sms_spam"
            assert conn.execute(text("SELECT name FROM tuned_models")).scalar_one() == "sms_spam — linear probe"
    finally:
        db.engine.dispose()
