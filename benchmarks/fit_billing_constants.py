"""Refit the estimator's shipped constants (tunelab/billing/work.json) from a cold benchmark run.

    .venv/bin/python benchmarks/billing_estimates.py --cold --limit 800 --transfer-limit 3000 --out cold.json
    .venv/bin/python benchmarks/fit_billing_constants.py cold.json [more.json] # prints the new CPU section
    .venv/bin/python benchmarks/fit_billing_constants.py cold.json --write     # and writes it

Each row of a --cold run carries the estimate's terms (seconds per term, on the constants used)
and what the job was charged. The fit is closed-form and per strategy, so three datasets are
enough: zero-shot's rows give one scale for the shared encoder and file-reading constants; every
other strategy keeps those shared terms at that scale and its own constants (setup, training,
logistic regression) absorb the rest. Fine-tunes are compared for the work they really did
(tokens trained), and `typical_epochs` becomes the median of the epochs early stopping allowed.
The machine's matrix-product probe is recorded as `probe_ms`: on other hardware the constants are
scaled by the probe's ratio (tunelab.billing.estimate.cpu_speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "tunelab" / "billing" / "work.json"
SHARED_TERMS = {"evaluate", "encode"}          # k_eval, k_encode: one constant for every strategy
SPECIFIC = {"full": ["setup_s", "k_train"], "lora": ["setup_s", "k_train"], "qlora": [],
            "linear-probe": ["setup_s", "k_fit"], "few-shot": ["setup_s", "k_fit", "k_pair"]}


def terms_of(row: dict) -> dict[str, dict]:
    return {t["term"]: t for t in row["basis"][0]["terms"]}


def work_done(row: dict) -> dict[str, float]:
    """Term seconds for the work done, on the constants the estimate used (before the probe)."""
    hardware = row.get("hardware") or 1.0
    out = {}
    for name, t in terms_of(row).items():
        seconds = t["seconds"] / hardware
        if name == "train" and row.get("tokens_processed") and t.get("tokens"):
            seconds *= row["tokens_processed"] / t["tokens"]
        out[name] = seconds
    return out


def fit(rows: list[dict], work: dict, probe_ms: float) -> tuple[dict, list[str]]:
    cpu = json.loads(json.dumps(work["devices"]["cpu"]))
    by = {}
    for r in rows:
        if r["status"] == "succeeded":
            by.setdefault(r["strategy"], []).append(r)
    log = []
    zs = by.get("zero-shot")
    if not zs:
        raise SystemExit("the run needs zero-shot rows: they fix the shared constants")
    shared = sum(r["compute_s"] for r in zs) / sum(sum(work_done(r).values()) for r in zs)
    for k in ("per_row_s", "k_encode", "k_eval"):
        cpu[k] = round(cpu[k] * shared, 6)
    cpu["strategies"]["zero-shot"]["setup_s"] = round(cpu["strategies"]["zero-shot"]["setup_s"] * shared, 2)
    log.append(f"shared (zero-shot, {len(zs)} rows): x{shared:.3f}")
    for strategy, rs in by.items():
        if strategy == "zero-shot":
            continue
        fixed = specific = 0.0
        for r in rs:
            for name, seconds in work_done(r).items():
                if name in SHARED_TERMS:
                    fixed += seconds * shared
                elif name == "setup":
                    # setup = setup_s + per_row_s x rows: the per-row part is shared
                    setup_s = cpu["strategies"][strategy]["setup_s"]
                    specific += setup_s
                    fixed += (seconds - setup_s) * shared
                else:
                    specific += seconds
        actual = sum(r["compute_s"] for r in rs)
        scale = max((actual - fixed) / specific, 0.1) if specific else 1.0
        s = cpu["strategies"][strategy]
        for k in SPECIFIC.get(strategy, ["setup_s"]):
            if k in s:
                s[k] = round(s[k] * scale, 6 if k.startswith("k_") else 2)
        epochs = [terms_of(r)["train"]["epochs"] * r["tokens_processed"] / terms_of(r)["train"]["tokens"]
                  for r in rs if "train" in terms_of(r) and r.get("tokens_processed")]
        if epochs and "typical_epochs" in s:
            s["typical_epochs"] = max(int(round(statistics.median(epochs))), 1)
        log.append(f"{strategy} ({len(rs)} rows): x{scale:.3f}" + (
            f", epochs run {', '.join(f'{e:.1f}' for e in epochs)} -> typical {s['typical_epochs']}" if epochs else ""))
    for family, like in (("default-fine-tune", "full"), ("default-transfer", "linear-probe")):
        if like in by:
            cpu["strategies"][family] = dict(cpu["strategies"][like])
    if "full" in by and "qlora" in cpu["strategies"]:
        # No CUDA here: qlora keeps its ratio to full from the previous fit.
        old = work["devices"]["cpu"]["strategies"]
        q = cpu["strategies"]["qlora"]
        q["k_train"] = round(old["qlora"]["k_train"] * cpu["strategies"]["full"]["k_train"] / old["full"]["k_train"], 6)
        q["typical_epochs"] = cpu["strategies"]["full"]["typical_epochs"]
    cpu["probe_ms"] = round(probe_ms, 3)
    return cpu, log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+",
                   help="billing_estimates.py --cold JSONs, on the same constants (pooled: runs hours apart "
                        "average out this VM's drifting speed)")
    p.add_argument("--write", action="store_true", help="write the new CPU section into work.json")
    args = p.parse_args()
    from tunelab.billing.devices import cpu_probe_ms

    rows = []
    for path in args.results:
        data = json.loads(path.read_text())
        if data.get("args", {}).get("cold") != "True":
            raise SystemExit(f"{path}: fit from --cold runs: calibrated rows were priced on learned factors")
        rows += data["rows"]
    work = json.loads(WORK.read_text())
    # The probe taken before each job of the run, not now: this VM's speed drifts by tens of
    # percent over hours, and the constants must be paired with the speed they were measured at.
    probes = [r["probe_ms"] for r in rows if r.get("probe_ms")]
    probe_ms = statistics.median(probes) if probes else cpu_probe_ms()
    cpu, log = fit(rows, work, probe_ms)
    log.append(f"probe: {probe_ms:.3f} ms ({'median of the run' if probes else 'now (TUNELAB_BILLING_CPU_PROBE_MS fixes it)'})")
    print("\n".join(log))
    print(json.dumps(cpu, indent=2))
    if args.write:
        work["devices"]["cpu"] = cpu
        WORK.write_text(json.dumps(work, indent=2) + "\n")
        print(f"written: {WORK}")


if __name__ == "__main__":
    main()
