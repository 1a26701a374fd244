"""The Python SDK and the remote CLI against a real server: upload, train (linear-probe on a
10-intent Banking77 subset), watch, predict; error shapes and exit statuses."""

from __future__ import annotations

import io
import json
import time

import pytest

from tunelab.sdk import APIError, Client, JobEvent



SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py

@pytest.fixture(scope="module")
def sdk(server, tenant_a):
    with Client(server.url, tenant_a["api_key"], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def uploaded(sdk, banking_subset):
    train, test = banking_subset
    return sdk.datasets.upload(train), sdk.datasets.upload(test, text_column="text", label_column="category")


@pytest.fixture(scope="module")
def trained(sdk, uploaded):
    """One linear-probe job through the SDK, watched to its end; (job, events seen)."""
    train, test = uploaded
    job = sdk.jobs.create(train.id, strategy="linear-probe", test_dataset_id=test.id, idempotency_key="sdk-lp-1")
    seen: list[JobEvent] = []
    final = sdk.jobs.watch(job.id, on_event=seen.append, poll_interval=0.5, timeout=300)
    return final, seen


def remote(server, key, *args):
    return server.run("--server", server.url, "--api-key", key, *args, check=False)


def test_sdk_upload_list_get_preview(sdk, uploaded):
    train, test = uploaded
    assert train.rows == 400 and train.labels == 10 and train.status
    assert (train.text_column, train.label_column) == ("text", "category")
    assert train.report is not None and train.stats is not None
    assert {d.id for d in sdk.datasets.list()} >= {train.id, test.id}
    assert sdk.datasets.get(test.id).rows == 400
    rows = sdk.datasets.preview(train.id, limit=3)
    assert len(rows) == 3
    assert sdk.tenant.me().name == "tenant-a"


def test_sdk_train_watch_predict(sdk, uploaded, trained):
    job, seen = trained
    assert job.status == "succeeded", (job.error, [e.message for e in seen])
    assert job.is_terminal and job.fine_tuned_model and job.finished_at
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids)), "each event once, in order"
    statuses = [e.data.get("to") for e in seen if e.type == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    # the idempotency key returns the first job, not a second one
    again = sdk.jobs.create(uploaded[0].id, strategy="linear-probe", idempotency_key="sdk-lp-1")
    assert again.id == job.id
    assert sdk.jobs.get(job.id).status == "succeeded"
    assert job.id in {j.id for j in sdk.jobs.list(status="succeeded")}
    page = sdk.jobs.events(job.id, after=0)
    assert [e.id for e in page] == ids and page.last_id == ids[-1]
    assert len(sdk.jobs.events(job.id, after=page.last_id)) == 0

    model = sdk.models.get(job.fine_tuned_model)
    assert model.kind == "tuned" and model.strategy == "linear-probe" and model.metrics["macro_f1"] > 0.5
    assert job.fine_tuned_model in {m.id for m in sdk.models.list()}
    preds = sdk.models.predict(job.fine_tuned_model, ["My card still hasn't arrived, when will it come?",
                                                      "I think someone stole my card"])
    assert [p.label for p in preds] == ["card_arrival", "lost_or_stolen_card"]
    assert all(0 < p.score <= 1 and p.label in p.scores and len(p.scores) == 5 for p in preds)


def test_sdk_errors(sdk, server, uploaded):
    with pytest.raises(APIError) as exc:
        sdk.jobs.get("ftjob-nope")
    assert exc.value.status == 404 and exc.value.code == "not_found" and "ftjob-nope" in exc.value.message
    with pytest.raises(APIError) as exc:
        sdk.jobs.create(uploaded[0].id, strategy="linear-probe", limit=0)
    assert exc.value.status == 422 and exc.value.param == "limit"
    with pytest.raises(APIError) as exc:
        sdk.models.predict("ft:minilm:nope:000", ["x"])
    assert exc.value.status == 404
    with Client(server.url, "tl-not-a-key") as bad, pytest.raises(APIError) as exc:
        bad.datasets.list()
    assert exc.value.status == 401 and exc.value.code == "invalid_api_key"
    with Client("http://127.0.0.1:9", "k", timeout=2) as nowhere, pytest.raises(APIError) as exc:
        nowhere.jobs.list()
    assert exc.value.status == 0 and exc.value.code == "connection_error"


def test_sdk_keys_and_webhooks(sdk, server):
    key = sdk.api_keys.create("ci")
    assert key.key and key.prefix and key.name == "ci"
    assert key.id in {k.id for k in sdk.api_keys.list()}
    with Client(server.url, key.key) as other:
        assert other.tenant.me().name == "tenant-a"
        assert sdk.api_keys.revoke(key.id).revoked_at
        for _ in range(20):        # at once, every time: the revocation commits before the response
            with pytest.raises(APIError) as exc:
                other.tenant.me()
            assert exc.value.status == 401 and exc.value.code == "invalid_api_key"
    hook = sdk.webhooks.create("https://hooks.example.com/hook", events=["succeeded"])
    assert hook.secret and hook.events == ["succeeded"]
    assert hook.id in {h.id for h in sdk.webhooks.list()}
    assert sdk.webhooks.deliveries(hook.id) == []
    sdk.webhooks.delete(hook.id)
    assert hook.id not in {h.id for h in sdk.webhooks.list()}


def test_cli_upload_create_watch_list_predict(server, tenant_a, banking_subset, trained):
    key = tenant_a["api_key"]
    r = remote(server, key, "datasets", "upload", banking_subset[0], "--json")
    assert r.returncode == 0, r.stderr
    ds = json.loads(r.stdout)
    assert ds["rows"] == 400 and ds["label_column"] == "category"
    r = remote(server, key, "datasets", "list")
    assert r.returncode == 0 and ds["id"] in r.stdout

    r = remote(server, key, "jobs", "create", ds["id"], "--strategy", "linear-probe", "--limit", "100",
               "--set", "seed_note=1", "--watch")
    # an unknown hyperparameter is refused up front with a 422 and exit 1
    assert r.returncode == 1 and "seed_note" in r.stderr, (r.stdout, r.stderr)
    r = remote(server, key, "jobs", "create", ds["id"], "--strategy", "linear-probe", "--limit", "100", "--watch")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "-> running" in r.stdout and "succeeded: model ft:minilm:linear-probe:" in r.stdout
    job_id = r.stdout.strip().splitlines()[-1].split()[1]

    r = remote(server, key, "jobs", "list", "--json")
    assert r.returncode == 0, r.stderr
    jobs = {j["id"]: j for j in json.loads(r.stdout)}
    assert jobs[job_id]["status"] == "succeeded" and jobs[job_id]["spec"]["limit"] == 100
    assert trained[0].id in jobs

    r = remote(server, key, "jobs", "watch", job_id)          # already over: its history, exit 0
    assert r.returncode == 0 and "succeeded" in r.stdout
    r = remote(server, key, "jobs", "events", job_id, "--type", "status", "--json")
    assert [e["data"]["to"] for e in json.loads(r.stdout)][-1] == "succeeded"
    r = remote(server, key, "jobs", "cancel", job_id)         # a finished job cannot be cancelled
    assert r.returncode == 1 and "cannot become cancelled" in r.stderr

    r = remote(server, key, "models", "predict", trained[0].fine_tuned_model, "I think someone stole my card",
               "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["label"] == "lost_or_stolen_card"


def test_cli_missing_server_or_key(monkeypatch, capsys):
    from tunelab.server import main

    monkeypatch.delenv("TUNELAB_SERVER", raising=False)
    monkeypatch.delenv("TUNELAB_API_KEY", raising=False)
    assert main(["jobs", "list"]) == 2
    assert "--server" in capsys.readouterr().err
    assert main(["--server", "http://127.0.0.1:9", "datasets", "list", "--json"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_cli_bad_key_and_missing_job(server, tenant_a):
    r = remote(server, "tl-wrong", "jobs", "list", "--json")
    assert r.returncode == 2 and "not valid" in r.stderr and r.stdout == ""
    r = remote(server, tenant_a["api_key"], "jobs", "watch", "ftjob-nope")
    assert r.returncode == 1 and "ftjob-nope" in r.stderr


def test_watcher_renders_progress_and_transitions():
    from tunelab.cli.remote import JOB_EXIT, Watcher

    out, err = io.StringIO(), io.StringIO()
    w = Watcher(bar=True, out=out, err=err)
    events = [("status", {"to": "queued"}, "Job created and queued."),
              ("status", {"from": "queued", "to": "running"}, "training started."),
              ("progress", {"phase": "train", "step": 5, "total_steps": 10, "loss": 0.5, "eta_s": 75}, ""),
              ("progress", {"phase": "train", "step": 10, "total_steps": 10, "loss": 0.25, "eta_s": 0}, ""),
              ("status", {"from": "running", "to": "succeeded"}, "Job succeeded.")]
    for i, (type_, data, message) in enumerate(events, 1):
        w(JobEvent(id=i, job_id="j", type=type_, data=data, message=message))
    assert "queued -> running: training started." in out.getvalue()
    assert "running -> succeeded" in out.getvalue()
    assert "loss=0.2500" in err.getvalue() and "eta=1:15" in err.getvalue() and "10/10" in err.getvalue()
    assert w.bar is None
    assert JOB_EXIT == {"succeeded": 0, "failed": 1, "cancelled": 3}
