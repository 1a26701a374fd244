"""The hardware benchmark as a job (kind bench-hardware) against a real server and its sandboxed
worker: what the spec takes and refuses (the OpenAPI document and the server agree); a device-only
benchmark runs queued -> validating -> running -> succeeded on the worker, is estimated, reserved,
charged and settled, its result is stored as the worker's run and shown by GET
/api/v1/infrastructure; a second one (the SDK and POST /api/v1/infrastructure/benchmarks) is
compared with the first; another tenant cannot see it; one queued from the remote CLI and cancelled
stops in a model burst and stores nothing; a viewer gets 403 and a tenant without credit 402."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tunelab.sdk import APIError, Client

from .helpers import events, wait_job
from .server_proc import ServerProcess

SQLITE_ONLY = True          # the job path and billing are the subject, not the database's behaviour
OPERATOR = "tl-operator-bench-key"
DEVICE_ONLY = {"kind": "bench-hardware", "sweep": False}
RUN: dict[str, dict] = {}


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"bench-{backend}")
    srv = ServerProcess(home, operator_api_key=OPERATOR, heartbeat_seconds=0.5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sdk(server, tenant_a):
    with Client(server.url, tenant_a["api_key"]) as c:
        yield c


def _job_spec_validator(client):
    """The served document's schema of POST /api/v1/jobs, as schemathesis checks bodies against it."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    doc = client.get("/openapi.json").json()
    ref = doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**ref, "components": doc["components"]})


@pytest.mark.parametrize("body, param", [
    ({"kind": "bench-hardware", "dataset_id": "file-abc"}, "dataset_id"),
    ({"kind": "bench-hardware", "budget_seconds": 60}, "budget_seconds"),
    ({"kind": "bench-hardware", "exhaustive": True}, "exhaustive"),
    ({"kind": "bench-hardware", "strategy": "lora"}, "strategy"),
    ({"kind": "bench-hardware", "params": {"epochs": 1}}, "params"),
    ({"kind": "bench-hardware", "quick": "yes"}, "quick"),
    ({"strategy": "lora"}, "dataset_id"),                         # a train job still needs its dataset
    ({"kind": "train", "dataset_id": None}, "dataset_id"),
    ({"kind": "compare", "strategies": ["lora", "zero-shot"]}, "dataset_id"),
    ({"dataset_id": "file-abc", "sweep": False}, "sweep"),       # a benchmark's fields on a train job
])
def test_what_the_document_refuses_the_server_refuses(client_a, body, param):
    assert not _job_spec_validator(client_a).is_valid(body)
    r = client_a.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["param"] == param, err
    assert client_a.post("/api/v1/jobs/estimate", json=body).status_code == 422


def test_the_document_takes_a_benchmark_without_a_dataset(client_a):
    valid = _job_spec_validator(client_a)
    for body in (DEVICE_ONLY, {"kind": "bench-hardware"}, {"kind": "bench-hardware", "quick": False},
                 {"kind": "bench-hardware", "dataset_id": None, "strategies": [], "exhaustive": False}):
        assert valid.is_valid(body), body
    est = client_a.post("/api/v1/jobs/estimate", json=DEVICE_ONLY).json()   # device figures: ~15 s of the machine
    quick = client_a.post("/api/v1/jobs/estimate", json={"kind": "bench-hardware"}).json()
    full = client_a.post("/api/v1/jobs/estimate", json={"kind": "bench-hardware", "quick": False}).json()
    assert est["wall_seconds"] == 15 and quick["wall_seconds"] == 90 and full["wall_seconds"] == 900, (est, quick)
    assert 0 < est["cost"] < quick["cost"] < full["cost"] and est["would_start"]
    assert est["basis"][0]["strategy"] == "bench-hardware"
    for bad in ({"quick": "yes"}, {"sweep": 1}, {"dataset_id": "file-1"}):
        r = client_a.post("/api/v1/infrastructure/benchmarks", json=bad)
        assert r.status_code == 422, r.text


def test_a_device_only_benchmark_runs_on_the_worker_is_billed_and_stored(server, client_a):
    assert client_a.get("/api/v1/infrastructure").json()["has_results"] is False
    r = client_a.post("/api/v1/jobs", json=DEVICE_ONLY)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "bench-hardware" and job["status"] == "queued"
    assert job["spec"]["sweep"] is False and job["spec"]["dataset_id"] is None
    assert job["billing"]["estimate_wall_seconds"] == 15 and float(job["billing"]["reserved_usd"]) > 0, job["billing"]

    done = wait_job(client_a, job["id"], timeout=120)
    assert done["status"] == "succeeded", (done, server.tail())
    moves = [e["data"].get("to") for e in events(client_a, job["id"], "status")]
    assert moves == ["queued", "validating", "running", "succeeded"], moves
    ticks = events(client_a, job["id"], "progress")
    assert ticks and {t["data"]["phase"] for t in ticks} == {"bench"}
    assert {"matmul fp32", "disk read"} <= {t["message"] for t in ticks}

    bench = done["result"]["benchmark"]
    names = {f["name"] for f in bench["figures"]}
    assert {"matmul_fp32", "memory_bandwidth", "disk_read", "estimator_probe"} <= names, names
    assert bench["models"] == [] and bench["sweep"] is False and bench["comparison"] is None
    assert done["fine_tuned_model"] is None

    cost = client_a.get(f"/api/v1/billing/jobs/{job['id']}").json()
    assert cost["state"] == "settled" and cost["reserved"] == 0, cost
    kinds = [c["kind"] for c in cost["charges"]]
    assert kinds[0] == "reserve" and "charge" in kinds and kinds[-1] == "release", kinds
    assert cost["charged"] > 0

    infra = client_a.get("/api/v1/infrastructure").json()
    assert infra["has_results"] and infra["runs"] == 1
    assert infra["latest"]["id"] == bench["id"] and infra["latest"]["sweep"] is False
    assert infra["worker"] == bench["worker"]
    RUN["first"] = done


def test_a_second_benchmark_is_compared_with_the_first(client_a, sdk):
    first = RUN["first"]["result"]["benchmark"]
    job = sdk.run_hardware_benchmark(sweep=False, idempotency_key="bench-2")
    assert job.kind == "bench-hardware" and job.spec["quick"] is True
    assert sdk.run_hardware_benchmark(sweep=False, idempotency_key="bench-2").id == job.id    # replayed
    done = sdk.jobs.watch(job.id, poll_interval=0.5, timeout=120)
    assert done.status == "succeeded", done
    comparison = done.result["benchmark"]["comparison"]
    assert comparison["against"] == first["id"]
    assert {c["name"] for c in comparison["changes"]} >= {"matmul_fp32", "disk_read"}
    infra = sdk.infrastructure()
    assert infra.runs == 2 and infra.latest.id == done.result["benchmark"]["id"]
    assert infra.latest.comparison.against == first["id"]
    assert job.id in {j.id for j in sdk.jobs.list()}


def test_another_tenant_cannot_read_it(client_b):
    job_id = RUN["first"]["id"]
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/events", f"/api/v1/billing/jobs/{job_id}"):
        assert client_b.get(path).status_code == 404, path
    assert client_b.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 404
    assert job_id not in {j["id"] for j in client_b.get("/api/v1/jobs").json()["data"]}


@pytest.mark.slow     # waits for a model burst to start; device-only benchmark jobs run in make test
def test_a_cancelled_benchmark_stops_in_its_model_run_and_stores_nothing(server, client_a, sdk, tenant_a):
    stored = client_a.get("/api/v1/infrastructure").json()["runs"]   # 0 under `make test-slow` alone
    # queued from the remote CLI: quick, with the model sweep
    out = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "jobs", "bench-hardware", "--json")
    job = sdk.jobs.get(json.loads(out.stdout)["id"])
    assert job.kind == "bench-hardware" and job.spec["sweep"] is True and job.spec["quick"] is True
    deadline = time.time() + 90
    while time.time() < deadline:          # the device figures done, a model's training burst under way
        if any(t["data"].get("step", 0) >= 5 for t in events(client_a, job.id, "progress")):
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"the benchmark never reached its model runs: {sdk.jobs.get(job.id)}")
    t0 = time.monotonic()
    assert sdk.jobs.cancel(job.id).cancel_requested
    done = wait_job(client_a, job.id, timeout=30)
    assert done["status"] == "cancelled" and time.monotonic() - t0 < 15, (done, server.tail())
    assert client_a.get(f"/api/v1/billing/jobs/{job.id}").json()["state"] == "settled"
    assert client_a.get("/api/v1/infrastructure").json()["runs"] == stored     # nothing stored


def test_a_viewer_cannot_and_a_tenant_without_credit_gets_402(server, client_a, client_b, tenant_b):
    viewer = client_a.post("/api/v1/users", json={"email": "viewer@bench.test", "role": "viewer"}).json()
    key = client_a.post(f"/api/v1/users/{viewer['id']}/api-keys", json={"name": "viewer"}).json()["key"]
    with server.client(key) as v:
        assert v.post("/api/v1/infrastructure/benchmarks", json={}).status_code == 403
        assert v.post("/api/v1/jobs", json=DEVICE_ONLY).status_code == 403
        assert v.get("/api/v1/infrastructure").json()["has_results"]        # reading is for everyone
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}) as op:
        r = op.post("/api/v1/admin/billing/adjustments", json={"tenant_id": tenant_b["tenant_id"],
                                                               "amount_usd": "-100", "memo": "test: no credit"})
        assert r.status_code == 201, r.text
    for r in (client_b.post("/api/v1/infrastructure/benchmarks"), client_b.post("/api/v1/jobs", json=DEVICE_ONLY)):
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "insufficient_credit"
    assert client_b.get("/api/v1/jobs").json()["data"] == []
    with Client(server.url, tenant_b["api_key"]) as b:
        for submit in (b.run_hardware_benchmark, lambda: b.jobs.create(kind="bench-hardware", sweep=False)):
            with pytest.raises(APIError) as exc:
                submit()
            assert (exc.value.status, exc.value.code) == (402, "insufficient_credit")


def test_the_worker_stores_only_what_a_benchmark_result_should_hold(tmp_path):
    """What the job process reports is checked before it reaches the shared store: its own id (which
    would name the file), worker and time are ignored; a malformed figure is refused."""
    from tunelab.jobs import bench
    from tunelab.jobs.spec import JobSpec

    spec = JobSpec(kind="bench-hardware", sweep=False)
    figure = {"name": "matmul_fp32", "label": "dense matmul, fp32", "unit": "GFLOP/s", "median": 80.0,
              "spread": 0.02, "runs": 5, "noisy": False, "higher_is_better": True}
    raw = {"id": "../../escape", "worker": "../elsewhere", "created": "1999", "path": "/etc/passwd", "quick": False,
           "seconds": 6.5, "device": {"kind": "cpu", "cores": 2}, "figures": [figure], "models": []}
    stored = bench.save(raw, spec, tmp_path)
    files = list((tmp_path / "hardware").rglob("*.json"))
    assert len(files) == 1 and files[0].parent.parent == tmp_path / "hardware"
    assert stored["id"] != raw["id"] and stored["worker"] != raw["worker"] and stored["created"] != "1999"
    assert "path" not in stored and stored["quick"] is True and stored["sweep"] is False   # the spec's, not the job's
    assert stored["figures"] == [figure] and stored["comparison"] is None
    assert "matmul" in bench.summary(stored)
    for bad in (None, {**raw, "figures": []}, {**raw, "figures": [{**figure, "median": "fast"}]},
                {**raw, "models": [{"model": "minilm"}]}, {**raw, "device": "cpu"},
                {**raw, "figures": [figure] * 20_000}):
        with pytest.raises(bench.InvalidBenchmark):
            bench.checked(bad, spec)


def test_the_job_process_measures_in_its_work_folder_and_says_what_failed(tmp_path, monkeypatch, capsys):
    """jobs.child for a benchmark: engine.sweep.measure with the spec's choices, nothing saved there
    (the worker stores it), the disk probe in the job's own folder; a failure is reported with what
    to do, and not retried (the same probe would fail again)."""
    import tunelab.engine.sweep as sweep
    from tunelab.jobs import child
    from tunelab.jobs.spec import ChildSpec, JobSpec

    spec = ChildSpec(job=JobSpec(kind="bench-hardware", quick=False, sweep=False), work_dir=str(tmp_path / "work"),
                     out_dir=str(tmp_path / "artifact"))
    calls = []
    monkeypatch.setattr(sweep, "measure", lambda **kw: calls.append(kw) or {"figures": [], "models": []})
    assert child.run_bench(spec, lambda event: None) == child.EXIT_OK
    assert calls[0]["quick"] is False and calls[0]["rows"] == [] and calls[0]["save"] is False
    assert calls[0]["home"] == tmp_path / "work"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["type"] == "phase" and lines[0]["phase"] == "running" and lines[-1]["type"] == "result"

    def broken(**kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sweep, "measure", broken)
    assert child.run_bench(spec, lambda event: None) == child.EXIT_CONFIG
    error = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert error["code"] == "benchmark_failed" and "No space left" in error["message"] and "run the job again" in error["message"]
