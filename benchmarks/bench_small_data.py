"""Small data: the pruned comparison against the exhaustive one, side by side, on one machine.

What it measures. For each dataset (SMS spam, Financial PhraseBank, Banking77), each size (k
examples a label drawn from the training rows) and each seed: a test file fixed per dataset
(Banking77's own test file, the other two a disjoint 20% of the file held out once), then
`tunelab compare` of every text-classification strategy (zero-shot, linear-probe, few-shot, lora,
full) twice, each in its own process with a cold TUNELAB_HOME so neither benefits from the other's
feature cache:
  exhaustive: `--exhaustive` (every candidate to the end: what a user runs without pruning);
  pruned:     the default (cheapest first, learning-curve pruning).
Per case: the exhaustive compare's best macro-F1 and its recommendation's, the pruned compare's
recommendation, its macro-F1 (on the same test file), the ratio of wall times, and full's
macro-F1 over linear-probe's (exhaustive run).

Targets (issue 16): the pruned recommendation within 0.02 of the exhaustive best in >= 90% of the
cases; the pruned wall time <= 0.3x the exhaustive one; full >= 0.8x the probe at 16+ a label.

Usage: .venv/bin/python benchmarks/bench_small_data.py [--datasets sms,fpb,b77] [--sizes 8,16,32,64]
       [--seeds 0,1,2] [--test-rows N] [--json PATH]
The full grid (3 x 4 x 3, two compares each) takes hours on 2 cores; pass a subset for a quick look.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "text-classification"
STRATEGIES = "zero-shot,linear-probe,few-shot,lora,full"


def load(name: str) -> tuple[list, list]:
    """(train pool, fixed test rows) of (text, label)."""
    if name == "b77":
        def read(f):
            with open(SHARED / f, encoding="utf-8", newline="") as fh:
                return [(r["text"], r["category"]) for r in csv.DictReader(fh)]
        return read("banking77_train.csv"), read("banking77_test.csv")
    if name == "sms":
        with open(SHARED / "sms_spam.tsv", encoding="utf-8") as fh:
            rows = [(t, lab) for lab, t in (line.rstrip("\n").split("\t", 1) for line in fh)]
    else:
        with open(SHARED / "financial_phrasebank.csv", encoding="latin-1", newline="") as fh:
            rows = [(r["content"], r["label"]) for r in csv.DictReader(fh)]
    random.Random(1234).shuffle(rows)
    cut = len(rows) // 5
    return rows[cut:], rows[:cut]


def write(path: Path, rows: list) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def subset(pool: list, k: int, seed: int) -> list:
    by = defaultdict(list)
    for row in pool:
        by[row[1]].append(row)
    rng = random.Random(seed)
    out = [r for label in sorted(by) for r in rng.sample(by[label], min(k, len(by[label])))]
    rng.shuffle(out)
    return out


def run_compare(train: Path, test: Path, exhaustive: bool, seed: int) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as home:
        cmd = [sys.executable, "-m", "tunelab", "compare", str(train), "--test", str(test), "--seed", str(seed),
               "--strategies", STRATEGIES, "--json"] + (["--exhaustive"] if exhaustive else [])
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TUNELAB_HOME": home},
                             check=True, cwd=ROOT)
        return json.loads(out.stdout), time.perf_counter() - t0


def f1_of(result: dict, strategy: str | None) -> float | None:
    row = next((r for r in result["results"] if r["strategy"] == strategy and "error" not in r), None)
    return row["macro_f1"] if row else None


def case(name: str, k: int, seed: int, test_rows: int, work: Path) -> dict:
    pool, test = load(name)
    train = write(work / f"{name}-{k}-{seed}-train.csv", subset(pool, k, seed))
    # the test files are sorted by label (Banking77's is): a cap must take a random sample
    capped = random.Random(99).sample(test, min(test_rows, len(test))) if test_rows else test
    testf = write(work / f"{name}-test.csv", capped)
    ex, ex_s = run_compare(train, testf, True, seed)
    pr, pr_s = run_compare(train, testf, False, seed)
    done = [r for r in ex["results"] if "error" not in r]
    best = max(r["macro_f1"] for r in done)
    # the pruned pick scored on the exhaustive run when it was pruned there (same seed, same split)
    pick_f1 = f1_of(pr, pr["recommended"]) or f1_of(ex, pr["recommended"])
    full, probe = f1_of(ex, "full"), f1_of(ex, "linear-probe")
    return {"dataset": name, "k": k, "seed": seed, "exhaustive_best": best,
            "exhaustive_pick": ex["recommended"], "pruned_pick": pr["recommended"], "pruned_pick_f1": pick_f1,
            "within_0.02": pick_f1 is not None and pick_f1 >= best - 0.02,
            "exhaustive_s": ex_s, "pruned_s": pr_s, "time_ratio": pr_s / ex_s,
            "full_over_probe": (full / probe) if full is not None and probe else None,
            "pruned_rows": {r["strategy"]: r.get("reason", "ran") for r in pr["results"]},
            "per_strategy": {r["strategy"]: r.get("macro_f1") for r in ex["results"]}}


def table(rows: list[dict]) -> str:
    head = (f"{'data':<5}{'k':>4}{'seed':>5}{'ex. best':>10}{'pruned pick':>16}{'its F1':>8}{'ok':>4}"
            f"{'ex. s':>8}{'pruned s':>9}{'ratio':>7}{'full/probe':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fp = f"{r['full_over_probe']:.2f}" if r["full_over_probe"] is not None else "-"
        f1 = f"{r['pruned_pick_f1']:.3f}" if r["pruned_pick_f1"] is not None else "-"
        lines.append(f"{r['dataset']:<5}{r['k']:>4}{r['seed']:>5}{r['exhaustive_best']:>10.3f}"
                     f"{str(r['pruned_pick']):>16}{f1:>8}{'y' if r['within_0.02'] else 'n':>4}"
                     f"{r['exhaustive_s']:>8.0f}{r['pruned_s']:>9.0f}{r['time_ratio']:>7.2f}{fp:>11}")
    ok = sum(r["within_0.02"] for r in rows)
    total_ex, total_pr = sum(r["exhaustive_s"] for r in rows), sum(r["pruned_s"] for r in rows)
    big = [r["full_over_probe"] for r in rows if r["k"] >= 16 and r["full_over_probe"] is not None]
    lines.append(f"\nwithin 0.02 of the exhaustive best: {ok}/{len(rows)} (target >= 90%); pruned/exhaustive "
                 f"wall time {total_pr / max(total_ex, 1e-9):.2f}x overall (target <= 0.3x); full/probe at 16+ "
                 f"a label: min {min(big):.2f}" if big else "")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="sms,fpb,b77")
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--test-rows", type=int, default=0, help="cap the fixed test file (0: all of it)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.datasets.split(","):
            for k in map(int, args.sizes.split(",")):
                for seed in map(int, args.seeds.split(",")):
                    rows.append(case(name, k, seed, args.test_rows, Path(work)))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
