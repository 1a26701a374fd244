"""Where a data-parallel MiniLM `full` step's time goes on this machine: one step of the loop's
shape (bf16 autocast where native, fused AdamW, frozen word embeddings, DDP as accelerate makes
it: 25 MB buckets, gradient_as_bucket_view off) timed in variants, interleaved round by round in
one pair of processes, so that the load of the moment weighs on every variant alike:

  1x1 b32      rank 0 alone (rank 1 waits at a barrier), the global batch of 32, 1 thread
  1x1 b16      rank 0 alone, 16 rows (what each of 2 ranks computes)
  1x2 b32      rank 0 alone on 2 threads
  2x1          both ranks, 16 rows each, DDP (the loop's configuration)
  2x1 no sync  the same without the all-reduce (DDP's no_sync): the compute alone
  2x1 view     DDP with gradient_as_bucket_view (no copy of the gradients into buckets)
  2x1 b32      32 rows each (a global batch of 64)

Wall seconds are each variant's median over the rounds; CPU seconds are the process's (gloo's
threads included), which the load moves least.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

VARIANTS = ("1x1 b32", "1x1 b16", "1x2 b32", "2x1", "2x1 no sync", "2x1 view", "2x1 b32")


def _rank(rank: int, store: str, rounds: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from tunelab.models import resolve_model
    from tunelab.models.device import autocast, best_precision
    from tunelab.models.loading import load_classifier

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    base = load_classifier(resolve_model("minilm").path, ["ham", "spam"])
    base.set_attn_implementation("eager")
    base.get_input_embeddings().weight.requires_grad_(False)
    models = {"plain": base,
              "ddp": DDP(copy.deepcopy(base), bucket_cap_mb=25, gradient_as_bucket_view=False),
              "view": DDP(copy.deepcopy(base), bucket_cap_mb=25, gradient_as_bucket_view=True)}
    optimizers = {k: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-5, fused=True)
                  for k, m in models.items()}
    precision = best_precision("cpu")
    ids = torch.randint(1000, 20000, (64, 26))
    labels = torch.randint(0, 2, (64,))

    def step(model: str, rows: slice, sync: bool = True) -> tuple[float, float]:
        m, x, y = models[model], ids[rows], labels[rows]
        wall, cpu = time.perf_counter(), time.process_time()
        with (m.no_sync() if not sync else nullcontext()):
            with autocast("cpu", precision):
                logits = m(input_ids=x, attention_mask=torch.ones_like(x)).logits
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
        optimizers[model].step()
        optimizers[model].zero_grad(set_to_none=True)
        return time.perf_counter() - wall, time.process_time() - cpu

    def alone(rows: slice, threads: int = 1):
        if rank != 0:
            return None
        torch.set_num_threads(threads)
        try:
            return step("plain", rows)
        finally:
            torch.set_num_threads(1)

    mine16, mine32 = slice(rank * 16, rank * 16 + 16), slice(rank * 32, rank * 32 + 32)
    cases = {"1x1 b32": lambda: alone(slice(0, 32)), "1x1 b16": lambda: alone(slice(0, 16)),
             "1x2 b32": lambda: alone(slice(0, 32), threads=2), "2x1": lambda: step("ddp", mine16),
             "2x1 no sync": lambda: step("ddp", mine16, sync=False), "2x1 view": lambda: step("view", mine16),
             "2x1 b32": lambda: step("ddp", mine32)}
    timed: dict[str, list] = {k: [] for k in VARIANTS}
    for r in range(rounds + 1):                  # round 0 warms every variant up
        for name in VARIANTS:
            dist.barrier()
            t = cases[name]()
            if r and t is not None:
                timed[name].append(t)
    dist.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps({k: {"wall_s": statistics.median(w for w, _ in v),
                                             "cpu_s": statistics.median(c for _, c in v)} for k, v in timed.items()}))
    dist.destroy_process_group()


def measure(rounds: int = 6) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        out = Path(tmp) / "result.json"
        mp.start_processes(_rank, args=(str(Path(tmp) / "store"), rounds, str(out)), nprocs=2, start_method="spawn")
        return json.loads(out.read_text())


def ratios(b: dict) -> dict:
    """Scaling efficiency = one 1x1 step's work over 2 ranks' time; in wall seconds (under the
    load of the moment) and in CPU seconds (as if each rank had a core to itself)."""
    one = b["1x1 b32"]

    def eff(key: str, work: float = 1.0) -> dict:
        return {"wall": work * one["wall_s"] / (2 * b[key]["wall_s"]),
                "cpu": work * one["cpu_s"] / (2 * b[key]["cpu_s"])}

    return {"efficiency_2x1": eff("2x1"), "efficiency_2x1_no_allreduce": eff("2x1 no sync"),
            "efficiency_2x1_bucket_view": eff("2x1 view"), "efficiency_2x1_global_64": eff("2x1 b32", work=2.0),
            "threads_1x2_over_1x1_wall": one["wall_s"] / b["1x2 b32"]["wall_s"],
            "small_batch_cost_cpu": b["1x1 b16"]["cpu_s"] / (one["cpu_s"] / 2),
            "allreduce_cpu_s": b["2x1"]["cpu_s"] - b["2x1 no sync"]["cpu_s"],
            "allreduce_wall_s": b["2x1"]["wall_s"] - b["2x1 no sync"]["wall_s"],
            "bucket_view_saves_cpu_s": b["2x1"]["cpu_s"] - b["2x1 view"]["cpu_s"]}


def table(b: dict) -> str:
    r = ratios(b)
    lines = ["| one step (MiniLM full, 26 tokens a row), interleaved | wall s (median) | CPU s of rank 0 (median) |",
             "|---|---:|---:|"]
    lines += [f"| {k} | {v['wall_s']:.3f} | {v['cpu_s']:.3f} |" for k, v in b.items()]
    lines += ["",
              "| scaling efficiency of 2 x 1 (16 rows a rank) | wall | CPU |", "|---|---:|---:|"]
    for label, key in (("as the loop runs it (DDP, buckets copied)", "efficiency_2x1"),
                       ("without the all-reduce (the compute alone)", "efficiency_2x1_no_allreduce"),
                       ("gradient_as_bucket_view=True", "efficiency_2x1_bucket_view"),
                       ("32 rows a rank (global batch 64)", "efficiency_2x1_global_64")):
        lines.append(f"| {label} | {r[key]['wall']:.0%} | {r[key]['cpu']:.0%} |")
    lines += ["", f"- the all-reduce inside a step: {r['allreduce_wall_s'] * 1e3:.0f} ms wall, "
              f"{r['allreduce_cpu_s'] * 1e3:.0f} ms CPU; gradient_as_bucket_view saves "
              f"{r['bucket_view_saves_cpu_s'] * 1e3:.0f} ms CPU of it",
              f"- 16 rows cost {r['small_batch_cost_cpu']:.2f}x half of 32 (a forward's fixed cost)",
              f"- 1 x 2 threads over 1 x 1: {r['threads_1x2_over_1x1_wall']:.2f}x (wall)"]
    return "\n".join(lines)


if __name__ == "__main__":
    result = measure()
    print(table(result))
