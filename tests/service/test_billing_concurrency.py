"""Reservation is atomic: 20 job submissions at once against a balance that covers 5 start exactly
5 (the rest get 402), and the balance never goes below zero, on SQLite and on PostgreSQL. The
same for the concurrent-jobs quota. No worker runs: the jobs stay queued, holding their credit."""

from __future__ import annotations

import threading

import httpx
import pytest

from .helpers import upload
from .server_proc import ServerProcess

OPERATOR = "tl-operator-concurrency"


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from .conftest import database_url

    home = tmp_path_factory.mktemp(f"billing-conc-{backend}")
    srv = ServerProcess(home, database_url(backend, "billing_conc"), worker=False, operator_api_key=OPERATOR).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def op(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60) as c:
        yield c


def together(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    out = [None] * n

    def body(i):
        barrier.wait(timeout=60)
        out[i] = fn(i)
    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


def test_twenty_concurrent_submissions_against_credit_for_five(server, op, tenant_a, banking_subset):
    with server.client(tenant_a["api_key"]) as c:
        ds = upload(c, banking_subset[0])["id"]
        body = {"dataset_id": ds, "strategy": "full", "params": {"epochs": 2}}
        reserve = c.post("/api/v1/jobs/estimate", json=body).json()["reserve"]
    keep = 5 * reserve + reserve // 2              # 5 fit, a 6th does not
    r = op.post("/api/v1/admin/billing/adjustments", json={
        "tenant_id": tenant_a["tenant_id"], "amount_usd": f"-{(100_000_000 - keep) / 1e6:.6f}", "memo": "test"})
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["available"] == keep

    def submit(i):
        with server.client(tenant_a["api_key"]) as c:      # a connection each: really concurrent
            r = c.post("/api/v1/jobs", json=body)
            return r.status_code, r.json()
    results = together(20, submit)
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 5 + [402] * 15, [(code, r.get("error", {}).get("message")) for code, r in results]
    for code, r in results:
        if code == 402:
            err = r["error"]
            assert err["code"] == "insufficient_credit" and err["missing"] == reserve - (reserve // 2), err
    with server.client(tenant_a["api_key"]) as c:
        bal = c.get("/api/v1/billing/balance").json()
        jobs = c.get("/api/v1/jobs").json()["data"]
    assert len(jobs) == 5 and all(j["status"] == "queued" for j in jobs)
    assert bal["reserved"] == 5 * reserve and bal["available"] == reserve // 2 >= 0
    with server.client(tenant_a["api_key"]) as c:         # a cancelled job gives its reservation back
        assert c.post(f"/api/v1/jobs/{jobs[0]['id']}/cancel").json()["status"] == "cancelled"
        after = c.get("/api/v1/billing/balance").json()
        assert (after["reserved"], after["available"]) == (4 * reserve, reserve // 2 + reserve)
        assert c.get(f"/api/v1/billing/jobs/{jobs[0]['id']}").json()["actual"]["outcome"] == "cancelled"
    books = op.get("/api/v1/admin/billing/reconcile").json()
    assert books["ok"], books


def test_concurrent_jobs_quota_holds_under_concurrency(server, op, tenant_b, banking_subset):
    with server.client(tenant_b["api_key"]) as c:
        ds = upload(c, banking_subset[0])["id"]
    r = op.put("/api/v1/admin/billing/quotas", json={"tenant_id": tenant_b["tenant_id"], "concurrent_jobs": 3})
    assert r.status_code == 200

    def submit(i):
        with server.client(tenant_b["api_key"]) as c:
            r = c.post("/api/v1/jobs", json={"dataset_id": ds, "strategy": "zero-shot"})
            return r.status_code, r.json()
    results = together(12, submit)
    assert sorted(code for code, _ in results) == [201] * 3 + [429] * 9, results
    assert all(r["error"]["param"] == "concurrent_jobs" for code, r in results if code == 429)
    books = op.get("/api/v1/admin/billing/reconcile").json()
    assert books["ok"], books
