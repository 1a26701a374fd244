"""Liveness and readiness, for a load balancer or an orchestrator (no key; not in the API document).

/healthz: the process answers (liveness: restart it if not). It touches nothing else, so a
database outage does not get a healthy server restarted. /readyz: whether it can serve now, part
by part (the database, the in-process worker's heartbeat, the sandbox): 503 with the failing
part named and Retry-After while any is down (take it out of rotation, do not restart it).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..errors import DATABASE_RETRY_AFTER, _one_line

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz(request: Request):
    return {"ok": True, "insecure_mode": request.app.state.settings.insecure_mode}


@router.get("/readyz")
def readyz(request: Request):
    state = request.app.state
    parts = {"database": _database(state.db), "worker": _worker(state), "sandbox": _sandbox(state.settings)}
    ready = all(p["ok"] for p in parts.values())
    body = {"ok": ready, **parts}
    if not ready:
        body["failing"] = [name for name, p in parts.items() if not p["ok"]]
    return JSONResponse(body, status_code=200 if ready else 503,
                        headers=None if ready else {"Retry-After": str(DATABASE_RETRY_AFTER)})


def _database(db) -> dict:
    t0 = time.perf_counter()
    try:
        with db.engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:         # noqa: BLE001 - any failure means not ready; say which
        return {"ok": False, "error": _one_line(exc)}
    return {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 1)}


def _worker(state) -> dict:
    """The in-process worker: alive, and its loop went round recently (a loop stuck on a dead
    database stops beating). Workers run apart (`--no-worker`) are not this process's to report."""
    worker, thread = getattr(state, "worker", None), getattr(state, "worker_thread", None)
    if worker is None:
        refused = getattr(state, "worker_refused", None)
        return {"ok": False, "error": refused} if refused else {"ok": True, "mode": "separate"}
    if thread is not None and not thread.is_alive():
        return {"ok": False, "error": "the worker thread has stopped"}
    settings = state.settings
    age = time.monotonic() - worker.last_beat
    limit = max(10.0, 5 * settings.worker_poll_seconds, 2 * settings.heartbeat_seconds)
    out = {"ok": age <= limit, "heartbeat_age_s": round(age, 1)}
    if age > limit:
        out["error"] = f"no heartbeat for {age:.0f} s (limit {limit:.0f} s)"
    return out


def _sandbox(settings) -> dict:
    if settings.insecure_mode:
        return {"ok": True, "insecure_mode": True}
    from ...jobs.executors.sandbox import sandbox_problem

    problem = sandbox_problem()
    return {"ok": True} if not problem else {"ok": False, "error": problem}
