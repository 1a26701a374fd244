"""Resuming a cancelled run from its checkpoint (`POST /api/v1/jobs/{id}/resume`, the SDK's
`jobs.resume`, `tunelab jobs resume`): the job keeps its id, goes on from the step it stopped at,
ends with the metrics of an uninterrupted run with the same seed, and no step is charged twice.
Refusals: 404 for another tenant's job, 409 with the reason (not cancelled or paused, no
checkpoint, already resumed), 402 without the credit to reserve for the rest."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tunelab.jobs.status import JobStatus
from tunelab.sdk import APIError, Client
from tunelab.services.job_resume import assess

from .conftest import database_url
from .helpers import events, upload, wait_job
from .server_proc import ServerProcess

OPERATOR = "tl-operator-resume"
# 120 rows of Banking77 (10 intents, stratified): 12 steps of MiniLM `lora` over 2 epochs at batch
# 16, a checkpoint every 2 (LoRA's are small); the cancel lands a few steps after the first one.
SPEC = {"strategy": "lora", "seed": 0, "limit": 120,
        "params": {"epochs": 2, "min_steps": 0, "batch_size": 16, "checkpoint_every": 2}}
# Two short LoRA runs (the resumed one and the uninterrupted reference): on PostgreSQL they
# are a `make test-slow` run; SQLite's run the ledger and transitions the same way.
pytestmark = pytest.mark.slow_on_postgresql


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"resume-{backend}")
    srv = ServerProcess(home, database_url(backend, "job_resume"), operator_api_key=OPERATOR,
                        heartbeat_seconds=0.5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def operator(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def dataset(client_a, banking_subset) -> str:
    return upload(client_a, banking_subset[0])["id"]


def run_and_cancel(client, dataset_id: str) -> dict:
    """A run of SPEC cancelled once it wrote a checkpoint: the job as it then reads (the browser
    test of the Resume button uses it too)."""
    job = client.post("/api/v1/jobs", json={"dataset_id": dataset_id, **SPEC})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    deadline = time.time() + 600
    while not events(client, job_id, "checkpoint"):
        now = client.get(f"/api/v1/jobs/{job_id}").json()
        assert time.time() < deadline and now["status"] not in ("succeeded", "failed"), now
        time.sleep(0.2)
    r = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    done = wait_job(client, job_id, timeout=300)
    assert done["status"] == "cancelled", done
    return done


@pytest.fixture(scope="module")
def cancelled(client_a, dataset) -> dict:
    return run_and_cancel(client_a, dataset)


def _charges(client, job_id) -> tuple[dict, list[dict]]:
    detail = client.get(f"/api/v1/billing/jobs/{job_id}").json()
    return detail, [c for c in detail["charges"] if c["kind"] == "charge"]


def _charged_once(detail: dict, charges: list[dict]) -> None:
    """The charges add up to what the job shows, over advancing, disjoint step ranges."""
    assert sum(c["amount"] for c in charges) == detail["charged"]
    frontier = None
    for c in charges:
        if frontier is not None:
            assert c["step_from"] >= frontier, f"steps ({c['step_from']}, {c['step_to']}] charged twice: {charges}"
        frontier = max(frontier if frontier is not None else c["step_to"], c["step_to"])


@pytest.mark.slow      # two LoRA runs, one cancelled and resumed: minutes on 2 cores (`make test-slow`)
def test_resume_after_cancel_reaches_the_same_metrics_charged_once(server, tenant_a, client_a, client_b, operator,
                                                                  dataset, cancelled):
    job_id = cancelled["id"]
    steps = [e["data"]["step"] for e in events(client_a, job_id, "checkpoint")]
    assert cancelled["resumable"] is True and cancelled["resume_from_step"] == steps[-1] > 0, (cancelled, steps)
    assert f"step {steps[-1]}" in cancelled["resume_note"]
    listed = {j["id"]: j for j in client_a.get("/api/v1/jobs").json()["data"]}
    assert listed[job_id]["resumable"] and listed[job_id]["resume_from_step"] == steps[-1]
    before, charges_before = _charges(client_a, job_id)
    assert before["state"] == "settled" and charges_before
    paid_to = max(c["step_to"] for c in charges_before)

    # another tenant's job is not found, whatever it is
    assert client_b.post(f"/api/v1/jobs/{job_id}/resume").status_code == 404
    assert client_a.post("/api/v1/jobs/ftjob-nope/resume").status_code == 404

    # no credit: 402 with what is missing, and nothing changed
    available = client_a.get("/api/v1/billing/balance").json()["available"]
    r = operator.post("/api/v1/admin/billing/adjustments", json={
        "tenant_id": tenant_a["tenant_id"], "amount_usd": f"-{available / 1e6:.6f}", "memo": "drain for the test"})
    assert r.status_code in (200, 201), r.text
    r = client_a.post(f"/api/v1/jobs/{job_id}/resume")
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credit", r.text
    assert client_a.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"
    r = operator.post("/api/v1/admin/billing/grants", json={"tenant_id": tenant_a["tenant_id"], "amount_usd": "50",
                                                             "kind": "topup", "reference": "resume-test"})
    assert r.status_code == 201, r.text

    # resumed with the remote CLI (through the SDK): the same id, queued again, no longer resumable
    r = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "jobs", "resume", job_id, "--json",
                   check=False)
    assert r.returncode == 0, (r.stdout, r.stderr)
    job = json.loads(r.stdout)
    assert job["id"] == job_id and job["status"] == "queued" and job["resumable"] is False, job
    with Client(server.url, tenant_a["api_key"], timeout=60) as sdk, pytest.raises(APIError) as exc:
        sdk.jobs.resume(job_id)                       # twice: it is queued (or running) now
    assert exc.value.status == 409 and exc.value.code == "not_resumable", exc.value

    # the uninterrupted run, same seed, on the same data
    reference = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, **SPEC}).json()
    done = wait_job(client_a, job_id, timeout=900)
    assert done["status"] == "succeeded", (done, server.tail())
    reference = wait_job(client_a, reference["id"], timeout=900)
    assert reference["status"] == "succeeded", reference

    flow = [(e["data"].get("from"), e["data"].get("to"), e["data"].get("reason")) for e in events(client_a, job_id, "status")]
    assert ("cancelled", "queued", "resumed") in flow and flow[-1][1] == "succeeded", flow
    resumed_event = next(e for e in events(client_a, job_id, "status") if e["data"].get("reason") == "resumed")
    assert resumed_event["message"] == f"Resumed by a@a.test from its checkpoint at step {steps[-1]}."
    progress = [e["message"] for e in events(client_a, job_id, "progress") if "resuming from checkpoint" in e["message"]]
    assert progress and progress[-1].endswith(f"step {steps[-1]}"), progress

    mine, theirs = done["result"]["metrics"], reference["result"]["metrics"]
    for key in ("macro_f1", "accuracy", "weighted_f1", "confusion_matrix", "per_class"):
        assert mine.get(key) == theirs.get(key), (key, mine.get(key), theirs.get(key))
    assert done["fine_tuned_model"] and done["resumable"] is False and "succeeded" in done["resume_note"]

    detail, charges = _charges(client_a, job_id)
    assert detail["state"] == "settled" and detail["reserved"] == 0
    _charged_once(detail, charges)
    after = [c for c in charges if c["id"] not in {x["id"] for x in charges_before}]
    assert after and all(c["step_from"] >= paid_to for c in after), (paid_to, after)    # nothing paid twice
    assert detail["metered_seconds"] >= detail["compute_seconds"]     # re-done setup measured, not charged

    audit = client_a.get("/api/v1/audit", params={"limit": 500}).json()["data"]
    assert any(a["action"] == "job.resume" and a["target"] == job_id for a in audit), audit[:5]
    books = operator.get("/api/v1/admin/billing/reconcile").json()
    assert books["ok"], books


def test_what_cannot_be_resumed_says_why(server, tenant_a, client_a, dataset):
    # a strategy that trains without steps writes no checkpoint
    job = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, "strategy": "linear-probe"}).json()
    r = client_a.post(f"/api/v1/jobs/{job['id']}/resume")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_resumable", r.text
    client_a.post(f"/api/v1/jobs/{job['id']}/cancel")
    job = wait_job(client_a, job["id"], timeout=300)
    assert job["resumable"] is False and job["resume_from_step"] is None
    r = client_a.post(f"/api/v1/jobs/{job['id']}/resume")
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    assert message == job["resume_note"]
    assert ("wrote no checkpoint" in message if job["status"] == "cancelled" else "succeeded" in message), message
    # the remote CLI: exit 1 with the server's sentence
    r = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "jobs", "resume", job["id"], check=False)
    assert r.returncode == 1 and message[:60] in r.stderr, (r.stdout, r.stderr)


def test_resumability_rules():
    assert assess("train", "cancelled", 6).resumable and assess("train", "paused", 6).step == 6
    for kind, status, step in [("train", "cancelled", None), ("train", "running", 6), ("train", "succeeded", 6),
                               ("train", "failed", 6), ("compare", "cancelled", 6), ("bench-hardware", "paused", 6)]:
        found = assess(kind, status, step)
        assert not found.resumable and found.reason.endswith("."), (kind, status, found)
    assert JobStatus.CANCELLED.can_become(JobStatus.QUEUED) and JobStatus.PAUSED.can_become(JobStatus.QUEUED)
    assert not JobStatus.SUCCEEDED.can_become(JobStatus.QUEUED) and not JobStatus.FAILED.can_become(JobStatus.QUEUED)
