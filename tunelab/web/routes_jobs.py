"""Jobs: the list, and one job's page (live chart over SSE, progress, ETA, events, cancel; then
final metrics: a classifier's macro-F1, per-label table and confusion matrix, or a generative
model's held-out loss, perplexity and answer scores, base against tuned, with sample answers;
and the model card)."""

from __future__ import annotations

import logging
import tarfile
import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from ..api.deps import SessionDep, SettingsDep
from ..api.routes.jobs import cancel_job as api_cancel, resume_job as api_resume
from ..api.errors import APIError
from ..api.routes.jobs import open_stream
from ..contract.resources import placement_line
from ..db.models import Dataset, Job, JobEvent, TunedModel
from ..db.scoped import TenantScope
from ..evaluation.summary import summarize
from ..jobs.spec import BATCH, BENCH
from ..jobs.status import JobStatus
from ..security import sealed_fields
from ..security.storage import cipher
from ..services.infrastructure import comparison, model_rows
from ..services import job_resume
from ..services.jobs import dataset_task
from ..strategies import Task, task_named
from . import credits, wizard
from .deps import PageError, UserDep, checked_form, need, render
from .routes_infrastructure import _figures, _models

router = APIRouter(include_in_schema=False)
log = logging.getLogger("tunelab.web")
CHART_POINTS = 2000
LOG_EVENTS = 300
MAX_CARD_BYTES = 40_000
MAX_SAMPLES = 20
# What the chart's second line is: a classifier's loop reports validation macro-F1 (0-1), a causal
# LM's reports minus the validation loss (higher is better), drawn as the loss it is.
CHART = {"classify": {"metric": "f1", "caption": "Training loss, validation macro-F1 and progress over time "
                      "(seconds since the job was created). Strategies that train no network (zero-shot, "
                      "linear probe) show progress only."},
         "generate": {"metric": "neg-loss", "caption": "Training loss, validation loss (on held-out "
                      "conversations, after each epoch) and progress over time (seconds since the job was "
                      "created)."},
         "bench": {"metric": "f1", "caption": "Progress of the benchmark over time (seconds since the job was "
                   "created): the device figures, then each model's short training run."}}


def get_job(session, user, job_id: str, kind: str | tuple[str, ...] = "train") -> Job:
    """The tenant's job of one of these kinds (404 otherwise: another tenant's job is not found)."""
    kinds = (kind,) if isinstance(kind, str) else kind
    what = "comparison" if "compare" in kinds else "job"
    job = TenantScope(session, user.tenant_id).get(Job, job_id, what)
    if job.kind not in kinds:
        raise PageError(404, "Not found", f"There is no {what} {job_id!r} in your organisation.")
    return job


def point(e: JobEvent, t0) -> dict:
    d = e.data or {}
    total = d.get("total_steps") or 0
    return {"id": e.id, "t": round((e.created_at - t0).total_seconds(), 2), "phase": d.get("phase"),
            "step": d.get("step"), "total": total, "loss": d.get("loss"), "metric": d.get("eval_metric"),
            "pct": round(100 * d.get("step", 0) / total, 1) if total else None}


def job_task(session, user, job: Job) -> Task:
    """The task a job trains for: what its result says, else its dataset's (classification for
    jobs from before tasks, or whose dataset was deleted)."""
    result = job.result or {}
    name = (result.get("metrics") or {}).get("task") or result.get("task") or (job.progress or {}).get("task")
    if name:
        try:
            return task_named(name)
        except KeyError:
            pass
    dataset_id = (job.spec or {}).get("dataset_id")
    ds = TenantScope(session, user.tenant_id).find(Dataset, dataset_id) if dataset_id else None
    return dataset_task(ds) if ds is not None else task_named("text-classification")


def live_context(session, user, job: Job) -> dict:
    """What the live panel needs (job and comparison pages): progress now, chart history, events."""
    scope = TenantScope(session, user.tenant_id)
    task = job_task(session, user, job)
    events = scope.list(JobEvent, JobEvent.job_id == job.id, order_by=JobEvent.id)
    progress = [point(e, job.created_at) for e in events if e.type == "progress"][-CHART_POINTS:]
    log = [e for e in events if e.type != "progress"][-LOG_EVENTS:]
    p = job.progress or {}
    total = p.get("total_steps") or 0
    terminal = JobStatus(job.status).is_terminal
    placed = placement_line(job.placement) if job.placement else None
    return {"job": job, "terminal": terminal, "chart": progress, "log": log,
            # where it runs: "Runs on node-1: gpu:0, gpu:1, 2 processes" ("Ran on" once it ended)
            "placement": ("Ran" + placed[4:]) if placed and terminal else placed,
            "chart_kind": CHART["bench"] if job.kind == BENCH else CHART.get(task.serving, CHART["classify"]),
            "last_id": events[-1].id if events else 0,
            "now": {"phase": p.get("phase"), "step": p.get("step"), "total": total, "eta": p.get("eta_s"),
                    "message": p.get("message"), "pct": round(100 * p.get("step", 0) / total) if total else 0}}


def in_words(metrics: dict) -> dict | None:
    """The results in a person's words (evaluation/summary.py), for the results macro."""
    words = summarize(metrics)
    return words.to_dict() if words is not None else None


def confusion(metrics: dict) -> dict | None:
    cm = metrics.get("confusion_matrix") or {}
    labels, matrix = cm.get("labels") or [], cm.get("matrix") or []
    if not labels or len(labels) > 30:
        return None
    peak = max((v for row in matrix for v in row), default=1) or 1
    return {"labels": labels, "rows": [[{"v": v, "a": round(0.08 + 0.85 * v / peak, 2)} for v in row]
                                       for row in matrix]}


_CARDS: dict[tuple[str, float], str] = {}


def _sealed_card(home: Path, tenant_id: str, sealed: Path) -> str | None:
    """README.md read out of an encrypted model folder as a stream: nothing decrypted to disk,
    and never the whole model in memory."""
    key = (str(sealed), sealed.stat().st_mtime)
    if key not in _CARDS:
        from ..security.storage import read_sealed_file     # at-rest encryption (the isolation layer)

        try:
            _CARDS[key] = read_sealed_file(home, tenant_id, sealed, "README.md").decode("utf-8", "replace")
        except FileNotFoundError:
            _CARDS[key] = ""
        while len(_CARDS) > 64:
            _CARDS.pop(next(iter(_CARDS)))
    return _CARDS[key] or None


def model_card(session, user, job: Job, home: Path) -> str | None:
    tuned = TenantScope(session, user.tenant_id).list(TunedModel, TunedModel.job_id == job.id)
    for path in [Path(m.artifact_path) for m in tuned] + [Path(p) for p in (job.result or {}).get("artifacts", {}).values()]:
        try:
            if (path / "README.md").is_file():
                return (path / "README.md").read_text(encoding="utf-8", errors="replace")[:MAX_CARD_BYTES]
            if path.is_file() and path.name.endswith(".tar.enc"):
                card = _sealed_card(home, job.tenant_id, path)
                return card[:MAX_CARD_BYTES] if card else None
        except (OSError, ValueError, tarfile.TarError, ImportError):
            log.warning("model card unreadable", extra={"job": job.id, "path": str(path)})
    return None


@router.get("/jobs")
def jobs(request: Request, user: UserDep, session: SessionDep, status: str | None = None):
    scope = TenantScope(session, user.tenant_id)
    where = [Job.status == status] if status in {s.value for s in JobStatus} else []
    rows = scope.list(Job, *where, order_by=Job.created_at.desc(), limit=200)
    job_resume.attach(session.connection(), rows)       # "resume from step N" links: one query
    names = {d.id: d.filename for d in scope.list(Dataset)}
    return render(request, "jobs.html", {"jobs": rows, "names": names, "status": status, "quality": quality,
                                         "statuses": [s.value for s in JobStatus]})


def quality(metrics: dict) -> dict:
    """A finished run's score in its task's terms (macro-F1, token F1, preference accuracy)."""
    try:
        task = task_named(metrics.get("task") or "text-classification")
    except KeyError:
        task = task_named("text-classification")
    interval = metrics.get(f"{task.quality}_interval")       # absent from runs made before intervals
    out = {"label": task.quality_label, "value": metrics.get(task.quality)}
    return {**out, "interval": interval} if interval else out


def samples(job: Job) -> list[dict]:
    """Base-vs-tuned answers of a generative run (strings only: a result is the job's JSON)."""
    rows = (job.result or {}).get("samples") or []
    keys = ("prompt", "reference", "base", "tuned")
    return [{k: str(r.get(k) or "") for k in keys} for r in rows[:MAX_SAMPLES] if isinstance(r, dict)]


def compare_choices(task: Task, strategy: str | None) -> list[dict]:
    """The task's other strategies a finished run can be compared with (those that can run here)."""
    return [s for s in wizard.strategies(task.name) if s["name"] != strategy and not s["disabled"]]


BENCH_MODES = {(True, True): "quick: the default model", (False, True): "full sweep: every catalog model",
               (True, False): "device figures only", (False, False): "device figures only, more repetitions"}


def bench_view(job: Job) -> dict:
    """A benchmark job's page: what it measures and, once it succeeded, its figures, model rows and
    the comparison with the worker's run before (as the Infrastructure page words them)."""
    spec = job.spec or {}
    stored = (job.result or {}).get("benchmark") if job.status == "succeeded" else None
    out = {"mode": BENCH_MODES[(spec.get("quick", True) is not False, spec.get("sweep", True) is not False)],
           "stored": None}
    if isinstance(stored, dict):
        compared = comparison(stored, []) or {}
        out.update(stored=stored, figures=_figures(stored, []), models=_models(model_rows(stored, None)),
                   failed_rows=[m for m in stored.get("models") or [] if isinstance(m, dict) and m.get("error")],
                   regressions=compared.get("messages") or [], compared=compared,
                   worker=stored.get("worker"))
    return out


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    job = get_job(session, user, job_id, kind=("train", BENCH, BATCH))
    if job.kind == BATCH:          # a file labelled: live progress, then the download (routes_batch)
        from .routes_batch import batch_context

        return render(request, "batch_job.html", {**live_context(session, user, job),
                                                  **batch_context(session, user, job, settings)})
    if job.kind == BENCH:
        return render(request, "job.html", {**live_context(session, user, job), "bench": bench_view(job),
                                            "cost": credits.job_cost(session, user.tenant_id, job.id)})
    ds = TenantScope(session, user.tenant_id).find(Dataset, job.spec.get("dataset_id"))
    metrics = sealed_fields.unseal((job.result or {}).get("metrics") or {}, cipher(settings.home, user.tenant_id))
    per_class = sorted((metrics.get("per_class") or {}).items())
    task = job_task(session, user, job)
    generative = task.serving == "generate"
    return render(request, "job.html", {**live_context(session, user, job), "ds": ds, "metrics": metrics,
                                        "task": task, "generative": generative,
                                        "samples": samples(job) if generative else [],
                                        "compare_with": compare_choices(task, job.spec.get("strategy")),
                                        "per_class": per_class, "cm": None if generative else confusion(metrics),
                                        "in_words": None if generative else in_words(metrics),
                                        "card": model_card(session, user, job, settings.home),
                                        "tuned_model": TenantScope(session, user.tenant_id).find(
                                            TunedModel, job.fine_tuned_model) if job.fine_tuned_model else None,
                                        "cost": credits.job_cost(session, user.tenant_id, job.id),
                                        "resume": job_resume.describe(session.connection(), job),
                                        "idempotency_key": uuid.uuid4().hex})


@router.get("/jobs/{job_id}/cost")
def job_cost_partial(job_id: str, request: Request, user: UserDep, session: SessionDep):
    """The cost panel alone: the job page reloads it while the job runs ("charged so far" live)."""
    job = get_job(session, user, job_id, kind=("train", BENCH, BATCH))
    return render(request, "_cost.html", {"job": job, "cost": credits.job_cost(session, user.tenant_id, job.id)})


@router.get("/jobs/{job_id}/stream")
async def stream(job_id: str, request: Request, user: UserDep, after: int = 0):
    """The API's SSE stream, for a browser session (EventSource cannot send an API key): the same
    limits, counted for the session's key (or, signed in with a password, its user), and the
    same per-key request rate at its opening."""
    wait = request.app.state.limits["per_key"].hit(user.key_id or f"user:{user.user_id}")
    if wait is not None:
        raise APIError(429, "rate_limited", f"Too many requests; retry in {wait:.0f} s.", retry_after=round(wait, 1))
    return await open_stream(request, user.principal, job_id, after)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, user: UserDep, session: SessionDep):
    need(user, "member")
    await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    job = scope.get(Job, job_id, "job")
    api_cancel(job_id, scope, session, user.principal)     # the API's own cancel, audited the same way
    return RedirectResponse(f"/{'comparisons' if job.kind == 'compare' else 'jobs'}/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/resume")
async def resume_job(job_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """The "Resume from step N" button: the API's own resume (audited the same way), then the live
    page; a run that cannot be resumed gets the page of errors with the reason (409)."""
    need(user, "member")
    await checked_form(request, user)
    job = get_job(session, user, job_id)
    try:
        api_resume(job_id, TenantScope(session, user.tenant_id), session, user.principal, settings)
    except APIError as exc:
        raise PageError(exc.status, "This run cannot be resumed", exc.message) from None
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
