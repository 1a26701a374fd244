"""The new-training wizard: dataset → detected task → base model → strategy (with the advisor) →
hyperparameters (an "advanced" fold) → estimate → start; or compare several strategies."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..api.deps import SessionDep, SettingsDep
from ..api.errors import APIError
from ..api.routes.jobs import create
from ..data.minimums import planned_issues
from ..db.models import Dataset, Job
from ..db.scoped import TenantScope
from ..jobs.spec import JobSpec
from ..models.catalog import list_models
from ..services.jobs import JobRejected, check_spec, dataset_task
from ..strategies import ConfigError, default_compare, task_named
from . import credits, wizard
from .advisor import BUDGETS, DataFacts, advise, explanation, history_rates
from .deps import PageError, UserDep, checked_form, need, render
from .routes_compare import BASE_KEY, GROUP_KEY
from .routes_models import uploaded

router = APIRouter(include_in_schema=False)


def _models(session, user, settings, task, wanted: str | None) -> tuple[list, list[dict], str, dict, str | None]:
    """(catalog models, uploaded models, the chosen one, sizes, an error) for the task's data: a
    model of another kind (an encoder for chat data) gives way to the task's default silently."""
    everything = list_models()
    own_all = uploaded(session, user, settings)
    catalog, own = wizard.models_for(task, everything, own_all)
    sizes = {m.name: m.parameters for m in catalog} | {m["id"]: int(m.get("bytes") or 0) // 4 for m in own}
    default = task.default_model if task.default_model in sizes else \
        (catalog[0].name if catalog else (own[0]["id"] if own else task.default_model))
    error = None
    if not wanted or wanted not in sizes:     # a catalog name or the tenant's uploaded model, never a path
        known = {m.name for m in everything} | {m["id"] for m in own_all}
        if wanted and wanted not in known:
            error = f"Unknown base model {wanted!r}: choose one below."
        wanted = default
    return catalog, own, wanted, sizes, error


def _wizard(request, user, session, settings, q: dict, error: str | None = None, status: int = 200):
    scope = TenantScope(session, user.tenant_id)
    ready = [d for d in scope.list(Dataset, order_by=Dataset.created_at.desc())
             if d.status == "processed" and d.purpose != "batch"]        # texts to label are not training data
    ds = None
    if q.get("dataset"):
        ds = scope.find(Dataset, q["dataset"])
        if ds is None:
            raise PageError(404, "Not found", f"There is no dataset {q['dataset']!r} in your organisation.")
    elif len(ready) == 1:
        ds = ready[0]
    task = dataset_task(ds) if ds is not None else task_named("text-classification")
    catalog, own, model_name, sizes, model_error = _models(session, user, settings, task, q.get("model"))
    ctx = {"datasets": ready, "ds": ds, "task": task, "generative": task.serving == "generate",
           "catalog": catalog, "uploaded": own, "model_name": model_name,
           "budget": q.get("budget") if q.get("budget") in BUDGETS else "balanced", "budgets": BUDGETS,
           "limit": q.get("limit") or "", "error": error or model_error, "explain": explanation(task.name),
           "idempotency_key": uuid.uuid4().hex, "compare": q.get("compare") or [],
           "time_limits": TIME_LIMITS, "time_limit": str(q.get("time_limit") or ""),
           "exhaustive": q.get("exhaustive") in ("1", "on", "true"), "model_label": str(q.get("model_name") or "")[:120]}
    if ds is not None and ds.status == "processed":
        try:
            limit = wizard.positive_int(q.get("limit"), "Rows to use")
        except ConfigError as exc:
            limit, ctx["error"] = None, str(exc)
        strategies = wizard.strategies(task.name)
        from ..models.device import default_device     # here: torch loads on the wizard's first use, not at startup

        cuda = default_device().startswith("cuda")
        facts = DataFacts.from_stats(ds.stats or {}, limit, task=task.name)
        # Too little data for a score that means something: said before Start (and refused by it).
        counts = (ds.stats or {}).get("label_counts") or {}
        applied = limit if limit and limit < sum(counts.values()) else None
        # an archive's own test folder is the test set (an image dataset's report counts it)
        held_out = (ds.report or {}).get("test_rows")
        ctx["row_check"] = [i.to_dict() for i in planned_issues(counts, limit=applied, test_rows=held_out)] \
            if counts else []
        past = scope.list(Job, Job.status == "succeeded", order_by=Job.created_at.desc(), limit=200)
        advice = advise(facts, sizes.get(model_name, 0), [s["name"] for s in strategies],
                        budget=ctx["budget"], cuda=cuda, history=history_rates(past), task=task.name)
        names = [s["name"] for s in strategies if not s["disabled"]]
        chosen = q.get("strategy") if q.get("strategy") in names else advice.recommended
        fields = wizard.fields(chosen)
        ctx.update(distributed=wizard.distributed(chosen), processes=str(q.get("processes") or "1")[:3])
        prefix = f"p.{chosen}."
        values = {k: v for k, v in (q.get("values") or {}).items() if k.startswith(prefix)}
        changed = any(values.get(prefix + f.name, f.default_text) != f.default_text
                      for f in fields if f.kind != "bool")
        try:
            params = wizard.params_from_form(chosen, values)
        except ConfigError:
            params = {}
        spec = JobSpec(dataset_id=ds.id, model=model_name, strategy=chosen, limit=limit, params=params)
        # Billing answers for every strategy or says it cannot: a page never fails on an estimate.
        ctx.update(costs=credits.per_strategy(session, user.tenant_id, ds.id, model_name, limit, names),
                   estimate=credits.panel(session, scope, user.principal, spec))
        preset = [s["name"] for s in strategies if s["name"] in names and (
            s["baseline"] or s["name"] == advice.recommended or (ctx["generative"] and s["name"] in
                                                                  default_compare(task)))]
        ctx.update(facts=facts, strategies=strategies, advice=advice, strategy=chosen, fields=fields,
                   values=values, advanced_open=changed or bool(error and "hyperparameters" in error),
                   compare=ctx["compare"] or preset,
                   families=[f for f in (("transfer", "Transfer learning"), ("fine-tune", "Fine-tuning"))
                             if any(s["family"] == f[0] for s in strategies)],
                   labels=list(((ds.stats or {}).get("label_counts") or {}).keys()))
    return render(request, "train.html", ctx, status=status)


@router.get("/train")
def train_form(request: Request, user: UserDep, session: SessionDep, settings: SettingsDep,
               dataset: str | None = None, model: str | None = None, strategy: str | None = None,
               budget: str | None = None, limit: str | None = None, processes: str | None = None):
    need(user, "member")
    q = {"dataset": dataset, "model": model, "strategy": strategy, "budget": budget, "limit": limit,
         "processes": processes,
         "values": {k: v for k, v in request.query_params.items() if k.startswith("p.")},
         "compare": request.query_params.getlist("compare")}
    return _wizard(request, user, session, settings, q)


@router.post("/train")
async def start(request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    need(user, "member")
    form = await checked_form(request, user)
    q = {k: form.get(k) for k in ("dataset", "model", "strategy", "budget", "limit", "time_limit", "exhaustive",
                                  "model_name", "processes")}
    q["values"] = {k: v for k, v in form.items() if k.startswith("p.") and isinstance(v, str)}
    q["compare"] = form.getlist("compare")
    action = form.get("action", "train")
    if not q["dataset"]:
        return _wizard(request, user, session, settings, q, "Choose a dataset first.", 422)
    model = str(q["model"] or "")
    if not model:             # the dataset's task's default model (an encoder for chat data is refused)
        row = TenantScope(session, user.tenant_id).find(Dataset, str(q["dataset"]))
        model = dataset_task(row).default_model if row is not None else "minilm"
    try:
        limit = wizard.positive_int(q["limit"], "Rows to use")
        if action == "compare":
            return await _compare(request, user, session, settings, q, form, model, limit)
        name = str(q["strategy"] or "")
        spec = JobSpec(kind="train", dataset_id=q["dataset"], model=model, strategy=name, limit=limit,
                       params=wizard.params_from_form(name, form) if name else {},
                       processes=wizard.processes_from_form(name, q["processes"]),
                       model_name=str(form.get("model_name") or "").strip() or None)
        key = f"web-{form.get('idempotency_key')}" if form.get("idempotency_key") else None
        # The API's own create: the same checks (dataset, model, sandbox), the same audit entry.
        job, _ = await run_in_threadpool(create, session, user.principal, spec, key)
    except APIError as exc:
        return _wizard(request, user, session, settings, q, exc.message, exc.status if exc.status != 404 else 422)
    except (ConfigError, ValueError) as exc:
        message = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        return _wizard(request, user, session, settings, q, message, 422)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


TIME_LIMITS = [("", "No limit"), ("120", "2 minutes"), ("300", "5 minutes"), ("600", "10 minutes"),
               ("1800", "30 minutes"), ("3600", "1 hour")]


def time_limit(value) -> float | None:
    """The wizard's "Time limit for the comparison" in seconds (None: no limit)."""
    from ..engine.budget import BudgetError, parse_duration

    if value is None or not str(value).strip():
        return None
    try:
        return parse_duration(str(value))
    except BudgetError:
        raise ConfigError(f"Time limit for the comparison: {value!r} is not a duration; choose one in "
                          "the list.") from None


async def _compare(request, user, session, settings, q, form, model: str, limit: int | None):
    """One training job per strategy on the same dataset, rows and seed (the same split), tagged
    with a group id; with `base_job`, a finished run joins the group instead of running again.
    With a time limit, one compare job instead (a budget is a compare job's: it stops the
    comparison when the time is up, and unless `exhaustive` stops the candidates that fall behind)."""
    names = list(dict.fromkeys(q["compare"]))
    seconds, exhaustive = time_limit(form.get("time_limit")), form.get("exhaustive") in ("1", "on", "true")
    if seconds is not None:
        if form.get("base_job"):
            raise ConfigError("A time limit applies to a new comparison, not to one that includes a finished run.")
        return await _compare_job(session, user, q, form, model, limit, names, seconds, exhaustive)
    base = None
    if form.get("base_job"):
        base = TenantScope(session, user.tenant_id).get(Job, str(form["base_job"]), "job")
        if base.kind != "train" or base.spec.get("dataset_id") != q["dataset"]:
            raise ConfigError("That run cannot be compared here.")
        model, limit = base.spec.get("model", model), base.spec.get("limit")
    todo = [n for n in names if not base or n != base.spec.get("strategy")]
    if len(todo) + (1 if base else 0) < 2:
        raise ConfigError("Tick at least two strategies to compare.")
    gid = f"cmp-{uuid.uuid4().hex[:12]}"
    meta = {GROUP_KEY: gid} | ({BASE_KEY: base.id} if base else {})
    specs = [JobSpec(kind="train", dataset_id=q["dataset"], model=model, strategy=name, limit=limit,
                     seed=int(base.spec.get("seed", 0)) if base else 0, metadata=meta,
                     params=wizard.params_from_form(name, form)) for name in todo]
    try:            # all or nothing: every run is checked before the first one is queued
        for spec in specs:
            check_spec(TenantScope(session, user.tenant_id), spec)    # create() resolves it again
    except JobRejected as exc:
        raise ConfigError(str(exc)) from None
    for name, spec in zip(todo, specs):
        key = f"web-{form.get('idempotency_key')}-{name}" if form.get("idempotency_key") else None
        job, _ = await run_in_threadpool(create, session, user.principal, spec, key)
        gid = ((job.spec or {}).get("metadata") or {}).get(GROUP_KEY, gid)   # a repeated post: the first group
    return RedirectResponse(f"/comparisons/group/{gid}", status_code=303)


async def _compare_job(session, user, q, form, model: str, limit: int | None, names: list[str],
                       seconds: float, exhaustive: bool):
    """The comparison as one compare job with a time budget: its own page, one table."""
    if len(names) < 2:
        raise ConfigError("Tick at least two strategies to compare.")
    spec = JobSpec(kind="compare", dataset_id=q["dataset"], model=model, strategies=names, limit=limit,
                   strategy_params={n: p for n in names if (p := wizard.params_from_form(n, form))},
                   budget_seconds=seconds, exhaustive=exhaustive)
    key = f"web-{form.get('idempotency_key')}-compare" if form.get("idempotency_key") else None
    job, _ = await run_in_threadpool(create, session, user.principal, spec, key)
    return RedirectResponse(f"/comparisons/{job.id}", status_code=303)
