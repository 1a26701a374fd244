"""Deployments through the service. On each database: create/list/get/delete, another tenant's ids
404, what is refused at creation (the service's rules on rows: mixed bases, two classifiers, the
quota; and through HTTP). End to end on SQLite (serving does not depend on the database): two
LoRA adapters of the pretrained stories260K, trained through the service, deployed together and
asked with the unmodified `openai` client; each answers with its own adapter, greedy, as the
artifact answers when loaded locally; the stream joined equals the answer, usage exact and
metered; a classifier's predictions through its deployment equal /models/{id}/predict; a tenant
out of credit gets 402 before any work."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from tunelab.billing import ledger
from tunelab.contract import DeploymentCreate
from tunelab.db import Database, migrate
from tunelab.db.models import Deployment, Tenant, TunedModel, new_id
from tunelab.services import deployments as svc
from tunelab.settings import Settings

from .conftest import database_url
from .helpers import identity_chat, stories_model, upload, wait_job
from .server_proc import ServerProcess

OPERATOR = "tl-operator-deployments"
QUESTION = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"deployments-{backend}")
    srv = ServerProcess(home, database_url(backend, "deployments"), operator_api_key=OPERATOR).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sqlite_only(backend):
    if backend != "sqlite":
        pytest.skip("serving end to end does not depend on the database: SQLite only")


@pytest.fixture(scope="module")
def classifier(client_a, banking_subset) -> str:
    """The cheapest finished classifier (zero-shot: no training)."""
    ds = upload(client_a, banking_subset[0])
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "limit": 100,
                                              "params": {"calibration_texts": 0}}).json()
    job = wait_job(client_a, job["id"], timeout=600)
    assert job["status"] == "succeeded", job
    return job["fine_tuned_model"]


def _chat_file(tmp: Path, name: str) -> Path:
    path = identity_chat(tmp)
    if name != "Tuna":
        path.write_text(path.read_text(encoding="utf-8").replace("Tuna", name), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def adapters(sqlite_only, server, client_a, tenant_a, tmp_path_factory) -> dict:
    """Two LoRA adapters of one uploaded stories260K, taught different names (tiny runs)."""
    stories = stories_model(client_a, tmp_path_factory.mktemp("stories"))
    jobs = []
    for name in ("Tuna", "Marlin"):
        ds = upload(client_a, _chat_file(tmp_path_factory.mktemp(name), name))
        r = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "sft-lora", "model": stories,
                                                "params": {"min_steps": 40, "eval_answers": 0}})
        assert r.status_code == 201, r.text
        jobs.append(r.json()["id"])
    ids = []
    for job_id in jobs:
        job = wait_job(client_a, job_id, timeout=900)
        assert job["status"] == "succeeded", (job, server.tail())
        ids.append(job["fine_tuned_model"])
    base = server.home / "tenants" / tenant_a["tenant_id"] / "models" / stories.split(":", 1)[1]
    return {"stories": stories, "base": base, "ids": ids}


def _local(server, key: str, model_id: str, base: Path, dest: Path) -> tuple[str, int]:
    """The greedy answer of the downloaded artifact loaded the way `tunelab generate` loads it
    (the base: the uploaded folder), and the prompt's token count."""
    from tunelab.artifacts.store import PREDICTOR_KINDS, read_manifest
    from tunelab.models.generation_settings import GenerationSettings
    from tunelab.security.archives import safe_extract

    with server.client(key) as api:
        r = api.get(f"/api/v1/models/{model_id}/download", timeout=120)
    assert r.status_code == 200, r.text
    archive = dest.with_suffix(".tar")
    archive.write_bytes(r.content)
    folder = safe_extract(archive, dest)
    folder = next((p.parent for p in folder.rglob("manifest.json")), folder)
    manifest = read_manifest(folder)
    lm = PREDICTOR_KINDS[manifest["kind"]].load(folder, manifest, manifest["labels"], base)
    return lm.generate(QUESTION, GenerationSettings(max_new_tokens=MAX_TOKENS)), len(lm.prompt_ids(QUESTION))


# ---- the resource, on each database --------------------------------------------------------------

def test_create_list_get_delete_and_other_tenants(client_a, client_b, classifier):
    r = client_a.post("/api/v1/deployments", json={"models": [classifier], "engine": "onnx", "idle_seconds": 60})
    assert r.status_code == 201, r.text
    dep = r.json()
    assert dep["id"].startswith("dep_") and dep["kind"] == "classify" and dep["models"] == [classifier]
    assert dep["engine"] == "onnx" and dep["requests_served"] == 0 and dep["prompt_tokens"] == 0
    assert dep["endpoints"] == {"predict": f"/api/v1/deployments/{dep['id']}/predict"}
    assert dep["state"] in ("loading", "ready", "failed", "idle-unloaded")
    assert dep["id"] in {d["id"] for d in client_a.get("/api/v1/deployments").json()["data"]}
    assert client_a.get(f"/api/v1/deployments/{dep['id']}").json()["models"] == [classifier]

    # another tenant: its list is without it, every route with the id is 404, its models too
    assert dep["id"] not in client_b.get("/api/v1/deployments").text
    for method, path, body in [("GET", "", None), ("DELETE", "", None), ("POST", "/predict", {"texts": ["hi"]})]:
        r = client_b.request(method, f"/api/v1/deployments/{dep['id']}{path}", json=body)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    r = client_b.post("/api/v1/deployments", json={"models": [classifier]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "models.0", r.text

    r = client_a.delete(f"/api/v1/deployments/{dep['id']}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert client_a.get(f"/api/v1/deployments/{dep['id']}").status_code == 404
    actions = [e["action"] for e in client_a.get("/api/v1/audit", params={"limit": 200}).json()["data"]]
    assert "deployment.create" in actions and "deployment.delete" in actions


@pytest.mark.parametrize("body,status,code,param", [
    ({"models": ["ft:nope:nope"]}, 404, "not_found", "models.0"),
    ({"models": ["minilm"]}, 422, "not_servable", "models.0"),          # a catalog encoder: nothing to serve
    ({"models": ["{classifier}", "{classifier}"]}, 422, "validation_error", "models"),
    ({"models": ["smollm2"], "engine": "onnx"}, 422, "engine_not_supported", "engine"),
    ({"models": ["smollm2", "{classifier}"]}, 422, "mixed_kinds", "models"),
    ({"models": []}, 422, "validation_error", "models"),
    ({"models": ["{classifier}"], "replicas": 9}, 422, "validation_error", "replicas"),
    ({"models": ["{classifier}"], "engine": "tensorrt"}, 422, "validation_error", "engine"),
])
def test_refused_at_creation(client_a, classifier, body, status, code, param):
    body = json.loads(json.dumps(body).replace("{classifier}", classifier))
    r = client_a.post("/api/v1/deployments", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["param"] == param, err


# ---- the service's rules on rows, on each database -------------------------------------------------

@pytest.fixture
def rows(backend, tmp_path):
    database = Database(database_url(backend, "dep_rows") or f"sqlite:///{tmp_path / 'tunelab.db'}")
    migrate(database.engine)
    with database.session() as s:
        t = Tenant(name="rows")
        s.add(t)
        s.flush()
        models = {}
        for key, base, task in [("a1", "upload:aaaa", "chat"), ("a2", "upload:aaaa", "chat"),
                                ("b1", "upload:bbbb", "chat"), ("c1", "minilm", "text-classification"),
                                ("c2", "minilm", "text-classification")]:
            m = TunedModel(id=f"ft:{key}:{t.id}", tenant_id=t.id, job_id=_job(s, t.id), base_model=base,
                           strategy="sft-lora" if task == "chat" else "lora", artifact_path=f"/x/{key}",
                           metrics={"task": task}, name=key)
            s.add(m)
            models[key] = m.id
        tenant_id = t.id
        ledger.grant(s, tenant_id, 1_000_000, memo="test")
    yield database, tenant_id, models
    database.engine.dispose()


def _job(s, tenant_id: str) -> str:
    from tunelab.db.models import Job

    job = Job(id=new_id("ftjob-"), tenant_id=tenant_id, spec={})
    s.add(job)
    s.flush()
    return job.id


def _create(database, tenant_id, settings, **body):
    with database.session() as s:
        return svc.create_deployment(s, tenant_id, DeploymentCreate(**body), settings).id


def test_service_rules_bases_classifiers_quota_usage(rows, tmp_path):
    database, tenant_id, m = rows
    settings = Settings(home=tmp_path, max_deployments_per_tenant=2)
    for models, engine, code in [([m["a1"], m["b1"]], "torch", "mixed_bases"),
                                 ([m["c1"], m["c2"]], "torch", "one_classifier"),
                                 ([m["a1"]], "onnx-int8", "engine_not_supported")]:
        with pytest.raises(svc.DeploymentRefused) as caught:
            _create(database, tenant_id, settings, models=models, engine=engine)
        assert caught.value.code == code and caught.value.status == 422, caught.value.message
    assert "upload:aaaa" in str(_message(database, tenant_id, settings, [m["a1"], m["b1"]]))
    pair = _create(database, tenant_id, settings, models=[m["a1"], m["a2"]])
    _create(database, tenant_id, settings, models=[m["c1"]], engine="onnx-int8")
    with pytest.raises(svc.DeploymentRefused) as caught:
        _create(database, tenant_id, settings, models=[m["c2"]])
    assert caught.value.status == 429 and caught.value.code == "deployment_quota"
    with database.session() as s:
        row, name = svc.resolve_model(s, tenant_id, m["a2"])
        assert (row.id, name, row.base_model) == (pair, m["a2"], "upload:aaaa")
        with pytest.raises(svc.DeploymentRefused) as caught:
            svc.resolve_model(s, "ten_other", m["a2"])         # another tenant's adapter
        assert caught.value.status == 404 and "POST /api/v1/deployments" in caught.value.message
        svc.record_usage(s, tenant_id, row, requests=1, prompt_tokens=7, completion_tokens=5)
    with database.session() as s:
        row = s.get(Deployment, pair)
        assert (row.requests_served, row.prompt_tokens, row.completion_tokens) == (1, 7, 5)
        from tunelab.billing.usage import bill_serving
        from tunelab.billing import prices

        sheet = prices.current()
        assert bill_serving(s, tenant_id) == sheet.per_1k_requests // 1000 + 12 * sheet.per_1k_tokens // 1000


def _message(database, tenant_id, settings, models) -> str:
    try:
        _create(database, tenant_id, settings, models=models)
    except svc.DeploymentRefused as exc:
        return exc.message
    return ""


# ---- serving end to end, on SQLite -------------------------------------------------------------

@pytest.fixture(scope="module")
def oai(server, tenant_a):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=tenant_a["api_key"], max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def pair(adapters, client_a) -> str:
    r = client_a.post("/api/v1/deployments", json={"models": adapters["ids"], "name": "two adapters"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_openai_client_two_adapters_stream_usage(oai, server, tenant_a, tenant_b, client_a, adapters, pair,
                                                 tmp_path):
    answers = {}
    for i, model in enumerate(adapters["ids"]):
        whole = oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
        text = whole.choices[0].message.content
        chunks = list(oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX_TOKENS,
                                                  stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
        assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
        local, prompt_tokens = _local(server, tenant_a["api_key"], model, adapters["base"], tmp_path / f"m{i}")
        assert text == local, (model, text, local)
        assert whole.usage.prompt_tokens == prompt_tokens
        assert whole.usage.total_tokens == prompt_tokens + whole.usage.completion_tokens
        assert 0 < whole.usage.completion_tokens <= MAX_TOKENS
        answers[model] = (text, whole.usage)
    assert len({t for t, _ in answers.values()}) == 2, answers      # each its own adapter

    dep = client_a.get(f"/api/v1/deployments/{pair}").json()
    assert dep["state"] == "ready" and dep["requests_served"] == 4, dep
    assert dep["completion_tokens"] == 2 * sum(u.completion_tokens for _, u in answers.values())
    assert dep["endpoints"]["chat_completions"] == "/v1/chat/completions"

    raw = oai.completions.create(model=adapters["ids"][0], prompt="Once upon a time", max_tokens=8)
    assert raw.object == "text_completion" and raw.usage.completion_tokens <= 8

    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model=adapters["ids"][0], messages=QUESTION, n=2)
    other = openai.OpenAI(base_url=server.url + "/v1", api_key=tenant_b["api_key"], max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        other.chat.completions.create(model=adapters["ids"][0], messages=QUESTION)
    assert "POST /api/v1/deployments" in caught.value.body["message"]


def test_predict_through_a_deployment_sdk_and_cli(sqlite_only, server, tenant_a, client_a, classifier):
    """A classifier deployment through the SDK and the remote CLI: its predictions are those of
    /models/{id}/predict, computed in its own server process, counted on the deployment."""
    from tunelab.sdk import Client

    texts = ["my card has not arrived", "how do I top up?"]
    with Client(server.url, tenant_a["api_key"], timeout=300) as sdk:
        dep = sdk.deployments.create(classifier, batch_window_ms=2)
        assert sdk.deployments.wait(dep.id, timeout=300).state == "ready"
        got = sdk.deployments.predict(dep.id, texts)
        direct = sdk.models.predict(classifier, texts)
        assert [p.label for p in got] == [p.label for p in direct]
        assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(got, direct))
        assert sdk.deployments.get(dep.id).requests_served == 2
        key = ("--server", server.url, "--api-key", tenant_a["api_key"])
        r = server.run(*key, "deployments", "predict", dep.id, texts[0], check=False)
        assert r.returncode == 0 and r.stdout.split("\t")[0] == direct[0].label, r.stderr
        r = server.run(*key, "deployments", "list", "--json", check=False)
        assert r.returncode == 0 and dep.id in r.stdout, r.stderr
        r = server.run(*key, "deployments", "delete", dep.id, check=False)
        assert r.returncode == 0, r.stderr
        assert dep.id not in {d.id for d in sdk.deployments.list()}


def test_out_of_credit_is_402_before_any_work(sqlite_only, server, client_a, tenant_a, oai, adapters, pair):
    """Last: it leaves tenant A without credit."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}) as op:
        available = client_a.get("/api/v1/billing/balance").json()["available"]
        r = op.post("/api/v1/admin/billing/adjustments", json={"tenant_id": tenant_a["tenant_id"],
                                                               "amount_usd": f"-{available / 1e6:.6f}", "memo": "test"})
        assert r.status_code in (200, 201) and r.json()["balance"]["available"] <= 0, r.text
    before = client_a.get(f"/api/v1/deployments/{pair}").json()
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model=adapters["ids"][0], messages=QUESTION)
    assert caught.value.status_code == 402 and caught.value.body["code"] == "insufficient_credit"
    with pytest.raises(openai.APIStatusError) as caught:
        list(oai.chat.completions.create(model=adapters["ids"][0], messages=QUESTION, stream=True))
    assert caught.value.status_code == 402
    after = client_a.get(f"/api/v1/deployments/{pair}").json()
    assert after["requests_served"] == before["requests_served"]
