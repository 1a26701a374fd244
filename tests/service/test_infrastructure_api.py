"""GET /api/v1/infrastructure and its export against a real server: nothing stored (the overview
says what to run), then two stored benchmark runs of one machine, the second 20% slower at fp32
matmul (a regression its comparison flags): the overview, the history, the costs, a typical job per
catalog model, the export as CSV and JSON, 422 on a bad format, 404 on an unknown machine, 401
without a key. The benchmark's results are written as the JSON files hardware/store.py documents."""

from __future__ import annotations

import csv
import io
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .server_proc import ServerProcess

WORKER = "bench-box"
FIRST, SECOND = "20261203T210000000000Z", "20261210T210000000000Z"


def result(run_id: str, created: str, fp32: float, full_tokens: float, comparison: dict | None = None) -> dict:
    """One stored run in hardware/store.py's format: four figures (one noisy), two model rows."""
    def figure(name, label, unit, median, spread=0.03, noisy=False):
        return {"name": name, "label": label, "unit": unit, "median": median, "spread": spread, "runs": 7,
                "noisy": noisy, "higher_is_better": True}

    return {"version": 1, "id": run_id, "created": created, "worker": WORKER, "quick": True, "seconds": 95.1,
            "device": {"kind": "cpu", "name": "AMD EPYC 7B13", "cores": 2, "flags": ["avx2", "fma"], "torch": "2.13.0",
                       "bf16_native": False, "gpus": []},
            "figures": [figure("matmul_fp32", "dense matmul, fp32", "GFLOP/s", fp32),
                        figure("matmul_bf16", "dense matmul, bf16", "GFLOP/s", 40.0),
                        figure("memory_bandwidth", "memory bandwidth", "GB/s", 12.5, spread=0.22, noisy=True),
                        figure("disk_read", "disk read", "MB/s", 850.0)],
            "models": [{"model": "minilm", "strategy": "full", "precision": "fp32", "batch": 32, "seq_len": 24,
                        "steps": 6, "samples_per_s": 55.0, "tokens_per_s": full_tokens, "step_p50_s": 0.58,
                        "step_p95_s": 0.71, "peak_mb": 912.0, "flops_per_token": 1.4e8, "mfu": 0.31,
                        "mfu_of": "matmul_fp32", "usd_per_million_tokens": None},
                       {"model": "minilm", "strategy": "linear-probe", "precision": "fp32", "batch": 128,
                        "seq_len": 24, "steps": 6, "samples_per_s": 400.0, "tokens_per_s": 9600.0,
                        "step_p50_s": 0.32, "step_p95_s": 0.35, "peak_mb": 610.0, "flops_per_token": 4.6e7,
                        "mfu": None, "mfu_of": None, "usd_per_million_tokens": None}],
            "comparison": comparison}


def write_runs(home: Path) -> None:
    """Two runs a week apart under TUNELAB_HOME/hardware/<worker>/<id>.json; the second's fp32
    matmul is 20% below the first's, which its comparison flags (threshold 15%)."""
    folder = Path(home) / "hardware" / WORKER
    folder.mkdir(parents=True, exist_ok=True)
    first = result(FIRST, "2026-12-03T21:00:00+00:00", 100.0, 1320.0)
    second = result(SECOND, "2026-12-10T21:00:00+00:00", 80.0, 1300.0, {
        "against": FIRST, "against_created": first["created"], "threshold": 0.15,
        "changes": [{"name": "matmul_fp32", "value": 80.0, "previous": 100.0, "ratio": 0.8, "regressed": True},
                    {"name": "minilm/full tokens/s", "value": 1300.0, "previous": 1320.0, "ratio": 0.9848,
                     "regressed": False}],
        "regressions": ["matmul_fp32"]})
    for r in (first, second):
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    (folder / "broken.json").write_text("{not json")        # one bad file must not hide the rest


@contextmanager
def nothing_stored(home: Path):
    """The server's home without any benchmark result, for as long as the block runs."""
    folder, aside = Path(home) / "hardware", Path(home) / "hardware.aside"
    if folder.exists():
        shutil.move(folder, aside)
    try:
        yield
    finally:
        if aside.exists():
            shutil.move(aside, folder)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own server: no worker (nothing trains), the hardware results in its home."""
    srv = ServerProcess(tmp_path_factory.mktemp("infra"), worker=False).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stored(server) -> Path:
    write_runs(server.home)
    return server.home


def per_second() -> float:
    from tunelab.billing.prices import current

    return current().compute_per_hour("cpu") * 2 / 3600 / 1e6        # the measured machine: 2 cores


def test_nothing_stored_says_what_to_run(client_a, server):
    with nothing_stored(server.home):
        r = client_a.get("/api/v1/infrastructure")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["has_results"] is False and body["latest"] is None and body["runs"] == 0
        assert "tunelab bench hardware --quick" in body["message"]
        assert body["inventory"]["live"]["cpu_cores"] >= 1 and body["inventory"]["live"]["torch"]
        # The estimate of a typical job needs no benchmark: it is priced for this machine.
        assert {"linear-probe", "lora", "full"} <= {j["strategy"] for j in body["typical_jobs"] if j["model"] == "minilm"}
        csv_text = client_a.get("/api/v1/infrastructure/export", params={"format": "csv"}).text
        assert csv_text.splitlines()[0].startswith("section,worker,run,created,name")
        assert len(csv_text.splitlines()) == 1


def test_overview_figures_regression_history_and_costs(client_a, stored):
    r = client_a.get("/api/v1/infrastructure")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["has_results"] is True and body["worker"] == WORKER and body["workers"] == [WORKER]
    assert body["runs"] == 2 and "message" not in body
    latest = body["latest"]
    assert latest["id"] == SECOND and body["inventory"]["measured"]["name"] == "AMD EPYC 7B13"
    figures = {f["name"]: f for f in latest["figures"]}
    assert figures["matmul_fp32"]["median"] == 80.0 and figures["memory_bandwidth"]["noisy"] is True

    comparison = latest["comparison"]
    assert comparison["regressions"] == ["matmul_fp32"]
    assert comparison["messages"] == ["dense matmul, fp32: 20% slower than the run on 2026-12-03"]

    history = {h["name"]: [p["median"] for p in h["points"]] for h in body["history"]}
    assert history["matmul_fp32"] == [100.0, 80.0] and history["disk_read"] == [850.0, 850.0]

    rows = {m["strategy"]: m for m in latest["models"]}
    assert rows["full"]["kind"] == "training" and rows["full"]["mfu"] == 0.31
    assert rows["full"]["usd_per_million_tokens"] == pytest.approx(per_second() * 1e6 / 1300.0)
    assert rows["linear-probe"]["kind"] == "prediction"
    assert rows["linear-probe"]["usd_per_1k_predictions"] == pytest.approx(per_second() * 1000 / 400.0)

    costs = body["costs"]
    assert costs["basis"]["device"] == "cpu" and costs["basis"]["units"] == 2
    assert costs["basis"]["usd_per_second"] == pytest.approx(per_second())
    assert [c["strategy"] for c in costs["training"]] == ["full"]
    assert [c["strategy"] for c in costs["predictions"]] == ["linear-probe"]

    typical = {(j["model"], j["strategy"]): j for j in body["typical_jobs"]}
    probe, lora = typical[("minilm", "linear-probe")], typical[("minilm", "lora")]
    assert probe["rows"] == 5000 and probe["device"] == "cpu" and probe["wall_seconds"] > 0
    assert lora["cost"] > probe["cost"] > 0                       # fine-tuning costs more than a probe
    low, high = lora["wall_seconds_range"]
    assert low <= lora["wall_seconds"] <= high


def test_sdk_reads_the_same_overview(server, tenant_a, stored):
    from tunelab.sdk import Client, Infrastructure

    with Client(server.url, tenant_a["api_key"]) as tl:
        infra = tl.infrastructure()
    assert isinstance(infra, Infrastructure)
    assert infra.latest.comparison.regressions == ["matmul_fp32"]
    assert infra.latest.models[0].mfu == 0.31


def test_export_csv_and_json(client_a, stored):
    r = client_a.get("/api/v1/infrastructure/export", params={"format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="tunelab-infrastructure-{WORKER}.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    figures = {row["name"]: row for row in rows if row["section"] == "figure"}
    models = {row["name"]: row for row in rows if row["section"] == "model"}
    assert len(figures) == 4 and float(figures["matmul_fp32"]["value"]) == 80.0
    assert figures["memory_bandwidth"]["noisy"] == "True"
    assert float(models["minilm/full"]["mfu"]) == 0.31 and models["minilm/full"]["run"] == SECOND
    assert float(models["minilm/linear-probe"]["usd_per_1k_predictions"]) == pytest.approx(per_second() * 2.5)

    r = client_a.get("/api/v1/infrastructure/export", params={"format": "json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"].endswith('.json"')
    body = r.json()
    assert body["object"] == "infrastructure.export" and body["run"] == SECOND and body["worker"] == WORKER
    assert [f["name"] for f in body["figures"]] == ["matmul_fp32", "matmul_bf16", "memory_bandwidth", "disk_read"]
    assert {m["strategy"] for m in body["models"]} == {"full", "linear-probe"}
    assert client_a.get("/api/v1/infrastructure/export").headers["content-type"].startswith("text/csv")   # the default


def test_bad_format_is_422_and_unknown_machine_404(client_a, stored):
    r = client_a.get("/api/v1/infrastructure/export", params={"format": "xlsx"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error" and r.json()["error"]["param"] == "format"
    for worker in ("nobody", "../..", WORKER + "/../" + WORKER):
        for path in ("/api/v1/infrastructure", "/api/v1/infrastructure/export"):
            r = client_a.get(path, params={"worker": worker})
            assert r.status_code == 404, (path, worker, r.text)
            assert r.json()["error"]["code"] == "not_found"
    assert client_a.get("/api/v1/infrastructure", params={"worker": WORKER}).json()["worker"] == WORKER
    doc = client_a.get("/openapi.json").json()["paths"]["/api/v1/infrastructure/export"]["get"]
    assert {"401", "404", "422"} <= set(doc["responses"])
    assert {"text/csv", "application/json"} == set(doc["responses"]["200"]["content"])


def test_without_a_valid_key_is_401(server, stored):
    for path in ("/api/v1/infrastructure", "/api/v1/infrastructure/export?format=json"):
        for headers in ({}, {"Authorization": "Bearer tl-0000000000.nope"}):
            r = httpx.get(server.url + path, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["type"] == "authentication_error"
            assert "matmul" not in r.text
