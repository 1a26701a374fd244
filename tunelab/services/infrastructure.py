"""The Infrastructure page and API: what this machine measured (`tunelab bench hardware`, stored by
hardware/store.py), how it changed from run to run, and what its speed means in money: dollars per
million training tokens, per thousand predictions, and the billing estimate of a typical job per
catalog model on this hardware.

Hardware results are the machine's, not a tenant's: every signed-in caller reads the same answer.
Nothing here measures anything; a request only reads the stored JSON files (and asks torch what
it sees), so it stays cheap however often the page is opened."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

from sqlalchemy.orm import Session

from ..billing import prices
from ..billing.devices import GPU_TYPES, cpu_cores
from ..billing.estimate import JobShape, estimate
from ..billing.money import usd
from ..billing.rates import usd_per_second
from ..hardware import store

log = logging.getLogger("tunelab.services")

COMMAND = "tunelab bench hardware --quick"
EMPTY = ("No hardware benchmark is stored for this machine yet. Run `tunelab bench hardware --quick` on it "
         "(a few minutes; without --quick, longer and more precise), or start one on a worker with "
         "POST /api/v1/infrastructure/benchmarks (a job), then reload.")
FORMATS = ("csv", "json")
# Rows of the benchmark that time a forward pass only (predictions), besides transfer strategies.
FORWARD_ROWS = ("forward", "inference", "predict")

# A typical job per task, as data the estimator reads like a dataset's stats: rows, mean tokens and
# a token-length histogram (bins in tokens). A task not listed here gets no typical job.
TYPICAL = {
    "text-classification": {"data": "5,000 short texts (about 24 tokens each), 5 labels", "rows": 5000, "labels": 5,
                            "histogram": {"bins": [4, 8, 16, 24, 32, 48, 64, 128],
                                          "counts": [300, 1400, 1500, 900, 500, 300, 100]}},
    "chat": {"data": "1,000 conversations (about 180 tokens each)", "rows": 1000, "labels": 0,
             "histogram": {"bins": [32, 64, 128, 256, 512, 1024], "counts": [100, 250, 350, 250, 50]}},
    "preference": {"data": "1,000 preference pairs (about 180 tokens each)", "rows": 1000, "labels": 0,
                   "histogram": {"bins": [32, 64, 128, 256, 512, 1024], "counts": [100, 250, 350, 250, 50]}},
}

CSV_COLUMNS = ["section", "worker", "run", "created", "name", "label", "unit", "value", "spread", "runs", "noisy",
               "model", "strategy", "kind", "precision", "batch", "seq_len", "samples_per_s", "tokens_per_s",
               "step_p50_s", "step_p95_s", "peak_mb", "mfu", "mfu_of", "usd_per_million_tokens",
               "usd_per_1k_predictions"]


class UnknownWorker(LookupError):
    pass


# ---- which machine --------------------------------------------------------------------------------
def workers(home: Path | None = None) -> list[str]:
    """The machines with a folder of results."""
    base = store.root(home)
    return sorted(p.name for p in base.glob("*") if p.is_dir()) if base.is_dir() else []


def pick_worker(home: Path | None = None, worker: str | None = None) -> str | None:
    """`worker` when it names a folder of results (UnknownWorker otherwise: the name never becomes
    a path unchecked); else this machine's, else the machine with the newest run."""
    known = workers(home)
    if worker is not None:
        if worker not in known:
            raise UnknownWorker(f"No hardware results for a machine named {worker!r}"
                                + (f"; there are results for {', '.join(known)}." if known else "."))
        return worker
    if store.worker_name() in known:
        return store.worker_name()
    newest = store.latest(None, home)
    return (newest or {}).get("worker") if (newest or {}).get("worker") in known else (known[0] if known else None)


# ---- live facts ----------------------------------------------------------------------------------
def live_device() -> dict:
    """This server as it runs now: cores, torch, CUDA and its GPUs (when torch sees any)."""
    out: dict = {"cpu_cores": cpu_cores(), "cpu_count": os.cpu_count(), "torch": None, "cuda": None, "gpus": []}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out["gpus"].append({"name": p.name, "memory_mb": int(p.total_memory // 2**20)})
    except Exception:       # no torch, or a broken driver: the page still shows what it can
        log.warning("could not read the GPUs", exc_info=True)
    return out


def priced_device(device: dict | None) -> tuple[str, int]:
    """The price sheet's device for a measured device: ("gpu:h100", 1) on a GPU, else ("cpu", its cores)."""
    device = device or {}
    gpus = device.get("gpus") or []
    if device.get("kind", "cpu") != "cpu" and gpus:
        name = str(gpus[0].get("name", "")).lower()
        return f"gpu:{next((t for t in GPU_TYPES if t in name), 'default')}", 1
    return "cpu", int(device.get("cores") or cpu_cores())


# ---- one run -------------------------------------------------------------------------------------
def _is_forward(strategy: str) -> bool:
    if strategy in FORWARD_ROWS:
        return True
    from ..strategies import ConfigError, get_strategy

    try:
        return get_strategy(strategy).family == "transfer"
    except ConfigError:
        return False


def model_rows(result: dict, per_second: float | None) -> list[dict]:
    """The run's model rows with their kind and costs (the bench's own $/1M tokens when it wrote one)."""
    out = []
    for m in result.get("models") or []:
        if not isinstance(m, dict) or not m.get("model") or not m.get("strategy"):
            continue            # not a row this version understands: skipped, not a failed page
        row = dict(m)
        row["kind"] = "prediction" if _is_forward(str(m.get("strategy", ""))) else "training"
        if row.get("usd_per_million_tokens") is None and per_second and m.get("tokens_per_s"):
            row["usd_per_million_tokens"] = per_second * 1e6 / m["tokens_per_s"]
        if row["kind"] == "prediction" and per_second and m.get("samples_per_s"):
            row["usd_per_1k_predictions"] = per_second * 1000 / m["samples_per_s"]
        out.append(row)
    return out


def figures_of(result: dict) -> list[dict]:
    return [f for f in result.get("figures") or [] if isinstance(f, dict) and f.get("name")]


def _percent(change: dict, higher_is_better: bool) -> float:
    ratio = change.get("ratio") or 1.0
    return (1 - ratio) * 100 if higher_is_better else (ratio - 1) * 100


def comparison(result: dict, runs: list[dict]) -> dict | None:
    """The stored comparison with each regression said in words: "dense matmul, fp32: 20% slower
    than the run on 2026-12-03"."""
    comp = result.get("comparison")
    if not isinstance(comp, dict) or not comp:
        return None
    figures = {f["name"]: f for f in figures_of(result)}
    when = comp.get("against_created") or next((r.get("created") for r in runs if r.get("id") == comp.get("against")), None)
    day = (when or "")[:10] or "before"
    changes, messages = [], []
    for c in comp.get("changes") or []:
        if not isinstance(c, dict) or not c.get("name"):
            continue
        f = figures.get(c.get("name"), {})
        name = str(c.get("name"))
        label = f.get("label") or (name.removesuffix(" tokens/s").replace("/", " ") + ", tokens per second"
                                   if name.endswith(" tokens/s") else name)
        pct = _percent(c, f.get("higher_is_better", True))
        word = "slower" if pct > 0 else "faster"
        message = (f"{label}: {abs(pct):.0f}% {word} than the run on {day}" if abs(pct) >= 0.5
                   else f"{label}: the same as the run on {day}")
        changes.append({**c, "message": message})
        if c.get("regressed"):
            messages.append(message)
    return {**comp, "against_created": when, "changes": changes, "messages": messages}


def run_out(result: dict, runs: list[dict], per_second: float | None) -> dict:
    return {"id": str(result.get("id")), "created": result.get("created"), "worker": result.get("worker"),
            "quick": result.get("quick"), "sweep": result.get("sweep"), "seconds": result.get("seconds"),
            "device": result.get("device") or {},
            "figures": figures_of(result), "models": model_rows(result, per_second),
            "comparison": comparison(result, runs)}


def history(runs: list[dict]) -> list[dict]:
    """Each figure's median over the runs, oldest first (a chart each), in the latest run's order."""
    series: dict[str, dict] = {}
    for r in runs:
        for f in figures_of(r):
            if not isinstance(f.get("median"), (int, float)):
                continue
            s = series.setdefault(f["name"], {"name": f["name"], "points": []})
            s.update(label=f.get("label"), unit=f.get("unit"), higher_is_better=f.get("higher_is_better", True))
            s["points"].append({"id": str(r.get("id")), "created": r.get("created"), "median": f["median"]})
    order = [f["name"] for f in figures_of(runs[-1])] if runs else []
    return sorted(series.values(), key=lambda s: order.index(s["name"]) if s["name"] in order else len(order))


# ---- cost ------------------------------------------------------------------------------------------
def costs(rows: list[dict], device: str, units: int) -> dict:
    sheet, per_second = prices.current(), usd_per_second(device, units)
    basis = {"device": device, "units": units, "price_version": sheet.version, "usd_per_hour": per_second * 3600,
             "usd_per_second": per_second, "serving_usd_per_1k_requests": sheet.per_1k_requests / 1e6}
    pick = ("model", "strategy", "usd_per_million_tokens", "usd_per_1k_predictions", "tokens_per_s", "samples_per_s")
    return {"basis": basis,
            "training": [{k: r.get(k) for k in pick} for r in rows if r["kind"] == "training"],
            "predictions": [{k: r.get(k) for k in pick} for r in rows if r["kind"] == "prediction"]}


def _mean(hist: dict) -> float:
    bins, counts = hist["bins"], hist["counts"]
    mids = [(a + b) / 2 for a, b in zip(bins, bins[1:])]
    return sum(m * c for m, c in zip(mids, counts)) / sum(counts)


def _tasks_for(model) -> list:
    """The tasks a catalog model is offered for: those that need its kind, or (no kind needed) the
    task the catalog names for it (the wizard's rule: encoders classify, causal LMs chat)."""
    from ..strategies import TASKS, load_builtin

    load_builtin()
    return [t for t in TASKS.values()
            if (t.model_kind == model.kind) or (t.model_kind is None and model.task == t.name)]


def typical_jobs(session: Session | None, device: str, units: int) -> list[dict]:
    """The billing estimate (billing.estimate, the one a job reserves against) of a typical job per
    catalog model and strategy on this device; strategies that need CUDA only on a GPU."""
    from ..models.catalog import list_models
    from ..strategies import ConfigError, parse_params, strategies_of

    gpu = device.startswith("gpu")
    out = []
    for model in list_models():
        for task in _tasks_for(model):
            typical = TYPICAL.get(task.name)
            if typical is None:
                continue
            for strategy in strategies_of(task):
                if not strategy.in_wizard or (strategy.needs_cuda and not gpu):
                    continue
                try:
                    params = parse_params(strategy, None).model_dump()
                    shape = JobShape(strategy=strategy.name, model=model.name, model_params=model.parameters or 110_000_000,
                                     rows=typical["rows"], test_rows=None, mean_tokens=_mean(typical["histogram"]),
                                     labels=typical["labels"], params=params, family=strategy.family,
                                     file_rows=typical["rows"], length_histogram=typical["histogram"],
                                     max_length=model.max_length)
                    est = estimate(session, [shape], device=device, units=units)
                except (ConfigError, KeyError, ValueError):
                    log.warning("no typical estimate", exc_info=True,
                                extra={"model": model.name, "strategy": strategy.name})
                    continue
                out.append({"model": model.name, "model_name": model.display_name or model.name, "task": task.name,
                            "task_title": task.title, "data": typical["data"], "rows": typical["rows"],
                            "strategy": strategy.name, "device": est.device, "wall_seconds": est.wall_seconds,
                            "wall_seconds_range": [est.wall_low_seconds, est.wall_high_seconds], "cost": est.cost,
                            "cost_usd": usd(est.cost), "cost_range_usd": [usd(est.cost_low), usd(est.cost_high)],
                            "price_version": est.price_version})
    return out


# ---- the whole page --------------------------------------------------------------------------------
def overview(home: Path | None = None, session: Session | None = None, worker: str | None = None) -> dict:
    """Everything the Infrastructure page and GET /api/v1/infrastructure show (UnknownWorker for a
    `worker` with no results)."""
    chosen = pick_worker(home, worker)
    runs = store.history(chosen, home) if chosen else []
    out = {"object": "infrastructure", "worker": chosen, "workers": workers(home), "has_results": bool(runs),
           "runs": len(runs), "inventory": {"measured": None, "live": live_device()}, "latest": None, "history": [],
           "typical_jobs": []}
    latest = runs[-1] if runs else None
    device, units = priced_device(latest.get("device") if latest else None)
    if latest is None:
        out["message"] = EMPTY
    else:
        per_second = usd_per_second(device, units)
        out["inventory"]["measured"] = latest.get("device") or {}
        out["latest"] = run_out(latest, runs, per_second)
        out["history"] = history(runs)
        out["costs"] = costs(out["latest"]["models"], device, units)
    try:
        out["typical_jobs"] = typical_jobs(session, device, units)
    except Exception:           # the estimate is extra: never take the page down with it
        log.warning("typical jobs could not be estimated", exc_info=True)
    return out


# ---- export ------------------------------------------------------------------------------------------
def export_data(home: Path | None = None, worker: str | None = None) -> dict:
    """The latest run's figures and model table (with costs), as the JSON export sends them."""
    chosen = pick_worker(home, worker)
    latest = store.latest(chosen, home) if chosen else None
    if latest is None:
        return {"object": "infrastructure.export", "worker": chosen, "run": None, "created": None, "device": None,
                "figures": [], "models": []}
    device, units = priced_device(latest.get("device"))
    return {"object": "infrastructure.export", "worker": chosen, "run": str(latest.get("id")),
            "created": latest.get("created"), "device": latest.get("device") or {},
            "figures": figures_of(latest),
            "models": model_rows(latest, usd_per_second(device, units))}


def export(fmt: str, home: Path | None = None, worker: str | None = None) -> str:
    """`csv`: one row a figure then one a model row (a `section` column tells them apart), for a
    spreadsheet; `json`: export_data as text."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    data = export_data(home, worker)
    if fmt == "json":
        return json.dumps(data, indent=1)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    common = {"worker": data["worker"], "run": data["run"], "created": data["created"]}
    for f in data["figures"]:
        w.writerow({**common, "section": "figure", **f, "value": f.get("median")})
    for m in data["models"]:
        w.writerow({**common, "section": "model", **m, "name": f"{m.get('model')}/{m.get('strategy')}"})
    return buf.getvalue()
