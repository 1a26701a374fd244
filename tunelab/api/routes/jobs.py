"""Jobs (training runs, comparisons, hardware benchmarks): create (idempotent with an
`Idempotency-Key` header), list, get, cancel, events (polling with `after`), and a live
Server-Sent Events stream."""

from __future__ import annotations

import json

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...billing import InsufficientCredit, QuotaExceeded
from ...db.models import Job, JobEvent
from ...jobs.spec import JobSpec
from ...db.scoped import NotFound
from ...services import job_reads, job_resume
from ...services.jobs import JobRejected, cancel, submit
from ...services.streams import JobStreams, StreamRefused
from ..deps import MemberDep, PrincipalDep, RowId, ScopeDep, SessionDep, SettingsDep, audit, principal_and
from ...contract import EventPage, Job as JobOut, JobList
from ..errors import AUTH, APIError, errors
from ..schemas import event_out, job_out
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/jobs", tags=["jobs"])
KEEPALIVE_S = 15          # an idle stream sends a comment line this often


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
        status = 404 if exc.code == "dataset_not_found" or (exc.code, exc.param) == ("model_not_found", "tuned_model") \
            else 422
        raise APIError(status, exc.code, str(exc), exc.param) from None
    except InsufficientCredit as exc:     # 402 with what is missing, in micro-dollars and dollars
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    except QuotaExceeded as exc:
        raise APIError(429, "quota_exceeded", str(exc), exc.quota, **exc.to_dict()) from None
    if created:
        stored = job.spec or {}         # as resolved for the dataset's task
        extra = {"quick": spec.quick, "sweep": spec.sweep} if spec.is_bench else \
            {"model": spec.tuned_model, "file": spec.dataset_id, "top_k": spec.top_k} if spec.is_batch else \
            {"strategy": stored.get("strategy") or stored.get("strategies"), "dataset": spec.dataset_id}
        audit(session, principal, "job.create", job.id, kind=spec.kind, **extra)
    return job, created


# Creating a job: 402 (credit), 404 (a dataset not in the tenant), 422 (a spec the server cannot run),
# 429 (a quota), 503 (no sandbox on this server).
CREATE_ERRORS = errors(*AUTH, 400, 402, 403, 404, 422, 503)


@router.post("", status_code=201, response_model=JobOut, responses=CREATE_ERRORS)
def create_job(spec: JobSpec, session: SessionDep, principal: MemberDep,
               idempotency_key: str | None = Header(None, max_length=200)):
    """Queue a job: a training run (kind train, the default), a comparison of strategies on one split
    (kind compare), or a hardware benchmark of the worker's machine (kind bench-hardware: no
    dataset; `quick`, `sweep`). Each is estimated and its estimate reserved first (402 without the
    credit)."""
    job, _ = create(session, principal, spec, idempotency_key)
    return job_out(job)


@router.get("", response_model=JobList, responses=errors(*AUTH, 422))
def list_jobs(scope: ScopeDep, session: SessionDep, limit: int = 50, status: str | None = None):
    where = [Job.status == status] if status else []
    jobs = scope.list(Job, *where, order_by=Job.created_at.desc(), limit=max(1, min(limit, 500)))
    job_resume.attach(session.connection(), jobs)        # one query for the page's checkpoints
    return {"data": [job_out(j) for j in jobs]}


def _read(db, read, *args):
    """One read of `job_reads` on a connection of its own (run in a worker thread)."""
    with db.engine.connect() as conn:
        return read(conn, *args)


@router.get("/{job_id}", response_model=JobOut, responses=errors(*AUTH, 404))
async def get_job(job_id: str, request: Request):
    """The call every SDK and UI makes while a job runs, so its cost is kept down: the key check and
    this read are one indexed query each, in one hop to a worker thread, with no ORM session."""
    _, job = await principal_and(request, job_reads.job_view, job_id)
    if job is None:
        raise NotFound("job", job_id)
    return job_out(job)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors(*AUTH, 403, 404, 409))
def cancel_job(job_id: str, scope: ScopeDep, session: SessionDep, principal: MemberDep):
    job = cancel(session, scope.get(Job, job_id, "job"))
    audit(session, principal, "job.cancel", job.id)
    return job_out(job)


@router.post("/{job_id}/resume", response_model=JobOut, responses=errors(*AUTH, 402, 403, 404, 409, 429))
def resume_job(job_id: str, scope: ScopeDep, session: SessionDep, principal: MemberDep, settings: SettingsDep):
    """Resume a cancelled or paused training run from its last checkpoint: the job keeps its id and
    goes back to the queue; the steps charged before are not charged again. 409 with the reason
    when it cannot be resumed (see the job's `resumable` and `resume_note`), 402 without the
    credit to reserve for the rest of the run, 429 when the tenant runs its most jobs at once."""
    job = scope.get(Job, job_id, "job")
    try:
        step = job_resume.resume(session, job, settings.jobs_dir, job_resume.person(session, principal))
    except job_resume.NotResumable as exc:
        raise APIError(409, "not_resumable", str(exc)) from None
    except InsufficientCredit as exc:
        raise APIError(402, "insufficient_credit", str(exc), None, **exc.to_dict()) from None
    except QuotaExceeded as exc:
        raise APIError(429, "quota_exceeded", str(exc), exc.quota, **exc.to_dict()) from None
    audit(session, principal, "job.resume", job.id, step=step)
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
    Reconnecting clients resume with the standard Last-Event-ID header. At most
    TUNELAB_STREAM_MAX_PER_KEY streams a key and TUNELAB_STREAM_MAX_PER_TENANT a tenant (429)."""
    return await open_stream(request, principal, job_id, after)


async def open_stream(request: Request, principal, job_id: str, after: int) -> StreamingResponse:
    """The stream of a job of the principal's tenant (the API's and the UI's): counted against the
    stream limits, then fed by the process's one poller (services.streams), never polling itself."""
    status = await run_in_threadpool(_read, request.app.state.db, job_reads.job_status, principal.tenant_id, job_id)
    if status is None:
        raise NotFound("job", job_id)
    header = request.headers.get("last-event-id", "")      # a garbled one is ignored, not a 500
    cursor = int(header) if header.isascii() and header.isdigit() and len(header) <= 18 else after
    hub = request.app.state.job_streams
    try:
        sub = hub.open(job_id, principal.tenant_id, principal.key_id or f"user:{principal.user_id}", cursor)
    except StreamRefused as exc:
        raise APIError(429, "too_many_streams", str(exc), retry_after=exc.retry_after) from None
    return _Stream(hub, sub)


def stream_hub(db, settings) -> JobStreams:
    """The process's stream poller (app.state.job_streams), writing this route's wire format."""
    return JobStreams(db, tick=settings.stream_poll_seconds, per_key=settings.stream_max_per_key,
                      per_tenant=settings.stream_max_per_tenant, event_frame=_event_frame, end_frame=_end_frame)


def _event_frame(e) -> str:
    return f"id: {e.id}\nevent: {e.type}\ndata: {json.dumps(event_out(e))}\n\n"


def _end_frame(status: str) -> str:
    return f"event: end\ndata: {json.dumps({'status': status})}\n\n"


class _Stream(StreamingResponse):
    """The subscription's frames as they come. It unsubscribes however the response ends: the
    client went away, the job ended, or the response never started (a client gone before the
    headers), which a generator's own `finally` would miss."""

    def __init__(self, hub: JobStreams, sub):
        super().__init__(_frames(sub), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.hub, self.sub = hub, sub

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.close(self.sub)


async def _frames(sub):
    """A comment line when idle: proxies keep the connection, and a gone client is noticed."""
    yield "retry: 2000\n\n"
    while True:
        frames = await sub.next_frames(KEEPALIVE_S)
        for frame in frames:
            yield frame
        if sub.ended or sub.dropped:
            return
        if not frames:
            yield ": keep-alive\n\n"
