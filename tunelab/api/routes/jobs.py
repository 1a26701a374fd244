"""Jobs: create (idempotent with an `Idempotency-Key` header), list, get, cancel, events
(polling with `after`), and a live Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from ...billing import InsufficientCredit, QuotaExceeded
from ...db.models import Job, JobEvent
from ...jobs.spec import JobSpec
from ...jobs.status import JobStatus
from ...services.jobs import JobRejected, cancel, submit
from ..deps import MemberDep, PrincipalDep, RowId, ScopeDep, SessionDep, audit
from ...contract import EventPage, Job as JobOut, JobList
from ..errors import AUTH, APIError, errors
from ..schemas import event_out, job_out
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/jobs", tags=["jobs"])


def create(session, principal, spec: JobSpec, idempotency_key: str | None) -> tuple[Job, bool]:
    from ...jobs.executors import SandboxUnavailable, executor_for
    from ...settings import get_settings

    try:
        executor_for(get_settings().insecure_mode)
    except SandboxUnavailable as exc:
        raise APIError(503, "sandbox_unavailable", str(exc)) from None
    try:
        job, created = submit(session, principal.tenant_id, spec, idempotency_key)
    except JobRejected as exc:
        # Another tenant's dataset is indistinguishable from a missing one: 404, as on every route.
        status = 404 if exc.code == "dataset_not_found" else 422
        raise APIError(status, exc.code, str(exc), exc.param) from None
    except InsufficientCredit as exc:     # 402 with what is missing, in micro-dollars and dollars
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    except QuotaExceeded as exc:
        raise APIError(429, "quota_exceeded", str(exc), exc.quota, **exc.to_dict()) from None
    if created:
        stored = job.spec or {}         # as resolved for the dataset's task
        audit(session, principal, "job.create", job.id, kind=spec.kind,
              strategy=stored.get("strategy") or stored.get("strategies"), dataset=spec.dataset_id)
    return job, created


# Creating a job: 402 (credit), 404 (a dataset not in the tenant), 422 (a spec the server cannot run),
# 429 (a quota), 503 (no sandbox on this server).
CREATE_ERRORS = errors(*AUTH, 400, 402, 403, 404, 422, 503)


@router.post("", status_code=201, response_model=JobOut, responses=CREATE_ERRORS)
def create_job(spec: JobSpec, session: SessionDep, principal: MemberDep,
               idempotency_key: str | None = Header(None, max_length=200)):
    job, _ = create(session, principal, spec, idempotency_key)
    return job_out(job)


@router.get("", response_model=JobList, responses=errors(*AUTH, 422))
def list_jobs(scope: ScopeDep, limit: int = 50, status: str | None = None):
    where = [Job.status == status] if status else []
    jobs = scope.list(Job, *where, order_by=Job.created_at.desc(), limit=max(1, min(limit, 500)))
    return {"data": [job_out(j) for j in jobs]}


@router.get("/{job_id}", response_model=JobOut, responses=errors(*AUTH, 404))
def get_job(job_id: str, scope: ScopeDep):
    return job_out(scope.get(Job, job_id, "job"))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors(*AUTH, 403, 404, 409))
def cancel_job(job_id: str, scope: ScopeDep, session: SessionDep, principal: MemberDep):
    job = cancel(session, scope.get(Job, job_id, "job"))
    audit(session, principal, "job.cancel", job.id)
    return job_out(job)


@router.get("/{job_id}/events", response_model=EventPage, responses=errors(*AUTH, 404, 422))
def job_events(job_id: str, scope: ScopeDep, after: RowId = 0, limit: int = 500, type: str | None = None):
    scope.get(Job, job_id, "job")
    where = [JobEvent.job_id == job_id, JobEvent.id > after] + ([JobEvent.type == type] if type else [])
    events = scope.list(JobEvent, *where, order_by=JobEvent.id, limit=max(1, min(limit, 5000)))
    return {"data": [event_out(e) for e in events],
            "last_id": events[-1].id if events else after}


@router.get("/{job_id}/stream", response_class=StreamingResponse, responses={
    200: {"description": "Server-Sent Events: one `event: <type>` a job event, `event: end` once it is over",
          # before OpenAPI 3.2 (`itemSchema`) the schema of an event stream describes one event
          "content": {"text/event-stream": {"schema": {"type": "object", "properties": {
              "event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}}}}}}, **errors(*AUTH, 404, 422)})
async def stream_job(job_id: str, request: Request, principal: PrincipalDep, after: RowId = 0):
    """SSE: one `event: <type>` message per job event, then `event: end` once the job is over.
    Reconnecting clients resume with the standard Last-Event-ID header."""
    db = request.app.state.db
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.tenant_id != principal.tenant_id:
            raise APIError(404, "not_found", f"No job with id {job_id!r}.")
    header = request.headers.get("last-event-id", "")      # a garbled one is ignored, not a 500
    last = int(header) if header.isascii() and header.isdigit() and len(header) <= 18 else after

    def poll(cursor: int):
        with db.session() as s:
            rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > cursor)
                             .order_by(JobEvent.id).limit(500)).all()
            status = s.get(Job, job_id).status
            return [event_out(e) for e in rows], status

    async def gen():
        cursor = last
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            events, status = await asyncio.to_thread(poll, cursor)
            for e in events:
                cursor = e["id"]
                yield f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n"
            if JobStatus(status).is_terminal and not events:
                yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
                return
            if not events:
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.5)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
