"""`make bench-hardware`: this machine's figures and the issue's targets as ratios of one run.

Runs `tunelab bench hardware` (device probes, then MiniLM full / LoRA / linear-probe bursts, each
in its own process) without storing it, and prints:
- MiniLM `full` MFU: its model FLOPs/s over the matmul peak of its precision measured in the same
  run (target >= 0.50);
- `lora` over `full`: process peak memory (target <= 0.6x) and the memory the training itself
  added over the loaded model;
- `linear-probe` over `full`: tokens/s (the encoder's forward against forward + backward).

`--full` runs the full sweep (every catalog model and strategy); `--json PATH` keeps the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunelab.cli.bench import render  # noqa: E402
from tunelab.engine.sweep import measure  # noqa: E402


def ratios(result: dict) -> list[tuple[str, str, str]]:
    rows = {m["strategy"]: m for m in result["models"] if m.get("model") == "minilm" and not m.get("error")}
    full, lora, probe = rows.get("full", {}), rows.get("lora", {}), rows.get("linear-probe", {})

    def ratio(a, b, fmt="{:.2f}x"):
        return fmt.format(a / b) if a and b else "—"

    return [("full MFU (of the measured matmul peak, " + str(full.get("precision")) + ")",
             "{:.0%}".format(full["mfu"]) if full.get("mfu") else "—", ">= 50%"),
            ("lora / full: process peak memory", ratio(lora.get("peak_mb"), full.get("peak_mb")), "<= 0.6x"),
            ("lora / full: memory the training added", ratio(lora.get("work_memory_mb"), full.get("work_memory_mb")),
             "<= 0.6x"),
            ("lora / full: tokens/s", ratio(lora.get("tokens_per_s"), full.get("tokens_per_s")), ""),
            ("linear-probe / full: tokens/s (forward vs training)",
             ratio(probe.get("tokens_per_s"), full.get("tokens_per_s")), "")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="every catalog model and strategy")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = measure(quick=not args.full, save=False)
    print(render(result))
    print("\n| Ratio | value | target |\n|---|---:|---|")
    for name, value, target in ratios(result):
        print(f"| {name} | {value} | {target} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
