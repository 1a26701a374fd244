"""SFT throughput: sft-full vs sft-lora on stories260K (identity set) and SmolLM2-135M-Instruct
(alpaca demo slice): tokens/s of the training loop, wall time, peak RSS, held-out loss.

    python benchmarks/bench_generative.py [--shared ../shared] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", choices=["stories260k", "smollm2"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tunelab.models import resolve_model
    from tunelab.models.llama2c import import_llama2c
    from tunelab.engine import DataSpec, prepare_data, run_strategy

    data_dir, tmp = args.shared / "datasets", Path(tempfile.mkdtemp(prefix="bench-gen-"))
    records = json.loads((data_dir / "instruction" / "identity.json").read_text(encoding="utf-8"))
    for r in records:
        for k, v in r.items():
            r[k] = v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab")
    identity = tmp / "identity.json"
    identity.write_text(json.dumps(records))
    alpaca = tmp / "alpaca.json"
    alpaca.write_text(json.dumps(json.loads((data_dir / "instruction" / "alpaca_en_demo.json").read_text())[:120]))
    stories = data_dir / "models" / "stories260k-llama2c"
    runs = []
    if args.only in (None, "stories260k"):
        model = resolve_model(str(import_llama2c(stories / "checkpoint_legacy.bin", stories / "tok512.model",
                                                 tmp / "stories260k")))
        runs.append(("stories260k", model, identity, ["min_steps=50", "max_epochs=50", "batch_size=8"]))
    if args.only in (None, "smollm2"):
        runs.append(("smollm2", resolve_model("smollm2"), alpaca,
                     ["min_steps=12", "max_epochs=1", "epochs=1", "batch_size=4", "max_length=256"]))
    rows = []
    for name, model, file, params in runs:
        data = prepare_data(DataSpec(file), model)
        for strategy in ("sft-full", "sft-lora"):
            r = run_strategy(model, data, strategy, params + ["eval_answers=0"], work_dir=tmp / f"{name}-{strategy}")
            m = r.metrics
            rows.append({"model": name, "strategy": strategy, "steps": r.notes["steps"],
                         "tokens_per_s": m["tokens_per_second"], "loop_s": r.notes["loop_seconds"],
                         "peak_rss_mb": m["peak_rss_mb"], "predicted_peak_mb": m["predicted_peak_mb"],
                         "trainable": m["trainable_params"], "test_loss": m.get("test_loss"),
                         "base_test_loss": m.get("base_test_loss")})
            print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print(f"\n{'model':<12}{'strategy':<10}{'steps':>6}{'tokens/s':>10}{'loop s':>8}{'peak MB':>9}"
              f"{'trainable':>13}{'loss base->tuned':>20}")
        for r in rows:
            print(f"{r['model']:<12}{r['strategy']:<10}{r['steps']:>6}{r['tokens_per_s']:>10.0f}{r['loop_s']:>8.1f}"
                  f"{r['peak_rss_mb']:>9.0f}{r['trainable']:>13,}{r['base_test_loss']:>10.3f} -> {r['test_loss']:.3f}")


if __name__ == "__main__":
    main()
