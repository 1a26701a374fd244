"""A job's efficiency from what its steps counted (training/work.py) and what the model is
(hardware/flops.py): tokens/s, samples/s, step-time percentiles and MFU, the model FLOPs done per
second over the measured matmul peak of the precision the job ran in (PaLM's definition: useful
work only, so padding and recomputation lower it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .flops import FlopModel


def matmul_precision(precision: str) -> str:
    """The run's autocast setting ("no", "bf16", "fp16") as the benchmark's figure name."""
    return {"no": "fp32"}.get(precision, precision)


def model_flops(work: dict, fm: FlopModel | None, mode: str) -> float | None:
    if fm is None or not work.get("rows"):
        return None
    if mode == "forward":
        return fm.forward(work["rows"], work["tokens"], work["tokens_sq"])
    return fm.training(work["rows"], work["tokens"], work["tokens_sq"], mode=mode)


def efficiency(work: dict, flops: float | None, peak: tuple[float, str] | None, precision: str,
               peak_rss_mb: float | None = None) -> dict | None:
    """The figures a job page shows; None when the run did no timed work (a cached encoder).
    peak_rss_mb: the run's peak memory, of which the part over the memory at the work's start
    (`work_memory_mb`) is what the work itself needed."""
    seconds = work.get("seconds") or 0.0
    if seconds <= 0 or not work.get("rows"):
        return None
    out = {"phase": work.get("phase", "training"), "rows": work["rows"], "tokens": work["tokens"],
           "seconds": round(seconds, 4), "steps": work.get("steps", 0),
           "tokens_per_s": work["tokens"] / seconds, "samples_per_s": work["rows"] / seconds,
           "step_p50_s": work.get("step_p50_s"), "step_p95_s": work.get("step_p95_s"),
           "precision": matmul_precision(precision), "model_flops": flops, "achieved_gflops": None,
           "peak_gflops": None, "peak_source": None, "mfu": None, "work_memory_mb": None}
    if peak_rss_mb and work.get("base_rss_mb") is not None:
        out["work_memory_mb"] = max(peak_rss_mb - work["base_rss_mb"], 0.0)
    if flops:
        out["achieved_gflops"] = flops / seconds / 1e9
        if peak and peak[0]:
            out.update(peak_gflops=peak[0], peak_source=peak[1], mfu=out["achieved_gflops"] / peak[0])
    return out


def training_mode(model) -> str:
    """"adapter" for a PEFT-wrapped model (its base frozen: no weight gradients there), else "full"."""
    return "adapter" if getattr(model, "peft_config", None) else "full"


def work_note(summary: dict, model, mode: str | None = None) -> dict:
    """What a strategy leaves in ctx.notes["work"]: the counts, how the model was run, and the model
    FLOPs they add up to (None for an architecture the analytic count does not know)."""
    from .flops import flop_model_for

    mode = mode or training_mode(model)
    try:
        fm = flop_model_for(model)
    except (ValueError, AttributeError):
        fm = None
    return {**summary, "mode": mode, "model_flops": model_flops(summary, fm, mode)}
