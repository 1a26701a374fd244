"""Live job streams are capped per key and per tenant, and fed by one poller (issue 22, item 8); a
job status GET stays cheap (item 18).

Before: every open stream polled the database twice every half second on its own, with no cap
(a viewer could open thousands), and a status GET made four or five ORM queries. The limits are
exercised on a real server in a subprocess; the query counts on a real server in this process
(uvicorn on a free port), where a SQLAlchemy listener can count every statement it runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack

import httpx
import pytest
from sqlalchemy import event

from service.server_proc import ServerProcess, free_port
from tunelab.db import Database, migrate
from tunelab.db.ledger import JobBilling
from tunelab.db.models import Job
from tunelab.jobs import store

PER_KEY, PER_TENANT = 2, 3

# `make test` on SQLite; `make test-slow` on PostgreSQL too.
pytestmark = pytest.mark.slow_on_postgresql


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    from service.conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp("streams"), database_url(backend, "streams"), worker=False,
                        stream_max_per_key=PER_KEY, stream_max_per_tenant=PER_TENANT,
                        stream_poll_seconds=0.2).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def db(server):
    database = Database(server.env.get("TUNELAB_DATABASE_URL") or f"sqlite:///{server.home / 'tunelab.db'}")
    yield database
    database.engine.dispose()


def new_job(db: Database, tenant_id: str, billing: bool = False) -> str:
    with db.session() as s:
        job = Job(tenant_id=tenant_id, spec={"strategy": "linear-probe"})
        s.add(job)
        s.flush()
        if billing:
            s.add(JobBilling(tenant_id=tenant_id, job_id=job.id, estimate={"wall_seconds": 12.5},
                             estimate_cost=1500, estimate_low=1000, estimate_high=2500, reserved=2500))
        return job.id


def open_stream(stack: ExitStack, client: httpx.Client, job_id: str, **headers) -> httpx.Response:
    return stack.enter_context(client.stream("GET", f"/api/v1/jobs/{job_id}/stream", headers=headers,
                                             timeout=httpx.Timeout(30)))


def read_until_end(r: httpx.Response) -> list[tuple[str, dict]]:
    import json

    seen, kind = [], None
    for line in r.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            seen.append((kind, json.loads(line[6:])))
            if kind == "end":
                return seen
    raise AssertionError(f"the stream closed before `end`: {seen}")


def test_streams_over_the_limits_are_429_and_slots_come_back(server, db, tenant_a, tenant_b):
    job = new_job(db, tenant_a["tenant_id"])
    with server.client(tenant_a["api_key"]) as admin:
        second_key = admin.post("/api/v1/api-keys", json={"name": "second"}).json()["key"]
    with ExitStack() as stack, server.client(tenant_a["api_key"]) as a, server.client(second_key) as a2, \
            server.client(tenant_b["api_key"]) as b:
        assert [open_stream(stack, a, job).status_code for _ in range(PER_KEY)] == [200] * PER_KEY
        over = open_stream(stack, a, job)                       # the key's third
        assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
        over.read()
        assert over.json()["error"]["code"] == "too_many_streams"
        assert open_stream(stack, a2, job).status_code == 200   # another key: the tenant's third
        tenant_over = open_stream(stack, a2, job)
        assert tenant_over.status_code == 429, "the tenant's limit counts all its keys"
        other = open_stream(stack, b, new_job(db, tenant_b["tenant_id"]))
        assert other.status_code == 200, "another tenant is not affected"
    # every stream above is closed now: the server notices, and the slots come back
    deadline, code = time.time() + 30, None
    with server.client(tenant_a["api_key"]) as a:
        while time.time() < deadline and code != 200:
            with a.stream("GET", f"/api/v1/jobs/{job}/stream", timeout=30) as r:
                code = r.status_code
            time.sleep(0.3)
    assert code == 200


def test_every_stream_gets_every_event_then_end_and_resumes(server, db, tenant_a):
    job = new_job(db, tenant_a["tenant_id"])
    with ExitStack() as stack, server.client(tenant_a["api_key"]) as a:
        streams = [open_stream(stack, a, job) for _ in range(PER_KEY)]
        with db.session() as s:
            row = s.get(Job, job)
            for step in range(3):
                store.add_event(s, row, "progress", data={"step": step})
        assert a.post(f"/api/v1/jobs/{job}/cancel").status_code == 200     # a status event, then over
        got = [read_until_end(r) for r in streams]
    assert got[0] == got[1], "one poller, the same events to every stream"
    kinds = [k for k, _ in got[0]]
    assert kinds == ["progress"] * 3 + ["status", "end"] and got[0][-1][1]["status"] == "cancelled"
    ids = [e["id"] for _, e in got[0][:-1]]
    with server.client(tenant_a["api_key"]) as a, \
            a.stream("GET", f"/api/v1/jobs/{job}/stream", headers={"Last-Event-ID": str(ids[1])}, timeout=30) as r:
        resumed = read_until_end(r)
    assert [e["id"] for _, e in resumed[:-1]] == ids[2:] and resumed[-1][0] == "end"


def test_status_get_refuses_a_revoked_key_at_once_and_another_tenants_job(server, db, tenant_a, tenant_b):
    """The status GET checks the key and reads the job in one step, without the ORM: the same walls."""
    job = new_job(db, tenant_a["tenant_id"])
    with server.client(tenant_a["api_key"]) as admin:
        temp = admin.post("/api/v1/api-keys", json={"name": "temp"}).json()
        with server.client(temp["key"]) as c:
            assert c.get(f"/api/v1/jobs/{job}").status_code == 200
            admin.delete(f"/api/v1/api-keys/{temp['id']}")
            assert [c.get(f"/api/v1/jobs/{job}").status_code for _ in range(5)] == [401] * 5
            assert c.get(f"/api/v1/jobs/{job}/stream").status_code == 401
    with server.client(tenant_b["api_key"]) as b:
        r = b.get(f"/api/v1/jobs/{job}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# ---- in this process: count the statements the server runs ------------------------------------

@pytest.fixture(scope="module")
def inproc(backend, tmp_path_factory):
    """A real server (uvicorn, a free port) in this process, with a statement counter on its engine."""
    import uvicorn

    from service.conftest import database_url
    from tunelab.api.app import create_app
    from tunelab.services.tenants import create_tenant
    from tunelab.settings import Settings

    home = tmp_path_factory.mktemp("streams-inproc")
    settings = Settings(home=home, database_url=database_url(backend, "streams_inproc"), in_process_worker=False,
                        stream_max_per_key=0, stream_max_per_tenant=0, stream_poll_seconds=0.2)
    app = create_app(settings, run_worker=False)
    db = app.state.db
    migrate(db.engine)
    with db.session() as s:
        tenant, _, key = create_tenant(s, "inproc", "a@inproc.test")
        tenant_id = tenant.id
    statements = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "key": key, "tenant_id": tenant_id, "db": db,
           "statements": statements}
    srv.should_exit = True
    thread.join(timeout=30)


def _count_while(statements: list, seconds: float) -> int:
    start = len(statements)
    time.sleep(seconds)
    return len(statements) - start


def _wait_quiet(statements: list, timeout: float = 20) -> None:
    """Until the server runs no statement for a second (no stream left open and polling)."""
    deadline = time.time() + timeout
    while _count_while(statements, 1.0) and time.time() < deadline:
        pass


def test_open_streams_cost_no_query_each(inproc):
    """One stream, then 40 more on 40 jobs: the poller's queries a second stay the same."""
    jobs = [new_job(inproc["db"], inproc["tenant_id"]) for _ in range(41)]
    counts, ready, opened = {}, threading.Event(), []

    async def hold(client: httpx.AsyncClient, job_ids: list[str]) -> list[asyncio.Future]:
        async def one(job_id):
            async with client.stream("GET", f"/api/v1/jobs/{job_id}/stream", timeout=None) as r:
                assert r.status_code == 200
                opened.append(job_id)
                async for _ in r.aiter_lines():
                    pass
        return [asyncio.ensure_future(one(j)) for j in job_ids]

    async def main():
        headers = {"Authorization": f"Bearer {inproc['key']}"}
        async with httpx.AsyncClient(base_url=inproc["url"], headers=headers,
                                     limits=httpx.Limits(max_connections=100)) as client:
            streams = await hold(client, jobs[:1])
            await asyncio.sleep(1.0)
            counts[1] = await asyncio.to_thread(_count_while, inproc["statements"], 3.0)
            streams += await hold(client, jobs[1:])
            while len(opened) < len(jobs):
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            counts[len(jobs)] = await asyncio.to_thread(_count_while, inproc["statements"], 3.0)
            for t in streams:
                t.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            ready.set()

    asyncio.run(main())
    assert ready.is_set()
    # 3 s at a 0.2 s tick: about 15 ticks of two queries; 41 polling streams were ~480 queries
    assert counts[1] <= 40, counts
    assert counts[len(jobs)] <= counts[1] + 8, f"queries grew with the number of streams: {counts}"


def test_a_status_get_is_two_queries_and_the_same_answer(inproc):
    job = new_job(inproc["db"], inproc["tenant_id"], billing=True)
    headers = {"Authorization": f"Bearer {inproc['key']}"}
    with httpx.Client(base_url=inproc["url"], headers=headers, timeout=30) as c:
        listed = next(j for j in c.get("/api/v1/jobs").json()["data"] if j["id"] == job)     # the ORM's path
        c.get(f"/api/v1/jobs/{job}")            # the key's once-a-minute use mark, if due, written here
        _wait_quiet(inproc["statements"])     # no stream of this module's tests is left polling
        start = len(inproc["statements"])
        answers = [c.get(f"/api/v1/jobs/{job}") for _ in range(20)]
        ran = inproc["statements"][start:]
    assert all(r.status_code == 200 for r in answers)
    assert answers[0].json() == listed and float(answers[0].json()["billing"]["estimate_usd"]) > 0
    selects = [s for s in ran if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 40 and len(ran) <= 40 + 2, ran[:12]     # the key, the job (+ a commit or two)
