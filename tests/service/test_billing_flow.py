"""Money and work through real jobs. Credit runs out mid-run: the job checkpoints and pauses; a
top-up requeues it and it resumes from the checkpoint, finishing with the same metrics as an
uninterrupted run with the same seed, charged exactly its metered compute. A worker SIGKILLed
mid-job: after the resume the ledger reconciles and no step range is charged twice."""

from __future__ import annotations

import json
import signal
import time

import httpx
import psutil
import pytest

from .helpers import events, identity_chat, stories_model, upload, wait_job
from .server_proc import ServerProcess

OPERATOR = "tl-operator-flow"
# $36/core-hour: one core-second is exactly one cent, so a small run costs real money.
PRICE = 36_000_000
SPEC = {"strategy": "full", "seed": 0, "params": {"epochs": 3, "min_steps": 0, "checkpoint_every": 3}}
# Three full runs on 2 shared cores: minutes each when the machine is busy. A durability run:
# `make test-slow` (CI runs it after `make test`).
pytestmark = [pytest.mark.timeout(3600), pytest.mark.slow]


def _prices(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prices") / "prices.json"
    path.write_text(json.dumps({"sheets": [{
        "version": "test-1", "effective_from": "2020-01-01T00:00:00Z",
        "compute": {"cpu_core_hour": PRICE, "gpu_hour": {"default": 100 * PRICE}},
        "storage": {"gb_day": 0}, "serving": {"per_1k_requests": 0}, "grants": {"trial": 100_000_000}}]}))
    return str(path)


@pytest.fixture(scope="module")
def prices_file(tmp_path_factory) -> str:
    return _prices(tmp_path_factory)


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory, prices_file):
    from .conftest import database_url

    home = tmp_path_factory.mktemp(f"billing-flow-{backend}")
    srv = ServerProcess(home, database_url(backend, "billing_flow"), operator_api_key=OPERATOR, price_sheet=prices_file,
                        heartbeat_seconds=0.5).start()
    yield srv
    srv.stop()


def operator(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60)


def statuses(client, job_id) -> list[dict]:
    return [e for e in events(client, job_id, "status")]


def charges_of(client, job_id) -> tuple[dict, list[dict]]:
    detail = client.get(f"/api/v1/billing/jobs/{job_id}").json()
    return detail, [c for c in detail["charges"] if c["kind"] == "charge"]


def assert_charged_exactly_and_once(detail: dict, charges: list[dict]) -> None:
    """Charges add up to the billed compute at the price, and cover disjoint, advancing ranges."""
    billed_ms = round(detail["compute_seconds"] * 1000)
    assert sum(c["amount"] for c in charges) == detail["charged"] == billed_ms * PRICE // 3_600_000
    assert sum(c["quantity"] for c in charges) <= billed_ms
    frontier = None
    for c in charges:
        if frontier is not None:
            assert c["step_from"] >= frontier, f"steps ({c['step_from']}, {c['step_to']}] billed twice: {charges}"
        frontier = max(frontier if frontier is not None else c["step_to"], c["step_to"])


def test_credit_runs_out_pauses_and_a_top_up_resumes_from_the_checkpoint(server, banking_subset):
    payer, rich = server.create_tenant("payer", "p@p.test"), server.create_tenant("rich", "r@r.test")
    # The estimate is made too low on purpose (a calibration an operator set by hand), so the job
    # reserves little and runs out of credit mid-run rather than being refused at the door.
    r = server.run("admin", "billing", "calibration", "--set", "full|minilm|cpu=0.05", check=False)
    assert r.returncode == 0, r.stderr
    with server.client(payer["api_key"]) as pay, server.client(rich["api_key"]) as ref, operator(server) as op:
        ds_pay, ds_ref = upload(pay, banking_subset[0])["id"], upload(ref, banking_subset[0])["id"]
        # leave the payer 25 core-seconds of credit: setup and a part of the 27 steps
        r = op.post("/api/v1/admin/billing/adjustments", json={"tenant_id": payer["tenant_id"],
                                                               "amount_usd": "-99.75", "memo": "test"})
        assert r.json()["balance"]["available"] == 250_000, r.text
        job = pay.post("/api/v1/jobs", json={"dataset_id": ds_pay, **SPEC})
        assert job.status_code == 201, job.text
        job = job.json()
        assert 0 < float(job["billing"]["reserved_usd"]) < 0.25, job["billing"]

        paused = wait_job(pay, job["id"], timeout=900, until={"paused", "succeeded", "failed"})
        assert paused["status"] == "paused", (paused, server.tail())
        last = statuses(pay, job["id"])[-1]
        assert last["data"]["reason"] == "credit_exhausted" and "credit ran out" in last["message"]
        paused_at = last["data"].get("step")
        checkpoints = [e["data"]["step"] for e in events(pay, job["id"], "checkpoint")]
        assert checkpoints and paused_at == checkpoints[-1] > 0, (paused_at, checkpoints)
        bal = pay.get("/api/v1/billing/balance").json()
        assert bal["reserved"] == 0 and bal["available"] < 80_000      # spent down to the margin
        detail, charges = charges_of(pay, job["id"])
        assert detail["state"] == "paused"
        assert_charged_exactly_and_once(detail, charges)

        # the uninterrupted run, same seed, while the payer waits
        reference = ref.post("/api/v1/jobs", json={"dataset_id": ds_ref, **SPEC}).json()
        reference = wait_job(ref, reference["id"], timeout=900)
        assert reference["status"] == "succeeded", reference

        r = op.post("/api/v1/admin/billing/grants", json={"tenant_id": payer["tenant_id"], "amount_usd": "20",
                                                          "kind": "topup", "reference": "card-4242"})
        assert r.status_code == 201 and r.json()["resumed_jobs"] == [job["id"]], r.text
        done = wait_job(pay, job["id"], timeout=900)
        assert done["status"] == "succeeded", (done, server.tail())
        flow = [(e["data"].get("to"), e["data"].get("reason")) for e in statuses(pay, job["id"])]
        assert ("paused", "credit_exhausted") in flow and ("queued", "credit_topped_up") in flow, flow
        resumed = [e for e in events(pay, job["id"], "progress") if "resuming from checkpoint" in e["message"]]
        assert resumed and resumed[-1]["message"].endswith(f"step {paused_at}"), resumed

        mine, theirs = done["result"]["metrics"], reference["result"]["metrics"]
        for key in ("macro_f1", "accuracy", "weighted_f1", "confusion_matrix", "per_class"):
            assert mine.get(key) == theirs.get(key), (key, mine.get(key), theirs.get(key))

        detail, charges = charges_of(pay, job["id"])
        assert detail["state"] == "settled" and detail["reserved"] == 0
        assert_charged_exactly_and_once(detail, charges)
        assert detail["metered_seconds"] >= detail["compute_seconds"]     # re-done setup is not charged
        ref_detail, _ = charges_of(ref, reference["id"])
        print(f"\npaused at step {paused_at}; charged {detail['charged_usd']} for {detail['compute_seconds']} "
              f"core-s (metered {detail['metered_seconds']}); uninterrupted run {ref_detail['charged_usd']}")
        books = op.get("/api/v1/admin/billing/reconcile").json()
        assert books["ok"], books


def kill_after_a_billed_checkpoint(c, job_id: str, worker) -> tuple[list[dict], int, int]:
    """SIGKILL the worker (and so its job) once the job is past a checkpoint and billed beyond it:
    (the charges so far, the step they reach, the checkpoint the next worker resumes from)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        ckpts = [e["data"]["step"] for e in events(c, job_id, "checkpoint")]
        _, charges = charges_of(c, job_id)
        if ckpts and charges and max(ch["step_to"] for ch in charges) > ckpts[-1]:
            break
        time.sleep(0.2)
    children = psutil.Process(worker.pid).children(recursive=True)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    psutil.wait_procs(children, timeout=10)
    _, before = charges_of(c, job_id)
    return before, max(ch["step_to"] for ch in before), max(e["data"]["step"] for e in events(c, job_id, "checkpoint"))


def test_worker_killed_mid_job_reconciles_without_double_billing(backend, tmp_path_factory, banking_subset,
                                                                prices_file):
    from .conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp("billing-kill"), database_url(backend, "billing_kill"), worker=False,
                        operator_api_key=OPERATOR, price_sheet=prices_file, lease_seconds=3, heartbeat_seconds=0.5,
                        worker_poll_seconds=0.2).start()
    try:
        tenant = srv.create_tenant("killed")
        with srv.client(tenant["api_key"]) as c, operator(srv) as op:
            ds = upload(c, banking_subset[0])["id"]
            worker = srv.start_worker()
            job = c.post("/api/v1/jobs", json={"dataset_id": ds, "strategy": "full",
                                               "params": {"epochs": 2, "min_steps": 0, "checkpoint_every": 3}}).json()
            before, billed_to, resume_from = kill_after_a_billed_checkpoint(c, job["id"], worker)
            assert resume_from < billed_to, (resume_from, billed_to)

            srv.start_worker()
            done = wait_job(c, job["id"], timeout=900)
            assert done["status"] == "succeeded" and done["attempts"] == 2, (done, srv.tail())
            detail, charges = charges_of(c, job["id"])
            assert_charged_exactly_and_once(detail, charges)
            after = charges[len(before):]
            assert after and all(ch["step_from"] >= billed_to for ch in after), (billed_to, after)
            assert detail["metered_seconds"] > detail["compute_seconds"], detail   # the redo was not charged
            assert op.get("/api/v1/admin/billing/reconcile").json()["ok"]
            r = srv.run("admin", "billing", "reconcile", check=False)
            assert r.returncode == 0 and "the books balance" in r.stdout, r.stdout
    finally:
        srv.stop()


def test_worker_killed_mid_sft_resumes_from_the_checkpoint_and_is_billed_once(backend, tmp_path_factory,
                                                                              prices_file):
    """Chat tuning through the service is the classifiers' job: SIGKILL mid-SFT, the next worker
    resumes from the checkpoint (not from step 0), and no step range is charged twice."""
    from .conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp("billing-sft"), database_url(backend, "billing_sft"), worker=False,
                        operator_api_key=OPERATOR, price_sheet=prices_file, lease_seconds=3, heartbeat_seconds=0.5,
                        worker_poll_seconds=0.2).start()
    try:
        tenant = srv.create_tenant("sft")
        tmp = tmp_path_factory.mktemp("sft-data")
        with srv.client(tenant["api_key"]) as c, operator(srv) as op:
            model = stories_model(c, tmp)
            ds = upload(c, identity_chat(tmp))["id"]
            worker = srv.start_worker()
            job = c.post("/api/v1/jobs", json={"dataset_id": ds, "strategy": "sft-full", "model": model, "params": {
                "min_steps": 120, "checkpoint_every": 10, "eval_answers": 2}}).json()
            assert job["spec"]["strategy"] == "sft-full", job
            before, billed_to, resume_from = kill_after_a_billed_checkpoint(c, job["id"], worker)

            srv.start_worker()
            done = wait_job(c, job["id"], timeout=900)
            assert done["status"] == "succeeded" and done["attempts"] == 2, (done, srv.tail())
            evs = events(c, job["id"])
            resumed = [e for e in evs if e["type"] == "progress" and "resuming from checkpoint" in (e["message"] or "")]
            assert resumed and f"step {resume_from}" in resumed[0]["message"], [e["message"] for e in evs[-20:]]
            metrics = done["result"]["metrics"]
            assert metrics["task"] == "chat" and metrics["test_loss"] < metrics["base_test_loss"], metrics
            detail, charges = charges_of(c, job["id"])
            assert_charged_exactly_and_once(detail, charges)
            assert all(ch["step_from"] >= billed_to for ch in charges[len(before):])
            assert op.get("/api/v1/admin/billing/reconcile").json()["ok"]
    finally:
        srv.stop()
