"""Estimate vs actual cost of jobs on the shared datasets, through a real server.

    .venv/bin/python benchmarks/billing_estimates.py                  # 3 datasets x 4 strategies
    .venv/bin/python benchmarks/billing_estimates.py --quick          # smaller subsets, 2 strategies
    .venv/bin/python benchmarks/billing_estimates.py --cold           # never learn: shipped constants only
    .venv/bin/python benchmarks/billing_estimates.py --generative     # SFT and DPO on stories260K, twice each

Starts `tunelab serve` on a fresh TUNELAB_HOME, uploads the shared text-classification files, and
runs one job after another. For each: the estimate the API gives before it starts (cost, its
range, wall time), then what the ledger charged once it settled. The platform's calibration
table learns from each finished job, as in production, so later rows show the warm error (the
first row of each strategy is cold: the shipped constants of tunelab/billing/work.json). The load
average is printed per row: on a shared machine, contention inflates CPU time. Results go to
--out as JSON, and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tunelab.billing.devices import cpu_probe_ms
from tunelab.billing.estimate import work_done_raw

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "text-classification"
TUNELAB = [sys.executable, "-m", "tunelab.server"]
OPERATOR = "tl-bench-operator"
DATASETS = [("banking77_train.csv", "banking77_test.csv"), ("financial_phrasebank.csv", None), ("sms_spam.tsv", None)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_OPERATOR_API_KEY": OPERATOR, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TUNELAB_HEARTBEAT_SECONDS": "1"}
    from tunelab.jobs.executors import sandbox_problem

    if sandbox_problem():
        env["TUNELAB_INSECURE_MODE"] = "1"
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen([*TUNELAB, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url, env
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"server did not start; see {home / 'server.log'}")


def wait(client: httpx.Client, job_id: str, timeout: float = 3600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled", "paused"):
            return job
        time.sleep(1)
    raise TimeoutError(job_id)


def run(args) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="tl-bench-billing-"))
    proc, url, env = start_server(home)
    rows = []
    try:
        out = subprocess.run([*TUNELAB, "admin", "create-tenant", "bench", "--admin-email", "b@b.test", "--json"],
                             env=env, capture_output=True, text=True, check=True)
        key = json.loads(out.stdout)["api_key"]
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        op = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60)
        plan = generative_plan(c, home, args) if args.generative else classification_plan(c, args)
        for name, strategy, limit, body in plan:
            est = c.post("/api/v1/jobs/estimate", json=body).json()
            load0 = os.getloadavg()[0]
            probe = cpu_probe_ms.__wrapped__()     # this CPU's speed just now (uncached)
            t0 = time.time()
            job = c.post("/api/v1/jobs", json=body).json()
            done = wait(c, job["id"])
            wall = time.time() - t0
            detail = c.get(f"/api/v1/billing/jobs/{job['id']}").json()
            actual = detail["charged"]
            metrics = (done.get("result") or {}).get("metrics", {})
            row = {"dataset": name, "strategy": strategy, "limit": limit, "status": done["status"],
                   "estimate": est["cost"], "low": est["cost_low"], "high": est["cost_high"], "actual": actual,
                   "error": round((actual - est["cost"]) / est["cost"], 3) if est["cost"] else None,
                   "in_range": est["cost_low"] <= actual <= est["cost_high"],
                   "compute_s": detail["compute_seconds"], "estimated_compute_s": est["compute_seconds"],
                   "wall_s": round(wall, 1), "estimated_wall_s": est["wall_seconds"],
                   "load": round((load0 + os.getloadavg()[0]) / 2, 2), "probe_ms": round(probe, 3),
                   "factor_used": est["basis"][0]["factor"], "hardware": est["basis"][0].get("hardware"),
                   "macro_f1": metrics.get("macro_f1"), "tokens_processed": metrics.get("tokens_processed"),
                   "test_loss": metrics.get("test_loss"), "margin": metrics.get("margin"),
                   "basis": est["basis"]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.cold:      # forget what was learned: every row on the shipped constants
                subprocess.run([*TUNELAB, "admin", "billing", "calibration", "--set",
                                f"{strategy}|{body.get('model', 'minilm')}|{est['device']}=1.0"], env=env,
                               capture_output=True)
        books = op.get("/api/v1/admin/billing/reconcile").json()
        calib = op.get("/api/v1/admin/billing/calibration").json()["data"]
        print(json.dumps({"reconcile_ok": books["ok"], "calibration": calib}, indent=1), file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return rows


def classification_plan(c: httpx.Client, args) -> list[tuple[str, str, int | None, dict]]:
    """(dataset, strategy, rows, job body) for the shared text-classification files."""
    uploaded = {}
    for train, test in DATASETS:
        with open(SHARED / train, "rb") as f:
            tr = c.post("/api/v1/datasets", files={"file": (train, f)}).json()["id"]
        te = None
        if test and not args.quick:
            with open(SHARED / test, "rb") as f:
                te = c.post("/api/v1/datasets", files={"file": (test, f)}).json()["id"]
        uploaded[train] = (tr, te)
    plan = []
    for strategy in args.strategies:
        for name, (tr, te) in uploaded.items():
            limit = args.limit if strategy in ("full", "lora") else args.transfer_limit
            body = {"dataset_id": tr, "strategy": strategy, "limit": limit, "test_dataset_id": te}
            plan.append((name, strategy, limit, {k: v for k, v in body.items() if v is not None}))
    return plan


def generative_plan(c: httpx.Client, home: Path, args) -> list[tuple[str, str, int | None, dict]]:
    """SFT (full and LoRA) on the shared identity set as chat JSONL and DPO on 120 of the shared
    preference pairs, on the pretrained stories260K uploaded as the tenant's model; each job twice
    (the second priced with what the calibration learned from the first)."""
    import tarfile

    from tunelab.models.llama2c import import_llama2c

    shared = SHARED.parent
    stories = shared / "models" / "stories260k-llama2c"
    folder = import_llama2c(stories / "checkpoint_legacy.bin", stories / "tok512.model", home / "stories260k")
    archive = home / "stories260k.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="stories260k")
    with open(archive, "rb") as f:
        model = c.post("/api/v1/models/import", files={"file": (archive.name, f)}, data={"name": "stories260k"}).json()["id"]
    chat = home / "identity.jsonl"
    with open(chat, "w", encoding="utf-8") as f:
        for r in json.loads((shared / "instruction" / "identity.json").read_text(encoding="utf-8")):
            r = {k: v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab") for k, v in r.items()}
            f.write(json.dumps({"messages": [{"role": "user", "content": r["instruction"]},
                                             {"role": "assistant", "content": r["output"]}]}) + "\n")
    pairs = home / "pairs.json"
    pairs.write_text(json.dumps(json.loads((shared / "instruction" / "dpo_en_demo.json").read_text())[:120]))
    ids = {}
    for path in (chat, pairs):
        with open(path, "rb") as f:
            ids[path.name] = c.post("/api/v1/datasets", files={"file": (path.name, f)}).json()["id"]
    runs = [("identity.jsonl", "sft-full", {"min_steps": 150, "eval_answers": 4}),
            ("identity.jsonl", "sft-lora", {"min_steps": 150, "eval_answers": 4}),
            ("pairs.json", "dpo", {})]
    return [(name, strategy, None, {"dataset_id": ids[name], "strategy": strategy, "model": model, "params": params})
            for _ in range(2) for name, strategy, params in runs]


def work_done_error(r: dict) -> tuple[float | None, str]:
    """The estimate's error for the work the job really did, and the epochs it ran / expected: a
    fine-tune's estimate assumes early stopping at typical_epochs, so this separates the speed
    model's error from how long early stopping let the run go."""
    if not r.get("compute_s") or not r.get("estimated_compute_s"):
        return None, ""
    basis, epochs = r["basis"][0], ""
    if not basis["raw_seconds"]:
        return None, ""
    # the calibration's own redo of the raw estimate for the tokens really trained
    done_s = work_done_raw({"raw_ms": basis["raw_seconds"] * 1000, "basis": r["basis"]},
                           r.get("tokens_processed")) / 1000
    est = done_s * r["estimated_compute_s"] / basis["raw_seconds"]
    train = next((t for t in basis["terms"] if t["term"] == "train"), None)
    if train and r.get("tokens_processed") and train.get("tokens"):
        epochs = f"{train['epochs'] * r['tokens_processed'] / train['tokens']:.1f} / {train['epochs']}"
    return r["compute_s"] / est - 1, epochs


def table(rows: list[dict]) -> str:
    lines = ["| dataset | strategy | rows | estimate (range) | actual | error | error for the work done | "
             "epochs run / expected | compute est/actual s | wall est/actual s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    done = []
    for r in rows:
        wd, epochs = work_done_error(r)
        if wd is not None:
            done.append(abs(wd))
        lines.append(f"| {r['dataset']} | {r['strategy']} | {r['limit'] or 'all'} | {r['estimate'] / 1e6:.6f} "
                     f"({r['low'] / 1e6:.6f}-{r['high'] / 1e6:.6f}) | {r['actual'] / 1e6:.6f} | "
                     f"{r['error']:+.0%} | {'' if wd is None else f'{wd:+.0%}'} | {epochs} | "
                     f"{r['estimated_compute_s']:.0f} / {r['compute_s']:.0f} | "
                     f"{r['estimated_wall_s']:.0f} / {r['wall_s']:.0f} | {r['load']:.1f} |")
    errs = [abs(r["error"]) for r in rows if r["error"] is not None]
    warm = [abs(r["error"]) for r in rows if r["error"] is not None and r["factor_used"] != 1.0]
    if errs:
        lines.append(f"\nall rows: mean |error| {sum(errs) / len(errs):.0%}, max {max(errs):.0%}, "
                     f"{sum(e <= 0.25 for e in errs)}/{len(errs)} within ±25%, "
                     f"{sum(r['in_range'] for r in rows)}/{len(rows)} inside the quoted range")
    if done:
        lines.append(f"for the work done (the epochs early stopping really ran): mean |error| "
                     f"{sum(done) / len(done):.0%}, max {max(done):.0%}, {sum(e <= 0.25 for e in done)}/{len(done)} "
                     "within ±25%")
    if warm:
        lines.append(f"calibrated rows (after the platform learned from earlier jobs): mean |error| "
                     f"{sum(warm) / len(warm):.0%}, max {max(warm):.0%}, {sum(e <= 0.25 for e in warm)}/{len(warm)} "
                     "within ±25%")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", default="zero-shot,linear-probe,lora,full")
    p.add_argument("--limit", type=int, default=1000, help="training rows for fine-tunes (default 1000)")
    p.add_argument("--transfer-limit", type=int, default=None, help="rows for transfer strategies (default all)")
    p.add_argument("--quick", action="store_true", help="600-row fine-tunes, 2000-row transfers, no test files")
    p.add_argument("--cold", action="store_true", help="reset the calibration after every job")
    p.add_argument("--generative", action="store_true", help="SFT and DPO on stories260K instead")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "billing_estimates.json")
    p.add_argument("--table", type=Path, help="only print the table of a saved run (its --out JSON)")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())["rows"]))
        return
    args.strategies = args.strategies.split(",")
    if args.quick:
        args.limit, args.transfer_limit = 600, args.transfer_limit or 2000
    rows = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
