"""`make bench-scaling`: data-parallel scaling of MiniLM `full` on this machine, ratios of one run.

Three runs of `tunelab train` on the same rows (SMS spam: a stratified training subset and a
held-out test set of other rows, ../shared/datasets/text-classification/sms_spam.tsv), the same
global batch and seed, each a fresh process:

  1x1  1 process x 1 thread
  2x1  `--processes 2`: 2 ranks x 1 thread (the launcher gives each TUNELAB_JOB_CPUS // 2 threads)
  1x2  1 process x 2 threads

samples/s = training rows x epochs / the training steps' own time (the loop's step timer on rank 0:
no model load, tokenisation, evaluation or checkpoints; under DDP a step ends after its all-reduce,
so rank 0's steps time the whole group). Ratios, against their targets:
- 2x1 over 1x1: efficiency = ratio / 2 (target >= 0.8), and 2x1 over 1x2;
- macro-F1 on the test set, 2x1 against 1x1 at the same global batch (target: within 0.005).

Then the measured causes: the gloo all-reduce of this model's gradients between 2 processes x 1
thread timed alone (what each DDP step adds at least), with --breakdown one step's variants timed
interleaved (benchmarks/scaling_breakdown.py: the all-reduce's share, the smaller per-rank batch,
DDP options), and the paper estimate of scaling to 8 GPUs and 2 nodes from these measurements
(benchmarks/scaling_model.py, assumptions printed).

The machine has 2 cores that other work shares: every figure moves with the load (printed before
each run). `--repeats 2` runs the three twice, alternating, and keeps each one's fastest.

Usage: .venv/bin/python benchmarks/bench_scaling.py [--train-rows N] [--test-rows N] [--epochs N]
       [--batch N] [--repeats N] [--runs 1x1,2x1,1x2] [--breakdown] [--seed-spread] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scaling_breakdown  # noqa: E402
import scaling_model  # noqa: E402

DATA = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "text-classification"
SMS = DATA / "sms_spam.tsv"
RUNS = {"1x1": (1, 1), "2x1": (2, 1), "1x2": (1, 2)}       # name: (processes, threads a process)
F1_TOLERANCE, EFFICIENCY_TARGET = 0.005, 0.8


def split_sms(dest: Path, train_rows: int, test_rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Stratified, seeded training and test subsets, disjoint, in the file's own format (`label<TAB>text`,
    no header, quotes literal: lines are copied as they are)."""
    by_label: dict[str, list[str]] = {}
    for line in SMS.read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            by_label.setdefault(line.split("\t", 1)[0], []).append(line)
    total = sum(len(v) for v in by_label.values())
    rng = random.Random(seed)
    train, test = [], []
    for label, lines in sorted(by_label.items()):
        rng.shuffle(lines)
        n_train, n_test = round(train_rows * len(lines) / total), round(test_rows * len(lines) / total)
        train += lines[:n_train]
        test += lines[n_train:n_train + n_test]
    rng.shuffle(train)
    paths = dest / "sms_train.tsv", dest / "sms_test.tsv"
    for path, lines in zip(paths, (train, test)):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def run(name: str, train: Path, test: Path, out: Path, epochs: int, batch: int, seed: int = 0) -> dict:
    processes, threads = RUNS[name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TUNELAB_JOB_CPUS": str(processes * threads)}
    argv = [sys.executable, "-m", "tunelab.cli", "train", str(train), "--test", str(test), "--model", "minilm",
            "--strategy", "full", "--out", str(out), "--json",
            "--set", f"epochs={epochs}", "--set", "min_steps=0", "--set", f"batch_size={batch}", "--seed", str(seed)]
    if processes > 1:
        argv += ["--processes", str(processes)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: tunelab train exited {done.returncode}:\n{done.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    eff = m["efficiency"]
    rows = sum(m["train_label_counts"].values()) * epochs
    return {"run": name, "processes": processes, "threads": threads, "samples_per_s": rows / eff["seconds"],
            "train_rows_x_epochs": rows, "step_seconds": eff["seconds"], "steps": eff["steps"],
            "rank0_rows": eff["rows"], "seconds_per_step": eff["seconds"] / eff["steps"],
            "step_p50_s": eff.get("step_p50_s"), "samples_per_s_median_step": batch / eff["step_p50_s"],
            "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
            "test_rows": m["test_rows"], "wall_s": wall, "load_avg_1m_before": round(load, 2),
            "trainable_params": m["trainable_params"], "model_flops": eff.get("model_flops"),
            "precision": eff.get("precision")}


def _allreduce_rank(rank: int, world: int, store: str, nbytes: int, repeats: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    grads = torch.ones(nbytes // 4, dtype=torch.float32)
    dist.all_reduce(grads)                                     # warm-up: connections, buffers
    times = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(grads)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def gloo_allreduce(nbytes: int, repeats: int = 5) -> dict:
    """The all-reduce of `nbytes` of fp32 between 2 processes x 1 thread on this machine, alone."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="bench-allreduce-") as tmp:
        out = Path(tmp) / "times.json"
        mp.start_processes(_allreduce_rank, args=(2, str(Path(tmp) / "store"), nbytes, repeats, str(out)),
                           nprocs=2, start_method="spawn")
        times = sorted(json.loads(out.read_text()))
    median = times[len(times) // 2]
    # ring all-reduce between 2: each rank sends and receives 2(N-1)/N x S = S
    return {"bytes": nbytes, "seconds_median": median, "seconds_min": times[0],
            "bus_gbytes_per_s": nbytes / median / 1e9}


def ratios(rows: dict, allreduce: dict | None) -> dict:
    one, two, threads = rows.get("1x1"), rows.get("2x1"), rows.get("1x2")
    r: dict = {}
    if one and two:
        r["2x1_over_1x1"] = two["samples_per_s"] / one["samples_per_s"]
        r["efficiency"] = r["2x1_over_1x1"] / 2
        # the median step: less moved by the moments another process held a core
        r["efficiency_median_step"] = two["samples_per_s_median_step"] / one["samples_per_s_median_step"] / 2
        r["macro_f1_difference"] = abs(two["macro_f1"] - one["macro_f1"])
        # where the time went: a 2x1 step against half a 1x1 step (perfect scaling), and what the
        # all-reduce alone takes
        r["step_overhead_s"] = two["seconds_per_step"] - one["seconds_per_step"] / 2
        if allreduce:
            r["allreduce_share_of_2x1_step"] = allreduce["seconds_median"] / two["seconds_per_step"]
    if two and threads:
        r["2x1_over_1x2"] = two["samples_per_s"] / threads["samples_per_s"]
    if one and threads:
        r["1x2_over_1x1"] = threads["samples_per_s"] / one["samples_per_s"]
    return r


def table(rows: dict, r: dict, allreduce: dict | None) -> str:
    lines = ["| run | processes x threads | samples/s | s/step (rank 0) | samples/s at the median step | macro-F1 | "
             "wall s | load before |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, x in rows.items():
        lines.append(f"| {name} | {x['processes']} x {x['threads']} | {x['samples_per_s']:.1f} | "
                     f"{x['seconds_per_step']:.3f} | {x['samples_per_s_median_step']:.1f} | {x['macro_f1']:.4f} | "
                     f"{x['wall_s']:.0f} | {x['load_avg_1m_before']:.2f} |")

    def fmt(key, spec="{:.2f}x"):
        return spec.format(r[key]) if key in r else "—"

    lines += ["", "| Ratio | value | target |", "|---|---:|---|",
              f"| 2x1 / 1x1 samples/s | {fmt('2x1_over_1x1')} | |",
              f"| scaling efficiency (ratio / 2) | {fmt('efficiency', '{:.0%}')} | >= {EFFICIENCY_TARGET:.0%} |",
              f"| scaling efficiency at the median step | {fmt('efficiency_median_step', '{:.0%}')} | |",
              f"| 2x1 / 1x2 samples/s | {fmt('2x1_over_1x2')} | |",
              f"| 1x2 / 1x1 samples/s (threads) | {fmt('1x2_over_1x1')} | |",
              f"| macro-F1, 2x1 against 1x1 (same global batch) | {fmt('macro_f1_difference', '{:.4f}')} | "
              f"<= {F1_TOLERANCE} |",
              f"| macro-F1, 1x1 seed 1 against seed 0 (for scale) | {fmt('macro_f1_seed_spread', '{:.4f}')} | |"]
    if allreduce:
        lines += ["", f"gloo all-reduce of the gradients ({allreduce['bytes'] / 2**20:.0f} MiB fp32) between 2 "
                  f"processes x 1 thread, alone: {allreduce['seconds_median'] * 1e3:.0f} ms median "
                  f"({allreduce['bus_gbytes_per_s']:.2f} GB/s)"
                  + (f"; a 2x1 step takes {fmt('step_overhead_s', '{:.3f}')} s more than half a 1x1 step, the "
                     f"all-reduce is {fmt('allreduce_share_of_2x1_step', '{:.0%}')} of it"
                     if "step_overhead_s" in r else "")]
    return "\n".join(lines)


def paper(rows: dict, allreduce: dict | None, batch: int) -> tuple[list[dict], float] | None:
    one, threads = rows.get("1x1"), rows.get("1x2")
    if not (one and threads and allreduce and one.get("model_flops")):
        return None
    grad_bytes = one["trainable_params"] * 4
    measured = {"step_1p1t_s": one["seconds_per_step"], "step_1p2t_s": threads["seconds_per_step"],
                "global_batch": batch, "flops_per_sample": one["model_flops"] / one["train_rows_x_epochs"]}
    link = scaling_model.Link("gloo on this machine, measured", allreduce["bus_gbytes_per_s"], 50.0)
    return scaling_model.estimate(measured, grad_bytes, link), grad_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-rows", type=int, default=1200)
    ap.add_argument("--test-rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="the global batch, the same for every run")
    ap.add_argument("--repeats", type=int, default=1, help="run the set this many times, keep each run's fastest")
    ap.add_argument("--runs", default="1x1,2x1,1x2")
    ap.add_argument("--no-allreduce", action="store_true", help="skip timing the all-reduce alone")
    ap.add_argument("--seed-spread", action="store_true",
                    help="also run 1x1 with seed 1: how far another seed alone moves macro-F1")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time one step's variants interleaved in one pair of processes "
                         "(benchmarks/scaling_breakdown.py, ~1 minute)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    best: dict[str, dict] = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        train, test = split_sms(Path(tmp), args.train_rows, args.test_rows)
        print(f"SMS spam: {args.train_rows} training rows (10% of them validation), {args.test_rows} test rows; "
              f"MiniLM full, {args.epochs} epochs, global batch {args.batch}; {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.2f} (other work on the cores moves every figure)", flush=True)
        for i in range(args.repeats):
            for name in names:
                x = run(name, train, test, Path(tmp) / f"{name}-{i}", args.epochs, args.batch)
                print(f"  {name}: {x['samples_per_s']:.1f} samples/s, macro-F1 {x['macro_f1']:.4f}, "
                      f"{x['wall_s']:.0f} s", flush=True)
                if name not in best or x["samples_per_s"] > best[name]["samples_per_s"]:
                    best[name] = x
        # what another seed alone moves macro-F1 by (another validation split, head, dropout): the
        # scale against which the 1-vs-2-process difference is read
        spread = run("1x1", train, test, Path(tmp) / "seed1", args.epochs, args.batch, seed=1) \
            if args.seed_spread and "1x1" in best else None
    grads = next(iter(best.values()))["trainable_params"] * 4
    allreduce = None if args.no_allreduce else gloo_allreduce(grads)
    r = ratios(best, allreduce)
    if spread:
        r["macro_f1_seed_spread"] = abs(spread["macro_f1"] - best["1x1"]["macro_f1"])
    print()
    print(table(best, r, allreduce))
    breakdown = scaling_breakdown.measure() if args.breakdown else None
    if breakdown:
        print()
        print(scaling_breakdown.table(breakdown))
        breakdown = {"steps": breakdown, "ratios": scaling_breakdown.ratios(breakdown)}
    estimate = paper(best, allreduce, args.batch)
    if estimate:
        print()
        print(scaling_model.render(*estimate))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d", time.gmtime(started)), "seconds": round(time.time() - started),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_1m_after": round(os.getloadavg()[0], 2)},
            "config": {"dataset": "sms_spam.tsv", "train_rows": args.train_rows, "test_rows": args.test_rows,
                       "epochs": args.epochs, "global_batch": args.batch, "repeats": args.repeats},
            "runs": best, "seed_1_run": spread, "allreduce": allreduce, "ratios": r, "step_breakdown": breakdown,
            "targets_met": {"efficiency": r.get("efficiency", 0) >= EFFICIENCY_TARGET,
                            "macro_f1": r.get("macro_f1_difference", 1) <= F1_TOLERANCE},
            "paper_estimate": {"rows": estimate[0], "gradient_bytes": estimate[1],
                               "assumptions": scaling_model.ASSUMPTIONS} if estimate else None}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
