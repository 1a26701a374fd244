"""`tunelab bench hardware [--quick] [--json]`: measure this machine (matmul peak per precision,
memory and disk bandwidth, GPUs' copies), run a short training burst per catalog model and
strategy, store the figures under TUNELAB_HOME/hardware/ and compare them with the last run."""

from __future__ import annotations

import json
import sys

from .errors import guarded
from .exits import EXIT_OK

EXIT_REGRESSION = 6      # --fail-on-regression: a figure is worse than the last run by > 15%


def extend(sub, groups) -> None:
    bench = sub.add_parser("bench", help="measure this machine").add_subparsers(dest="action", required=True)
    hw = bench.add_parser("hardware", help="device figures and per-model training throughput (stored, compared)")
    hw.add_argument("--quick", action="store_true", help="fewer repetitions, the default model only (< 2 min)")
    hw.add_argument("--json", action="store_true", help="print the stored result as JSON")
    hw.add_argument("--fail-on-regression", action="store_true",
                    help=f"exit {EXIT_REGRESSION} when a figure is > 15%% worse than the previous run")
    hw.set_defaults(func=guarded(cmd_bench_hardware))


def cmd_bench_hardware(args) -> int:
    from ..engine.sweep import measure
    from ..training.progress import TqdmProgress

    result = measure(quick=args.quick, progress=TqdmProgress(enabled=not args.json and sys.stderr.isatty()))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    regressions = (result.get("comparison") or {}).get("regressions") or []
    return EXIT_REGRESSION if regressions and args.fail_on_regression else EXIT_OK


def _num(v, fmt: str = "{:,.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def render(result: dict) -> str:
    d = result["device"]
    gpus = ", ".join(g["name"] for g in d.get("gpus", [])) or "none"
    lines = [f"{d['name']}, {d['cores']} cores ({', '.join(d['flags']) or 'no vector flags'}), GPUs: {gpus}, "
             f"torch {d['torch']}; {result['seconds']:.0f} s", "",
             f"{'figure':<34} {'median':>12} {'spread':>8}"]
    for f in result["figures"]:
        flag = "  noisy: rerun on an idle machine" if f["noisy"] else ""
        lines.append(f"{f['label']:<34} {_num(f['median'])+' '+f['unit']:>12} {f['spread']:>7.0%}{flag}")
        if f.get("note"):
            lines.append(f"  {f['note']}")
    lines += ["", f"{'model':<10} {'strategy':<13} {'prec':<5} {'tokens/s':>9} {'samples/s':>9} "
                  f"{'step p50':>9} {'p95':>7} {'peak MB':>8} {'work MB':>8} {'MFU':>6} {'$/1M tok':>9}"]
    for m in result["models"]:
        if m.get("error"):
            lines.append(f"{m['model']:<10} {m['strategy']:<13} failed: {m['error']}")
            continue
        lines.append(f"{m['model']:<10} {m['strategy']:<13} {m.get('precision') or '':<5} "
                     f"{_num(m.get('tokens_per_s'), '{:,.0f}'):>9} {_num(m.get('samples_per_s')):>9} "
                     f"{_num(m.get('step_p50_s'), '{:.3f}s'):>9} {_num(m.get('step_p95_s'), '{:.2f}s'):>7} "
                     f"{_num(m.get('peak_mb'), '{:,.0f}'):>8} {_num(m.get('work_memory_mb'), '{:,.0f}'):>8} "
                     f"{_num(m.get('mfu'), '{:.0%}'):>6} "
                     f"{_num(m.get('usd_per_million_tokens'), '${:.4f}'):>9}")
    comparison = result.get("comparison")
    if comparison:
        lines += ["", f"against the run of {comparison['against_created']}:"]
        for c in comparison["changes"]:
            mark = "  REGRESSION" if c["regressed"] else ""
            lines.append(f"  {c['name']:<32} {c['ratio']:.2f}x{mark}")
    else:
        lines += ["", "first run on this worker: the next one is compared with it"]
    lines += ["", "MFU: the model's useful FLOPs per second over the matmul peak measured above, in the precision "
              "the run used. peak MB: the process; work MB: what the training or encoding added over the loaded model.",
              f"stored in {result.get('path')}"]
    return "\n".join(lines)
