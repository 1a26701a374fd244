"""Banking77 benchmark: tunelab vs the plain transformers Trainer, in one process, on one CPU box.

What it measures. Every row trains all-MiniLM-L6-v2 on the SAME rows (tunelab's train split:
banking77_train.csv less the 10% tunelab carves for validation) for the same number of epochs and
scores macro-F1 on banking77_test.csv. Per row: samples/s (train rows x epochs / train seconds),
wall time, peak RSS (MB, sampled every 0.05 s by psutil in a background thread) and macro-F1.

  (a) Trainer as today's no-code tools run it: padding="max_length" (128), batch 8, fp32, lr 5e-5.
      It is slow (~14 samples/s), so unless --full-a it runs a fixed number of steps and the full
      run's wall time is projected from them (its macro-F1 is then not comparable: "—").
  (b) Trainer hand-tuned: dynamic padding, length-grouped batches, batch 32, bf16 autocast where
      the CPU has native bf16 (fp32 elsewhere), lr 2e-4, 10% warmup, weight decay 0.01 -- what
      an expert would do with transformers alone.
  full / linear-probe / lora: tunelab's strategies with their defaults (via the library API).
      linear-probe runs twice: cold (TUNELAB_HOME is a fresh temp dir) and warm (features cached).

Why. The claims to check are: full >= 8x the no-code default and >= 1.0x the hand-tuned Trainer at
comparable macro-F1; linear-probe >= 20x faster than full at >= 0.95x its macro-F1; LoRA's memory
and speed vs full. Train time counts what the user waits for before training ends, the same way
for everyone: model load + tokenisation + training (tunelab's also includes its per-epoch
validation pass and checkpoints; the Trainer rows do neither). Prediction on the test set is not
counted. Peak RSS is the whole process's (rows share it; allocator memory is trimmed between rows
and the RSS at each row's start is printed so carry-over is visible).

Usage: .venv/bin/python benchmarks/bench_banking77.py [--epochs N] [--quick] [--full-a]
       [--rows a,b,full,linear-probe,lora] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

# Cold cache for linear-probe: a fresh TUNELAB_HOME, set before tunelab is imported.
_HOME = tempfile.mkdtemp(prefix="bench-tunelab-home-")
os.environ["TUNELAB_HOME"] = _HOME
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from tunelab.models import resolve_model  # noqa: E402
from tunelab.models.device import cpu_has_bf16  # noqa: E402
from tunelab.engine import DataSpec, prepare_data, run_strategy  # noqa: E402
from tunelab.strategies import get_strategy  # noqa: E402
from tunelab.training.costs import ResourceMeter  # noqa: E402  (psutil sampler thread, 0.05 s)

DATA = Path("/work/shared/datasets/text-classification")
TRAIN_CSV, TEST_CSV = DATA / "banking77_train.csv", DATA / "banking77_test.csv"
SEED = 0
ALL_ROWS = ["a", "b", "full", "linear-probe", "lora"]


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    transformers.set_seed(seed)


def fresh_row() -> float:
    """Start a row clean; returns RSS MB. accelerate's state is a process-wide singleton: once the
    bf16 Trainer set it, tunelab's Accelerator(mixed_precision="no") raises, so reset it. Then free
    what the previous row left behind, so the next row's peak RSS is (mostly) its own."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process().memory_info().rss / 2**20


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "native_bf16": cpu_has_bf16(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


# ---------------------------------------------------------------------------------------------
# The Trainer baselines
# ---------------------------------------------------------------------------------------------

def trainer_row(kind: str, model_path: Path, max_length: int, data, epochs: int, max_steps: int | None,
                work: Path) -> dict:
    """(a) no-code defaults or (b) hand-tuned. max_steps: stop early and project the full run."""
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, default_data_collator)

    names = data.splits.label_names
    index = {n: i for i, n in enumerate(names)}
    train, test = data.splits.train, data.splits.test
    n_train = len(train)
    seed_everything()
    rss0 = fresh_row()
    with ResourceMeter() as meter:
        t_setup = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(str(model_path))
        if kind == "a":
            pad = dict(padding="max_length", max_length=128, truncation=True)
        else:
            pad = dict(truncation=True, max_length=max_length)   # tunelab's limit for this model (256)

        def encode(ds):
            enc = tok(ds.texts, **pad)
            cols = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                    "labels": [index[lab] for lab in ds.labels]}
            if kind == "b":
                cols["length"] = [len(ids) for ids in enc["input_ids"]]  # for the length-grouped sampler
            return Dataset.from_dict(cols)

        train_ds = encode(train)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_path), num_labels=len(names), id2label=dict(enumerate(names)), label2id=index)
        common = dict(output_dir=str(work / f"trainer-{kind}"), num_train_epochs=epochs, seed=SEED,
                      use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no",
                      disable_tqdm=True, max_steps=max_steps or -1)
        if kind == "a":
            args = TrainingArguments(per_device_train_batch_size=8, per_device_eval_batch_size=8,
                                     learning_rate=5e-5, **common)
            collator = default_data_collator
        else:
            # bf16 only where the CPU has native bf16 dot products (the rule tunelab applies too):
            # emulated bf16 on an AVX2-only CPU is several times slower than fp32.
            args = TrainingArguments(per_device_train_batch_size=32, per_device_eval_batch_size=64,
                                     learning_rate=2e-4, warmup_steps=0.1, weight_decay=0.01, bf16=cpu_has_bf16(),
                                     train_sampling_strategy="group_by_length", **common)
            collator = DataCollatorWithPadding(tok)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator)
        setup_s = time.perf_counter() - t_setup
        t_train = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):   # the Trainer prints its log dict: keep stdout the table
            out = trainer.train()
        train_s = time.perf_counter() - t_train
    steps_done = out.global_step
    steps_full = -(-n_train // args.per_device_train_batch_size) * epochs
    projected = steps_done < steps_full
    wall = setup_s + train_s * steps_full / steps_done if projected else meter.record.wall_seconds
    f1 = None
    if not projected:
        pred = trainer.predict(encode(test))
        # label_ids, not dataset order: with length grouping the predictions may come back permuted.
        f1 = float(f1_score(pred.label_ids, pred.predictions.argmax(-1), labels=list(range(len(names))),
                            average="macro", zero_division=0))
    del trainer, model
    return {"row": "(a) Trainer, no-code defaults" if kind == "a" else "(b) Trainer, hand-tuned",
            "key": kind, "samples_per_s": n_train * epochs / wall, "train_seconds": wall,
            "projected": projected, "steps_measured": steps_done, "steps_full": steps_full,
            "peak_rss_mb": meter.record.peak_rss_mb, "rss_at_start_mb": rss0, "macro_f1": f1,
            "train_rows": n_train, "epochs": epochs}


# ---------------------------------------------------------------------------------------------
# tunelab
# ---------------------------------------------------------------------------------------------

def tunelab_row(strategy: str, model, data, epochs: int, work: Path, label: str | None = None) -> dict:
    seed_everything()
    rss0 = fresh_row()
    params = {}
    if strategy in ("full", "lora"):
        params["epochs"] = epochs
        # Same epochs as the baselines: min_steps (when tunelab has it) adds epochs on small data.
        if "min_steps" in get_strategy(strategy).Params.model_fields:
            params["min_steps"] = 0
    res = run_strategy(model, data, strategy, params, work_dir=Path(tempfile.mkdtemp(dir=work)))
    m = res.metrics
    n_train = len(data.splits.train)
    # Epochs actually run (early stopping may end sooner); linear-probe passes over the data once.
    passes = (len(res.notes.get("history") or []) or epochs) if strategy in ("full", "lora") else 1
    return {"row": label or f"tunelab {strategy}", "key": label or strategy,
            "samples_per_s": n_train * passes / m["train_seconds"], "train_seconds": m["train_seconds"],
            "projected": False, "peak_rss_mb": m["peak_rss_mb"], "rss_at_start_mb": rss0,
            "macro_f1": m["macro_f1"], "train_rows": n_train, "epochs": passes,
            "tokens_processed": m.get("tokens_processed"), "notes": {k: v for k, v in res.notes.items()
                                                                     if isinstance(v, (int, float, str, dict, list))}}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def fmt_time(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def ratio_line(name: str, num: float | None, den: float | None, target: str = "", fmt: str = "{:.2f}x") -> str:
    if not num or not den:
        return f"| {name} | — | {target} |"
    return f"| {name} | {fmt.format(num / den)} | {target} |"


def report(rows: dict, info: dict, args) -> str:
    out = [f"## Banking77, all-MiniLM-L6-v2 — {rows[next(iter(rows))]['train_rows']} train rows, "
           f"{info['test_rows']} test rows, {args.epochs} epoch(s){' (--quick)' if args.quick else ''}", "",
           f"Machine: {info['cpu']}, {info['cores']} cores (torch threads {info['torch_threads']}), "
           f"native bf16: {'yes' if info['native_bf16'] else 'no (AVX2 only: every row runs fp32)'}, "
           f"torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}. "
           f"Load average at start: {' / '.join(map(str, info['load_avg_at_start']))}; "
           f"at end: {' / '.join(map(str, info['load_avg_at_end']))}.", "",
           "| Row | epochs | samples/s | wall (train) | peak RSS (MB) | RSS at start (MB) | macro-F1 |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows.values():
        wall = fmt_time(r["train_seconds"]) + (f" projected ({r['steps_measured']}/{r['steps_full']} steps run)"
                                               if r["projected"] else "")
        f1 = "—" if r["macro_f1"] is None else f"{r['macro_f1']:.3f}"
        out.append(f"| {r['row']} | {r['epochs']} | {r['samples_per_s']:.1f} | {wall} | {r['peak_rss_mb']:.0f} | "
                   f"{r['rss_at_start_mb']:.0f} | {f1} |")
    g = lambda k, f: rows.get(k, {}).get(f)  # noqa: E731
    out += ["", "| Ratio | value | target |", "|---|---:|---|",
            ratio_line("full vs (a): samples/s", g("full", "samples_per_s"), g("a", "samples_per_s"), "≥ 8x"),
            ratio_line("full vs (b): samples/s", g("full", "samples_per_s"), g("b", "samples_per_s"), "≥ 1.0x"),
            f"| macro-F1 full / (a) / (b) | {fmt_f1(g('full', 'macro_f1'))} / {fmt_f1(g('a', 'macro_f1'))} / "
            f"{fmt_f1(g('b', 'macro_f1'))} | comparable |",
            ratio_line("linear-probe (cold) vs full: train-time speed-up", g("full", "train_seconds"),
                       g("linear-probe", "train_seconds"), "≥ 20x"),
            ratio_line("linear-probe (cached rerun) vs full: speed-up", g("full", "train_seconds"),
                       g("linear-probe (cached)", "train_seconds"), ""),
            ratio_line("linear-probe / full: macro-F1", g("linear-probe", "macro_f1"), g("full", "macro_f1"),
                       "≥ 0.95", "{:.3f}"),
            ratio_line("lora / full: peak RSS", g("lora", "peak_rss_mb"), g("full", "peak_rss_mb"), "< 1 is less memory"),
            ratio_line("lora / full: peak RSS above the row's start", _above(rows.get("lora")),
                       _above(rows.get("full")), "rows share a process"),
            ratio_line("lora / full: samples/s", g("lora", "samples_per_s"), g("full", "samples_per_s"), "")]
    if "a" in rows and rows["a"]["projected"]:
        out += ["", "(a) ran a fixed number of steps; its wall time is setup + measured s/step × all steps, and its "
                "macro-F1 is not comparable (\"—\"); use --full-a for a real run."]
    return "\n".join(out)


def _above(r: dict | None) -> float | None:
    return r and r["peak_rss_mb"] - r["rss_at_start_mb"]


def fmt_f1(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2,000-row stratified subset, 1 epoch, (a) 60 steps")
    p.add_argument("--full-a", action="store_true", help="train row (a) for the full run (~36 min at 3 epochs)")
    p.add_argument("--a-steps", type=int, default=150, help="steps row (a) runs when not --full-a")
    p.add_argument("--rows", default=",".join(ALL_ROWS), help="comma-separated subset of " + ",".join(ALL_ROWS))
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    if bad := [r for r in wanted if r not in ALL_ROWS]:
        p.error(f"unknown rows {bad}; choose from {ALL_ROWS}")
    if args.quick:
        args.epochs, args.a_steps = 1, 60

    info = machine()
    print(f"# machine: {info}", file=sys.stderr)
    seed_everything()
    model = resolve_model("minilm")
    data = prepare_data(DataSpec(TRAIN_CSV, TEST_CSV, limit=2000 if args.quick else None, seed=SEED), model)
    info["test_rows"] = len(data.splits.test)
    work = Path(tempfile.mkdtemp(prefix="bench-banking77-"))
    rows: dict[str, dict] = {}

    def log(r):
        print(f"# {r['row']}: {r['samples_per_s']:.1f} samples/s, {r['train_seconds']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, macro-F1 {fmt_f1(r['macro_f1'])}", file=sys.stderr, flush=True)

    for key in wanted:
        if key in ("a", "b"):
            steps = None if key == "b" or args.full_a else args.a_steps
            rows[key] = trainer_row(key, model.path, model.max_length, data, args.epochs, steps, work)
            log(rows[key])
        else:
            rows[key] = tunelab_row(key, model, data, args.epochs, work)
            log(rows[key])
            if key == "linear-probe":   # the same run again: features now come from the disk cache
                r = tunelab_row(key, model, data, args.epochs, work, label="linear-probe (cached)")
                rows[r["key"]] = r
                log(r)
    info["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(report(rows, info, args))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
