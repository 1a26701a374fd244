"""`tunelab bench hardware`: measure the machine, then run a short real training burst of every
catalog model x benchmarked strategy, and store the figures (hardware/store.py).

A burst is a real run through the engine (run_strategy), on synthetic data of typical lengths:
the figures are those a job would get, from the same counters (its steps' rows, tokens and times,
hardware/efficiency.py). Each burst runs in its own process, so one row's memory does not inflate
the next's peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..billing.devices import PROBE_FIGURE, measure_probe_ms
from ..hardware import probes, store
from ..training.progress import ProgressEvent, ProgressFn, null_progress

# Synthetic text: common words, so the tokenizer produces ordinary word pieces of a typical
# length (an intent or a support ticket: ~20 tokens; chat answers a little longer).
WORDS = ("the a to of and in is it you that for on my was with be have this are not but at your "
         "can card account money transfer payment bank why how what when please help need send "
         "received still pending cancel order delivery refund charge fee balance app phone "
         "number change address verify identity declined limit top up cash machine exchange "
         "rate statement interest loan mortgage savings branch open close report lost stolen").split()
ROWS = {"quick": 320, "full": 640}
TEST_ROWS = 32
LABELS = 4


def _texts(rng: np.random.Generator, n: int, mean_words: int) -> list[str]:
    lengths = np.clip(rng.poisson(mean_words, n), 3, 4 * mean_words)
    return [" ".join(rng.choice(WORDS, k)) for k in lengths]


def _classification(path: Path, rows: int, rng) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i, t in enumerate(_texts(rng, rows, 16)):
            w.writerow([t, f"label_{i % LABELS}"])


def _chat(path: Path, rows: int, rng) -> None:
    questions, answers = _texts(rng, rows, 12), _texts(rng, rows, 24)
    with path.open("w") as f:
        for q, a in zip(questions, answers):
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")


# Tasks the sweep can make data for (by the task's name: what its files look like).
WRITERS = {"text-classification": (_classification, ".csv"), "chat": (_chat, ".jsonl")}


def plan_rows(quick: bool) -> list[tuple[str, str]]:
    """(catalog model, strategy) pairs: a strategy runs on the models of the kind its task's
    default model has; quick sweeps only the task's default model and the strategies marked quick."""
    from ..models import list_models, resolve_model
    from ..strategies import available, get_strategy

    wanted = {"quick"} if quick else {"quick", "full"}
    rows = []
    for model in list_models():
        for name in sorted(available()):
            s = get_strategy(name)
            if s.bench not in wanted or s.unavailable() or s.task.name not in WRITERS:
                continue
            default = resolve_model(s.task.default_model)
            if default.kind != model.kind or (quick and default.name != model.name):
                continue
            rows.append((model.name, name))
    return sorted(rows, key=lambda r: (r[0], get_strategy(r[1]).rank))


def burst(model_name: str, strategy_name: str, quick: bool, seed: int = 0, params: dict | None = None) -> dict:
    """One row, in this process: a short real run on synthetic data, as a job would do it."""
    from ..models import resolve_model
    from ..strategies import DataSpec, get_strategy
    from .data import prepare_data
    from .run import execute, plan_strategy

    strategy = get_strategy(strategy_name)
    model = resolve_model(model_name)
    writer, ext = WRITERS[strategy.task.name]
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        train, test = Path(tmp) / f"train{ext}", Path(tmp) / f"test{ext}"
        writer(train, ROWS["quick" if quick else "full"], rng)
        writer(test, TEST_ROWS, rng)
        data = prepare_data(DataSpec(train, test, seed=seed), model)
        planned = plan_strategy(model, data, strategy_name, {**strategy.bench_params, **(params or {})},
                                work_dir=Path(tmp) / "work")
        planned.ctx.cache_dir = Path(tmp) / "cache"     # cold: features from a cache would measure nothing
        result = execute(planned)
    m = result.metrics
    eff = m.get("efficiency") or {}
    rows = eff.get("rows") or 0
    return {"model": model_name, "strategy": strategy_name, "phase": eff.get("phase"),
            "precision": eff.get("precision"), "batch": strategy.bench_params.get("batch_size"),
            "seq_len": round(eff["tokens"] / rows, 1) if rows else None, "steps": eff.get("steps"),
            "samples_per_s": eff.get("samples_per_s"), "tokens_per_s": eff.get("tokens_per_s"),
            "step_p50_s": eff.get("step_p50_s"), "step_p95_s": eff.get("step_p95_s"),
            "peak_mb": m.get("peak_rss_mb"), "work_memory_mb": eff.get("work_memory_mb"),
            "achieved_gflops": eff.get("achieved_gflops"),
            "flops_per_token": (eff["model_flops"] / eff["tokens"]) if eff.get("model_flops") and eff.get("tokens") else None,
            "usd_per_million_tokens": eff.get("usd_per_million_tokens"), "seconds": m.get("train_seconds")}


def _burst_in_child(model: str, strategy: str, quick: bool, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "tunelab.engine.sweep", model, strategy, "--quick" if quick else "--full"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "strategy": strategy, "error": f"took longer than {timeout:.0f} s"}
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    try:
        return json.loads(last[0])
    except ValueError:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"model": model, "strategy": strategy, "error": f"exit {proc.returncode}: {tail[0][:300]}"}


def measure(quick: bool = True, home: Path | None = None, progress: ProgressFn = null_progress,
            rows: list[tuple[str, str]] | None = None, save: bool = True) -> dict:
    """The whole benchmark: device figures, then the model sweep; stored and compared with the
    worker's previous run. quick: fewer repetitions and only the default model's quick rows
    (under two minutes on a 2-core machine)."""
    import torch

    t0 = time.perf_counter()
    runs = 5 if quick else 9
    steps: list[tuple[str, object]] = [("matmul fp32", lambda: probes.matmul("fp32", runs=runs)),
                                       ("matmul bf16", lambda: probes.matmul("bf16", runs=runs)),
                                       ("memory bandwidth", lambda: probes.memory_bandwidth(runs=runs)),
                                       ("disk read", lambda: probes.disk_read(store.root(home), runs=3)),
                                       ("estimator probe", lambda: probes.figure_of(
                                           PROBE_FIGURE, "billing estimator's speed probe", "ms",
                                           [measure_probe_ms() for _ in range(runs)], higher_is_better=False,
                                           note="a MiniLM layer's matmul: job estimates scale with it"))]
    if torch.cuda.is_available():
        steps += [(f"GPU matmul {p}", lambda p=p: probes.matmul(p, "cuda", runs=runs))
                  for p in ("fp32", "tf32", "bf16", "fp16")]
        steps += [("GPU memory bandwidth", lambda: probes.memory_bandwidth("cuda", runs=runs)),
                  ("host<->GPU copies", lambda: probes.host_device_copies("cuda", runs=runs))]
    rows = plan_rows(quick) if rows is None else rows
    total, figures, models = len(steps) + len(rows), [], []
    for i, (label, fn) in enumerate(steps):
        progress(ProgressEvent("bench", i, total, message=label))
        out = fn()
        figures += [f.to_dict() for f in (out if isinstance(out, list) else [out])]
    peaks = {f["name"]: f["median"] for f in figures}
    for j, (model, strategy) in enumerate(rows):
        progress(ProgressEvent("bench", len(steps) + j, total, message=f"{model} {strategy}"))
        row = _burst_in_child(model, strategy, quick, timeout=300 if quick else 1800)
        peak = peaks.get(f"matmul_{row.get('precision')}" + ("_gpu" if torch.cuda.is_available() else ""))
        if row.get("achieved_gflops") and peak:
            row.update(mfu=row["achieved_gflops"] / peak, mfu_of=f"matmul_{row['precision']}")
        models.append(row)
    progress(ProgressEvent("bench", total, total))
    result = {"id": store.new_id(), "quick": quick, "seconds": round(time.perf_counter() - t0, 1),
              "device": probes.identity(), "figures": figures, "models": models}
    if save:
        path = store.save(result, home)
        result = {**json.loads(path.read_text()), "path": str(path)}   # as stored: with its comparison
    return result


def main(argv: list[str]) -> None:
    """The child of one burst: prints its row as the last line of stdout."""
    from ..logs import quiet_libraries

    quiet_libraries()
    model, strategy, mode = argv[:3]
    print(json.dumps(burst(model, strategy, quick=mode == "--quick")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
