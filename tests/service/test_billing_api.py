"""Credits through the API: the $100 trial, an estimate (with a range) before a job starts and in
the job object, the reservation, metering and settlement of a real job (its charges add up to its
metered compute exactly), daily usage and the CSV export, 402 with the missing amount, quotas
naming themselves (429), the operator API, and `tunelab usage` / the SDK."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest

from tunelab.sdk import Client

from .helpers import upload, wait_job
from .server_proc import ServerProcess

OPERATOR = "tl-operator-test-key"


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from .conftest import database_url

    home = tmp_path_factory.mktemp(f"billing-{backend}")
    srv = ServerProcess(home, database_url(backend, "billing_api"), operator_api_key=OPERATOR,
                        heartbeat_seconds=0.5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def op(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def dataset(client_a, banking_subset) -> str:
    return upload(client_a, banking_subset[0])["id"]


def micro(usd: str) -> int:
    whole, _, frac = usd.lstrip("-").partition(".")
    value = int(whole) * 1_000_000 + int(frac.ljust(6, "0"))
    return -value if usd.startswith("-") else value


def test_a_new_tenant_has_the_100_dollar_trial(client_a):
    bal = client_a.get("/api/v1/billing/balance").json()
    assert (bal["available_usd"], bal["reserved_usd"], bal["spent_usd"]) == ("100.000000", "0.000000", "0.000000")
    assert bal["available"] == bal["granted"] == 100_000_000 and not bal["in_debt"]
    entries = client_a.get("/api/v1/billing/entries").json()["data"]
    assert [(e["kind"], e["debit"], e["credit"], e["amount"]) for e in entries] == \
        [("grant", "funding", "available", 100_000_000)]


def test_estimate_before_start_then_reserved_metered_settled(server, client_a, op, dataset):
    body = {"dataset_id": dataset, "strategy": "linear-probe"}
    est = client_a.post("/api/v1/jobs/estimate", json=body).json()
    assert est["would_start"] and est["missing"] == 0, est
    assert est["cost_low"] <= est["cost"] <= est["cost_high"] == est["reserve"] > 0
    lo, hi = est["wall_seconds_range"]
    assert 0 < lo <= est["wall_seconds"] <= hi
    assert est["basis"][0]["strategy"] == "linear-probe" and est["price_version"]

    job = client_a.post("/api/v1/jobs", json=body).json()
    assert job["billing"]["estimate_usd"] == est["cost_usd"]          # shown in the job object too
    assert job["billing"]["reserved_usd"] == est["reserve_usd"]
    bal = client_a.get("/api/v1/billing/balance").json()
    assert bal["reserved"] == est["reserve"] and bal["available"] == 100_000_000 - est["reserve"]

    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", (done, server.tail())
    detail = client_a.get(f"/api/v1/billing/jobs/{job['id']}").json()
    assert detail["state"] == "settled" and detail["reserved"] == 0
    kinds = [c["kind"] for c in detail["charges"]]
    assert kinds[0] == "reserve" and kinds[-1] == "release" and "charge" in kinds
    charges = [c for c in detail["charges"] if c["kind"] == "charge"]
    assert sum(c["amount"] for c in charges) == detail["charged"] > 0
    # exactly the metered compute at the sheet's price (sub-micro-dollar remainders carried)
    price = client_a.get("/api/v1/billing/prices").json()["compute"]["cpu_core_hour"]
    billed_ms = round(detail["compute_seconds"] * 1000)
    assert detail["charged"] == billed_ms * price // 3_600_000
    assert detail["metered_seconds"] == detail["compute_seconds"]       # one attempt: nothing re-done
    assert all(c["price_version"] == est["price_version"] and c["unit"] == "cpu_ms" for c in charges)
    actual = detail["actual"]
    assert actual["outcome"] == "succeeded" and actual["cost"] == detail["charged"]
    assert actual["estimate"] == est["cost"] and actual["error"] is not None
    assert done["billing"]["actual"]["cost_usd"] == actual["cost_usd"]

    bal = client_a.get("/api/v1/billing/balance").json()
    assert bal["reserved"] == 0 and bal["spent"] == detail["charged"]
    assert bal["available"] + bal["reserved"] + bal["spent"] == bal["granted"]
    today = client_a.get("/api/v1/billing/usage", params={"days": 1}).json()["data"]
    assert micro(today[-1]["total_usd"]) == bal["spent"] and today[-1]["jobs"] == 1
    rows = list(csv.DictReader(io.StringIO(client_a.get("/api/v1/billing/export.csv").text)))
    assert sum(int(r["amount"]) for r in rows if r["kind"] == "charge") == bal["spent"]
    assert {r["kind"] for r in rows} >= {"grant", "reserve", "charge", "release"}
    books = op.get("/api/v1/admin/billing/reconcile").json()
    assert books["ok"], books


def test_short_balance_is_402_with_the_missing_amount(client_b, op, tenant_b, banking_subset):
    ds = upload(client_b, banking_subset[0])["id"]
    body = {"dataset_id": ds, "strategy": "lora"}
    reserve = client_b.post("/api/v1/jobs/estimate", json=body).json()["reserve"]
    keep = reserve // 3
    r = op.post("/api/v1/admin/billing/adjustments", json={"tenant_id": tenant_b["tenant_id"],
                                                           "amount_usd": f"-{(100_000_000 - keep) / 1e6:.6f}",
                                                           "memo": "test: leave a third of a job"})
    assert r.status_code == 201, r.text
    est = client_b.post("/api/v1/jobs/estimate", json=body).json()
    assert not est["would_start"] and est["missing"] == reserve - keep
    r = client_b.post("/api/v1/jobs", json=body)
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_credit" and err["type"] == "billing_error"
    assert err["missing"] == reserve - keep and err["missing_usd"] in err["message"]
    assert client_b.get("/api/v1/jobs").json()["data"] == []        # nothing queued
    # a top-up makes it fit
    r = op.post("/api/v1/admin/billing/grants", json={"tenant_id": tenant_b["tenant_id"], "amount_usd": "5",
                                                      "kind": "topup", "reference": "order-1"})
    assert r.status_code == 201 and r.json()["balance"]["available"] == keep + 5_000_000
    assert client_b.post("/api/v1/jobs/estimate", json=body).json()["would_start"]


def test_quotas_name_themselves(client_b, op, tenant_b, banking_subset):
    tid = tenant_b["tenant_id"]
    r = op.put("/api/v1/admin/billing/quotas", json={"tenant_id": tid, "concurrent_jobs": 0, "dataset_bytes": 1000})
    assert r.status_code == 200 and r.json()["limits"]["concurrent_jobs"] == 0
    q = client_b.get("/api/v1/billing/quotas").json()
    assert q["limits"]["dataset_bytes"] == 1000 and q["defaults"]["concurrent_jobs"] >= 5
    ds = client_b.get("/api/v1/datasets").json()["data"][0]["id"]
    r = client_b.post("/api/v1/jobs", json={"dataset_id": ds, "strategy": "zero-shot"})
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"], err["limit"]) == ("quota_exceeded", "concurrent_jobs", 0)
    assert "concurrent_jobs" in err["message"]
    with open(banking_subset[1], "rb") as f:
        r = client_b.post("/api/v1/datasets", files={"file": ("t.csv", f)})
    assert r.status_code == 429 and r.json()["error"]["param"] == "dataset_bytes", r.text
    assert "dataset_bytes" in r.json()["error"]["message"]
    r = op.put("/api/v1/admin/billing/quotas", json={"tenant_id": tid, "reset": ["concurrent_jobs", "dataset_bytes"]})
    assert r.json()["limits"]["concurrent_jobs"] == q["defaults"]["concurrent_jobs"]
    r = op.put("/api/v1/admin/billing/quotas", json={"tenant_id": tid, "storage_bytes": 10})
    with open(banking_subset[1], "rb") as f:
        r = client_b.post("/api/v1/datasets", files={"file": ("t.csv", f)})
    assert r.status_code == 429 and r.json()["error"]["param"] == "storage_bytes", r.text
    op.put("/api/v1/admin/billing/quotas", json={"tenant_id": tid, "reset": ["storage_bytes"]})


def test_operator_api_needs_the_operator_key(server, client_a, tenant_a):
    body = {"tenant_id": tenant_a["tenant_id"], "amount_usd": "1000"}
    r = client_a.post("/api/v1/admin/billing/grants", json=body)          # a tenant admin's key
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.post(server.url + "/api/v1/admin/billing/grants", json=body)
    assert r.status_code == 403
    r = client_a.get("/api/v1/billing/balance")
    assert r.json()["granted"] == 100_000_000                              # unchanged


def test_sdk_and_cli_usage(server, tenant_a, client_a):
    with Client(server.url, tenant_a["api_key"]) as tl:
        bal = tl.billing.balance()
        assert bal["spent"] > 0 and bal["reserved"] == 0
        jobs = tl.billing.jobs()
        assert jobs and jobs[0]["actual"]["cost"] == jobs[0]["charged"]
        assert tl.billing.job(jobs[0]["job_id"])["charges"]
        assert "amount_usd" in tl.billing.export_csv().splitlines()[0]
        assert tl.billing.prices()["compute"]["cpu_core_hour"] > 0
    r = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "usage", check=False)
    assert r.returncode == 0, r.stderr
    assert f"available  ${bal['available_usd']}" in r.stdout and f"spent      ${bal['spent_usd']}" in r.stdout
    assert "reserved   $0.000000" in r.stdout and jobs[0]["job_id"] in r.stdout
    r = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "usage", "--json", check=False)
    assert json.loads(r.stdout)["balance"]["spent"] == bal["spent"]
    ds = client_a.get("/api/v1/datasets").json()["data"][0]["id"]
    r = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "jobs", "estimate", ds,
                   "--strategy", "full", check=False)
    assert r.returncode == 0 and r.stdout.startswith("cost  $") and "would start now" in r.stdout, r.stdout
    r = server.run("admin", "billing", "reconcile", check=False)
    assert r.returncode == 0 and "the books balance" in r.stdout, r.stdout + r.stderr
