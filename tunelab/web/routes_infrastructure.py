"""Infrastructure: how fast this machine is (the stored `tunelab bench hardware` runs), whether it
got slower, and what its speed costs, in words a non-programmer can read. The numbers come from
services.infrastructure, the same as GET /api/v1/infrastructure; the downloads are the API's own
export route, for a browser session. Any signed-in member of any organisation sees the same page:
the hardware is the platform's, not a tenant's. Members (whoever may start a training job) also get
a button that measures the machine again: a benchmark job on a worker (the API's own create, so it
is estimated, billed and audited like any job), followed on its job page."""

from __future__ import annotations

import math
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..api.deps import SessionDep
from ..api.errors import APIError
from ..api.routes.jobs import create
from ..billing.estimate import bench_estimate
from ..billing.money import to_micro
from ..db.models import Job
from ..db.scoped import TenantScope
from ..jobs.spec import BENCH, JobSpec
from ..services import infrastructure as service
from .deps import PageError, UserDep, checked_form, need, render

router = APIRouter(include_in_schema=False)
CHART_W, CHART_H, PAD = 240, 56, 4
# Each figure in plain words (the bench's names; one it adds later shows without a line).
EXPLAIN = {
    "matmul_fp32": "Raw arithmetic speed at full precision (fp32): billions of multiply-adds a second. "
                   "Training and predicting are mostly this.",
    "matmul_tf32": "Arithmetic at the GPU's TF32 precision: nearly full precision, much faster on recent GPUs.",
    "matmul_bf16": "Arithmetic at half precision (bf16): faster on chips built for it, and what training uses "
                   "where it is.",
    "matmul_fp16": "Arithmetic at half precision (fp16), the older half-precision format.",
    "memory_bandwidth": "How fast data moves between memory and the processor: large models are often held back "
                        "by this.",
    "disk_read": "How fast files load from disk: datasets and model weights at the start of every job.",
    "h2d": "Copying data from the computer's memory to the GPU.",
    "d2h": "Copying results back from the GPU.",
    "estimator_probe": "The small timed calculation cost estimates use to tell how fast this machine is (lower "
                       "is faster).",
}


def number(x) -> str:
    """101.2 -> "101", 12.5 -> "12.5", 0.312 -> "0.31"; None -> "—"."""
    if x is None:
        return "—"
    x = float(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def dollars(x) -> str:
    """A rate in dollars, with the digits that matter: $1.25, $0.017, $0.000056."""
    if x is None:
        return "—"
    x = float(x)
    if x >= 1:
        return f"${x:,.2f}"
    if x <= 0:
        return "$0"
    text = f"{x:.{1 - math.floor(math.log10(x))}f}".rstrip("0")     # two significant digits
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def explain(name: str) -> str:
    """A figure in plain words; a GPU's figure (`matmul_fp32_gpu`) as its CPU namesake."""
    return EXPLAIN.get(name) or EXPLAIN.get(name.removesuffix("_gpu"), "")


def chart(points: list[dict]) -> dict | None:
    """A small line chart (inline SVG, no script) of a figure's medians, run by run."""
    values = [p["median"] for p in points]
    if len(values) < 2:
        return None
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = (CHART_W - 2 * PAD) / (len(values) - 1)
    xy = [(PAD + i * step, CHART_H - PAD - (v - lo) / span * (CHART_H - 2 * PAD) if hi > lo else CHART_H / 2)
          for i, v in enumerate(values)]
    return {"w": CHART_W, "h": CHART_H, "line": " ".join(f"{x:.1f},{y:.1f}" for x, y in xy),
            "dots": [{"x": round(x, 1), "y": round(y, 1)} for x, y in xy],
            "lo": number(lo), "hi": number(hi), "steady": hi == lo, "first": (points[0].get("created") or "")[:10],
            "last": (points[-1].get("created") or "")[:10],
            "rows": [{"when": (p.get("created") or "")[:16].replace("T", " "), "value": number(p["median"])}
                     for p in points]}


def _figures(latest: dict, history: list[dict]) -> list[dict]:
    regressed = set((latest.get("comparison") or {}).get("regressions") or [])
    series = {h["name"]: h for h in history}
    out = []
    for f in latest.get("figures") or []:
        hist = series.get(f.get("name"), {})
        out.append({"name": f.get("name"), "label": f.get("label") or f.get("name"), "unit": f.get("unit") or "",
                    "value": number(f.get("median")), "noisy": bool(f.get("noisy")),
                    "spread": f"{100 * float(f.get('spread') or 0):.0f}%", "runs": f.get("runs"),
                    "regressed": f.get("name") in regressed, "chart": chart(hist.get("points") or []),
                    "explain": " ".join(x for x in (explain(str(f.get("name"))), f.get("note")) if x)})
    return out


def history_table(history: list[dict]) -> dict | None:
    """Every stored run as a row, a column per figure (the charts' numbers, readable)."""
    runs: dict[str, dict] = {}
    for h in history:
        for p in h["points"]:
            runs.setdefault(p["id"], {"created": p.get("created") or "", "values": {}})["values"][h["name"]] = p["median"]
    if len(runs) < 2:
        return None
    ordered = sorted(runs.items(), key=lambda kv: (kv[1]["created"], kv[0]))
    return {"columns": [{"label": h.get("label") or h["name"], "unit": h.get("unit")} for h in history],
            "rows": [{"when": r["created"][:16].replace("T", " ") or rid,
                      "values": [number(r["values"].get(h["name"])) for h in history]} for rid, r in reversed(ordered)]}


def _models(rows: list[dict]) -> list[dict]:
    return [{"model": r.get("model"), "strategy": r.get("strategy"), "kind": r.get("kind"),
             "precision": r.get("precision") or "—", "batch": r.get("batch"), "seq_len": r.get("seq_len"),
             "tokens": number(r.get("tokens_per_s")), "samples": number(r.get("samples_per_s")),
             "p50": number(r.get("step_p50_s")), "p95": number(r.get("step_p95_s")),
             "peak": number(r.get("peak_mb")),
             "mfu": f"{100 * float(r['mfu']):.1f}%" if r.get("mfu") is not None else "—", "mfu_of": r.get("mfu_of"),
             "per_million": dollars(r.get("usd_per_million_tokens")),
             "per_1k": dollars(r.get("usd_per_1k_predictions")) if r.get("usd_per_1k_predictions") is not None else None}
            for r in rows]


def _typical(jobs: list[dict]) -> list[dict]:
    """Grouped by model: one block a catalog model (and task), a row a strategy."""
    groups: dict[tuple, dict] = {}
    for j in jobs:
        g = groups.setdefault((j["model"], j["task"]), {"model": j["model"], "name": j.get("model_name") or j["model"],
                                                        "task": j.get("task_title") or j["task"], "data": j["data"],
                                                        "rows": []})
        low, high = j["wall_seconds_range"]
        g["rows"].append({"strategy": j["strategy"], "seconds": j["wall_seconds"], "low": low, "high": high,
                          "cost": dollars(j["cost"] / 1e6),
                          "cost_range": [dollars(to_micro(v) / 1e6) for v in j["cost_range_usd"]]})
    return list(groups.values())


def benchmark_choices(session) -> list[dict]:
    """The button's options with what each costs (the estimate the job reserves against)."""
    out = []
    for name, quick, sweep, words in (("quick", True, True, "quick: the default model"),
                                      ("full", False, True, "full sweep: every catalog model"),
                                      ("device", True, False, "device figures only")):
        try:
            est = bench_estimate(session, quick=quick, sweep=sweep)
            out.append({"name": name, "words": words, "seconds": est.wall_seconds, "cost": dollars(est.cost / 1e6)})
        except (KeyError, ValueError):
            out.append({"name": name, "words": words, "seconds": None, "cost": None})
    return out


def _page(request: Request, user, session, worker: str | None, error: str | None = None, status: int = 200):
    settings = request.app.state.settings
    try:
        data = service.overview(settings.home, session, service.pick_worker(settings.home, worker))
    except service.UnknownWorker as exc:
        raise PageError(404, "Not found", str(exc)) from None
    latest = data.get("latest") or {}
    costs = data.get("costs") or {}
    basis = costs.get("basis") or {}
    runs = TenantScope(session, user.tenant_id).list(Job, Job.kind == BENCH, order_by=Job.created_at.desc(), limit=5)
    return render(request, "infrastructure.html", {
        "data": data, "latest": latest, "history_table": history_table(data["history"]), "measured": data["inventory"].get("measured") or {},
        "live": data["inventory"]["live"], "figures": _figures(latest, data["history"]) if latest else [],
        "models": _models(latest.get("models") or []),
        "regressions": (latest.get("comparison") or {}).get("messages") or [],
        "against": (latest.get("comparison") or {}).get("against_created"),
        "training_costs": [{"model": c["model"], "strategy": c["strategy"], "value": dollars(c["usd_per_million_tokens"])}
                           for c in costs.get("training") or [] if c.get("usd_per_million_tokens") is not None],
        "prediction_costs": [{"model": c["model"], "strategy": c["strategy"],
                              "value": dollars(c["usd_per_1k_predictions"]), "rate": number(c.get("samples_per_s"))}
                             for c in costs.get("predictions") or [] if c.get("usd_per_1k_predictions") is not None],
        "basis": basis, "per_hour": dollars(basis.get("usd_per_hour")) if basis else None,
        "serving": dollars(basis.get("serving_usd_per_1k_requests")) if basis.get("serving_usd_per_1k_requests") else None,
        "typical": _typical(data.get("typical_jobs") or []), "command": service.COMMAND,
        "worker": worker, "bench_jobs": runs, "bench_error": error,
        "bench_choices": benchmark_choices(session) if user.can("member") else [],
        "idempotency_key": uuid.uuid4().hex}, status=status)


@router.get("/infrastructure")
def infrastructure(request: Request, user: UserDep, session: SessionDep, worker: str | None = None):
    return _page(request, user, session, worker)


@router.post("/infrastructure/benchmarks")
async def run_benchmark(request: Request, user: UserDep, session: SessionDep):
    """The "Run the benchmark" button: quick by default; `full` (every catalog model) and
    `device_only` (no model runs) are its checkboxes. The job's page follows it."""
    need(user, "member")
    form = await checked_form(request, user)
    ticked = {k for k in ("full", "device_only") if form.get(k) in ("1", "on", "true")}
    spec = JobSpec(kind=BENCH, quick="full" not in ticked, sweep="device_only" not in ticked)
    key = f"web-{form.get('idempotency_key')}" if form.get("idempotency_key") else None
    try:        # the API's own create: the same checks (sandbox, quotas, credit), the same audit entry
        job, _ = await run_in_threadpool(create, session, user.principal, spec, key)
    except APIError as exc:
        return _page(request, user, session, None, exc.message, exc.status)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/infrastructure/export")
def export(request: Request, user: UserDep, format: Literal["csv", "json"] = "csv", worker: str | None = None):
    """The API's export (GET /api/v1/infrastructure/export), for a browser session."""
    from ..api.errors import APIError
    from ..api.routes.infrastructure import export as api_export

    try:
        return api_export(user.principal, request.app.state.settings, format, worker)
    except APIError as exc:
        raise PageError(exc.status, "Not found", exc.message) from None
