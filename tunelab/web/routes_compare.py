"""Compare: runs side by side (quality, train time, latency, cost) with a chart and the
recommended winner, explained.

Three sources, one page: a comparison job (the API's `POST comparisons`); a comparison started
here, which is one training job per strategy on the same dataset, rows and seed (so the same
split), tagged with a group id in the jobs' own `metadata`; or finished runs ticked on the jobs
list. The rows and the winner come from the engine's own summary and rule (`tunelab.engine.finish`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..api.deps import SessionDep
from ..engine.compare import finish
from ..evaluation.intervals import format_short
from ..evaluation.summary import summarize
from ..security import sealed_fields
from ..security.storage import cipher
from ..strategies import task_named
from ..strategies.classification import SERVED_PREDICTIONS
from ..db.models import Dataset, Job
from ..db.scoped import TenantScope
from ..jobs.status import JobStatus
from . import credits
from .deps import PageError, UserDep, render
from .format import FILTERS
from .routes_jobs import get_job, live_context

router = APIRouter(include_in_schema=False)
GROUP_KEY, BASE_KEY = "compare_group", "compare_base"
HOW = (f"Cost is compute time: training plus, for classifiers, serving {SERVED_PREDICTIONS:,} predictions at "
       "the measured latency. The winner is the cheapest strategy whose quality (macro-F1 for classifiers, "
       "token F1 of held-out answers for chat models) is within {material:.2f} of the best (smaller "
       "differences are within the noise of a usual test split); a bigger gap means quality really "
       "differs, and the best one wins.")


# A generative comparison's columns after its task's quality: (header, key, format), shown when
# some row has the key (a chat run has held-out loss and answer scores, a preference run margins).
GENERATIVE_COLUMNS = [("Held-out loss", "test_loss", "score"), ("Base loss", "base_test_loss", "score"),
                      ("Perplexity", "test_perplexity", "score"), ("Token F1", "token_f1", "score"),
                      ("Exact match", "exact_match", "pct"), ("Reward margin", "margin", "score"),
                      ("Base accuracy", "base_preference_accuracy", "pct"),
                      ("Tokens / s", "tokens_per_second", "thousands")]


def _task(jobs: list[Job]):
    """The task of the runs (what their metrics say, or a comparison job's result; classification
    for runs from before tasks)."""
    for job in jobs:
        result = job.result or {}
        name = (result.get("metrics") or {}).get("task") or result.get("task") or next(
            (r.get("task") for r in result.get("results") or [] if isinstance(r, dict) and r.get("task")), None)
        if name:
            try:
                return task_named(name)
            except KeyError:
                continue
    return task_named("text-classification")


def shown_as(task) -> dict:
    """What the comparison template needs of the task: its quality's name and, for generative
    tasks, which columns replace a classifier's accuracy and latency."""
    return {"name": task.name, "quality_label": task.quality_label, "quality": task.quality,
            "generative": task.serving == "generate"}


def generative_cells(rows: list[dict], quality: str) -> tuple[list[str], list[dict]]:
    """Headers and each row's formatted cells for the generative columns some row has."""
    cols = [c for c in GENERATIVE_COLUMNS if c[1] != quality and any(c[1] in r for r in rows)]
    out = []
    for r in rows:
        if "error" not in r:
            r = dict(r, cells=[FILTERS[fmt](r.get(key)) if r.get(key) is not None else "—" for _, key, fmt in cols])
        out.append(r)
    return [c[0] for c in cols], out


def recommend(rows: list[dict], jobs: list[Job]) -> tuple[str | None, str]:
    result = finish([dict(r) for r in rows], _task(jobs))
    return result.recommended, result.reason


def how(jobs: list[Job]) -> str:
    return HOW.format(material=_task(jobs).material)


def table(rows: list[dict], models: dict, task=None) -> dict:
    # rows of comparisons made before tasks carry macro_f1 only
    rows = [r if "error" in r or "quality" in r else {**r, "quality": r.get("macro_f1", 0.0)} for r in rows]
    task = task or task_named("text-classification")
    headers: list[str] = []
    if task.serving == "generate":
        headers, rows = generative_cells(rows, task.quality)
    done = [r for r in rows if "error" not in r]
    best_f1 = max((r["quality"] for r in done), default=1) or 1
    top_cost = max((r["cost_seconds"] for r in done), default=1) or 1
    cheapest = min((r["cost_seconds"] for r in done), default=1) or 1e-9
    out = []
    for r in rows:
        r = dict(r)
        if "error" not in r:
            r.setdefault("relative_cost", r["cost_seconds"] / cheapest)
            r["f1_pct"] = round(100 * r["quality"] / best_f1, 1)
            r["cost_pct"] = round(100 * r["cost_seconds"] / top_cost, 1)
            r["cost_money"] = credits.compute_money(r["cost_seconds"])     # dollars; seconds as detail
        r["model"] = models.get(r["strategy"])
        out.append(r)
    ok = [r for r in out if "error" not in r]
    return {"rows": out, "task": shown_as(task), "headers": headers,
            "f1_bars": [{"label": r["strategy"], "pct": r["f1_pct"],
                         "value": format_short(r["quality"], r.get("quality_interval"))} for r in ok],
            "intervals": any(r.get("quality_interval") for r in ok),
            "cost_bars": [{"label": r["strategy"], "pct": r["cost_pct"], "value": f"{r['cost_money'] or ''} ({r['cost_seconds']:.0f} s)".strip()}
                          for r in ok]}


def group_of(job: Job) -> str | None:
    return ((job.spec or {}).get("metadata") or {}).get(GROUP_KEY)


def groups(jobs) -> dict[str, list[Job]]:
    """The comparisons started here, from the jobs' metadata (newest group first)."""
    out: dict[str, list[Job]] = {}
    by_id = {j.id: j for j in jobs}
    for job in sorted(jobs, key=lambda j: j.created_at):
        gid = group_of(job)
        if gid:
            members = out.setdefault(gid, [])
            base = by_id.get(((job.spec or {}).get("metadata") or {}).get(BASE_KEY))
            if base is not None and base not in members:
                members.insert(0, base)
            members.append(job)
    return dict(sorted(out.items(), key=lambda kv: kv[1][-1].created_at, reverse=True))


def rows_of(jobs: list[Job]) -> tuple[list[dict], dict, list[Job]]:
    """(table rows of the finished runs, their models, the unfinished runs)."""
    rows, models, pending = [], {}, []
    strategies = [j.spec.get("strategy") for j in jobs]
    task = _task(jobs)
    for job in jobs:
        m = (job.result or {}).get("metrics")
        label = job.spec.get("strategy") if strategies.count(job.spec.get("strategy")) == 1 else \
            f"{job.spec.get('strategy')} · {job.id[-6:]}"
        if job.status == "succeeded" and m:
            rows.append(task.row(label, {"trainable_params": 0, **m}))
            models[label] = job.fine_tuned_model
        elif JobStatus(job.status).is_terminal:
            rows.append({"strategy": label, "error": f"{job.status}: {job.error_message or 'no result'}"})
        else:
            pending.append(job)
    return rows, models, pending


def runs_page(request, session, user, jobs: list[Job], title: str, gid: str | None = None):
    """Train runs side by side; unfinished ones are listed, the running one shown live."""
    rows, models, pending = rows_of(jobs)
    same = len({(j.spec.get("dataset_id"), j.spec.get("test_dataset_id"), j.spec.get("limit"), j.spec.get("seed"),
                 j.spec.get("model")) for j in jobs}) == 1
    winner, reason = recommend(rows, jobs) if not pending else (None, None)
    ds = TenantScope(session, user.tenant_id).find(Dataset, jobs[0].spec.get("dataset_id"))
    ctx = {"title": title, "members": jobs, "ds": ds, "table": table(rows, models, _task(jobs)), "recommended": winner,
           "reason": reason, "how": how(jobs), "same_split": same, "pending": pending, "cmp_job": None, "gid": gid,
           "winner_words": winner_words(jobs, rows, winner, lambda m: _opened(request, user, m))}
    running = next((j for j in pending if j.status != "queued"), pending[0] if pending else None)
    if running is not None:
        ctx.update(live_context(session, user, running))
    return render(request, "comparison.html", ctx)


def _opened(request: Request, user, words: dict | None) -> dict | None:
    """The summary with its examples of errors unsealed (security/sealed_fields.py)."""
    if not words:
        return words
    return sealed_fields.unseal(words, cipher(request.app.state.settings.home, user.tenant_id))


def winner_words(jobs: list[Job], rows: list[dict], winner: str | None, opened=lambda m: m) -> dict | None:
    """The recommended run's results in a person's words (evaluation/summary.py)."""
    if not winner:
        return None
    for job, row in zip([j for j in jobs if j.status == "succeeded" and (j.result or {}).get("metrics")],
                        [r for r in rows if "error" not in r]):
        if row.get("strategy") == winner:
            words = summarize(opened(job.result["metrics"]))
            return words.to_dict() if words is not None else None
    return None


@router.get("/comparisons")
def comparisons(request: Request, user: UserDep, session: SessionDep):
    scope = TenantScope(session, user.tenant_id)
    jobs = scope.list(Job, order_by=Job.created_at.desc(), limit=1000)
    names = {d.id: d.filename for d in scope.list(Dataset)}
    summaries = []
    for gid, members in groups(jobs).items():
        rows, _, pending = rows_of(members)
        summaries.append({"id": gid, "members": members, "pending": bool(pending),
                          "winner": None if pending else recommend(rows, members)[0]})
    return render(request, "comparisons.html", {
        "comparisons": [j for j in jobs if j.kind == "compare"], "groups": summaries, "names": names,
        "runs": [j for j in jobs if j.kind == "train" and j.status == "succeeded"], "how": how(jobs)})


@router.get("/comparisons/runs")
def compare_runs(request: Request, user: UserDep, session: SessionDep):
    ids = list(dict.fromkeys(request.query_params.getlist("job")))
    if len(ids) < 2:
        raise PageError(422, "Pick two runs or more", "Tick at least two runs to compare them.")
    return runs_page(request, session, user, [get_job(session, user, i) for i in ids], "Runs side by side")


@router.get("/comparisons/group/{gid}")
def compare_group(gid: str, request: Request, user: UserDep, session: SessionDep):
    jobs = TenantScope(session, user.tenant_id).list(Job, Job.kind == "train", order_by=Job.created_at.desc(),
                                                     limit=1000)
    members = groups(jobs).get(gid)
    if not members:
        raise PageError(404, "Not found", f"There is no comparison {gid!r} in your organisation.")
    title = " vs ".join(j.spec.get("strategy") for j in members)
    return runs_page(request, session, user, members, title, gid)


@router.get("/comparisons/{job_id}")
def comparison(job_id: str, request: Request, user: UserDep, session: SessionDep):
    job = get_job(session, user, job_id, kind="compare")
    result = job.result or {}
    ds = TenantScope(session, user.tenant_id).find(Dataset, job.spec.get("dataset_id"))
    return render(request, "comparison.html", {
        **live_context(session, user, job), "cmp_job": job, "ds": ds, "title": " vs ".join(job.spec["strategies"]),
        "table": table(result.get("results", []), result.get("models", {}), _task([job])),
        "recommended": result.get("recommended"),
        "winner_words": _opened(request, user, next((r.get("in_words") for r in result.get("results", [])
                                                     if r.get("strategy") == result.get("recommended")), None)),
        "reason": result.get("reason"), "how": how([job]), "same_split": True, "pending": [], "members": []})
