"""Remote mode: `tunelab --server URL --api-key K <command>` drives a tunelab server through the
SDK (tunelab.sdk): datasets upload/list/get, jobs create/list/get/watch/cancel/resume/events, jobs
bench-hardware (measure the server's worker machine, as a job), models predict/get, deployments
create/list/get/delete/predict. Nothing here imports the server, nor torch: httpx, pydantic and tqdm suffice.

Exit statuses (cli/exits.py): 0 ok; 1 the server refused the request (or could not be reached), or
the watched job failed; 2 no --server/--api-key, or the key was refused (401/403); 3 the watched
job was cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys

from .billing import estimate_line
from .budget import add_budget_args
from .common import dump, remote, say as _say, split_set, split_set_by_strategy
from .exits import EXIT_AUTH, EXIT_CANCELLED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, JOB_EXIT

__all__ = ["EXIT_AUTH", "EXIT_CANCELLED", "EXIT_ERROR", "EXIT_OK", "JOB_EXIT", "Watcher", "extend"]


def extend(sub, groups) -> None:
    ds = groups["datasets"]
    p = ds.add_parser("upload", help="remote: upload a data file to the server")
    p.add_argument("file")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--name", help="what people call it (default: the file name without its extension)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets_upload)
    p = _json_flag(ds.add_parser("rename", help="remote: give a dataset a new name (its id stays)"))
    p.add_argument("dataset_id")
    p.add_argument("name")
    p.set_defaults(func=cmd_datasets_rename)
    _json_flag(ds.add_parser("list", help="remote: your datasets on the server")).set_defaults(func=cmd_datasets_list)
    p = _json_flag(ds.add_parser("get", help="remote: one dataset with its validation report"))
    p.add_argument("dataset_id")
    p.set_defaults(func=cmd_datasets_get)

    jobs = sub.add_parser("jobs", help="remote: training jobs on a server").add_subparsers(dest="action", required=True)
    groups["jobs"] = jobs
    p = _json_flag(jobs.add_parser("list", help="your jobs, newest first"))
    p.add_argument("--status", help="only jobs with this status")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs_list)
    p = _json_flag(jobs.add_parser("get", help="one job"))
    p.add_argument("job_id")
    p.set_defaults(func=cmd_jobs_get)
    p = _json_flag(jobs.add_parser("create", help="queue a training job (--watch to follow it)"))
    _training_data_args(p, "default: the task's (minilm for labelled texts, smollm2 for conversations)", "KEY=VALUE")
    p.add_argument("--strategy", help="default: the dataset's task's (lora, sft-lora, dpo); `tunelab strategies` lists them")
    p.add_argument("--model-name", help="what people will call the tuned model (default: \"<dataset> — <strategy>\")")
    p.add_argument("--processes", type=int, help="train on N data-parallel processes (one GPU each on a GPU "
                   "worker; strategies with a training loop only; the batch size stays the global batch)")
    p.add_argument("--idempotency-key", help="sending the same key again returns the first job")
    p.add_argument("--watch", action="store_true", help="follow the job; exit 0/1/3 as it succeeds/fails/is cancelled")
    p.set_defaults(func=cmd_jobs_create)
    p = _json_flag(jobs.add_parser("compare", help="queue a comparison: several strategies on one split, one "
                                   "recommendation (--watch to follow it)"))
    _training_data_args(p, "default: the task's", "STRATEGY.KEY=VALUE")
    p.add_argument("--strategies", help="comma-separated (default: the dataset's task's default comparison)")
    add_budget_args(p)
    p.add_argument("--idempotency-key", help="sending the same key again returns the first comparison")
    p.add_argument("--watch", action="store_true", help="follow it; exit 0/1/3 as it succeeds/fails/is cancelled")
    p.set_defaults(func=cmd_jobs_compare)
    p = _json_flag(jobs.add_parser("bench-hardware", help="measure the server's worker machine (a job, billed; "
                                   "quick by default, --watch to follow it)"))
    p.add_argument("--full", action="store_true", help="every catalog model (about 15 min) instead of the quick run")
    p.add_argument("--device-only", action="store_true", help="the device figures only, no model runs (about 15 s)")
    p.add_argument("--idempotency-key", help="sending the same key again returns the first job")
    p.add_argument("--watch", action="store_true", help="follow it; exit 0/1/3 as it succeeds/fails/is cancelled")
    p.set_defaults(func=cmd_jobs_bench)
    from .batch import add_remote

    add_remote(jobs, _watch)
    p = _json_flag(jobs.add_parser("watch", help="follow a job live; exit 0 succeeded, 1 failed, 3 cancelled"))
    p.add_argument("job_id")
    p.set_defaults(func=cmd_jobs_watch)
    p = _json_flag(jobs.add_parser("cancel", help="cancel a job (a running one stops at a checkpoint)"))
    p.add_argument("job_id")
    p.set_defaults(func=cmd_jobs_cancel)
    p = _json_flag(jobs.add_parser("resume", help="resume a cancelled or paused run from its last checkpoint"))
    p.add_argument("job_id")
    p.add_argument("--watch", action="store_true", help="follow it; exit 0/1/3 as it succeeds/fails/is cancelled")
    p.set_defaults(func=cmd_jobs_resume)
    p = _json_flag(jobs.add_parser("events", help="a job's events"))
    p.add_argument("job_id")
    p.add_argument("--after", type=int, default=0, help="only events after this id")
    p.add_argument("--type", help="only events of this type (status, progress, metrics, log, checkpoint)")
    p.set_defaults(func=cmd_jobs_events)

    models = groups["models"]
    p = _json_flag(models.add_parser("predict", help="remote: label texts with a tuned model on the server"))
    p.add_argument("model_id")
    p.add_argument("texts", nargs="+")
    p.set_defaults(func=cmd_models_predict)
    p = _json_flag(models.add_parser("get", help="remote: one model (catalog or tuned) on the server"))
    p.add_argument("model_id")
    p.set_defaults(func=cmd_models_get)
    p = _json_flag(models.add_parser("rename", help="remote: give a tuned model a new name (its id stays)"))
    p.add_argument("model_id")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_rename)
    _deployments(sub.add_parser("deployments", help="remote: tuned models served by the server (OpenAI-"
                                "compatible chat/completions, classifier predict)").add_subparsers(dest="action",
                                                                                                  required=True))


def _deployments(dep) -> None:
    p = _json_flag(dep.add_parser("create", help="serve tuned models: adapters of one base, one classifier, or "
                                  "a catalog causal LM"))
    p.add_argument("models", nargs="+", help="tuned model ids (or one catalog causal LM)")
    p.add_argument("--name", default="")
    p.add_argument("--replicas", type=int, default=1, help="model server processes (1-4)")
    p.add_argument("--idle-seconds", type=float, default=900.0, help="unloaded after this long idle (0: never)")
    p.add_argument("--engine", choices=["torch", "onnx", "onnx-int8"], default="torch",
                   help="onnx/onnx-int8: classifiers on onnxruntime")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="classifiers: micro-batching window (0: off)")
    p.add_argument("--wait", action="store_true", help="wait until it is ready")
    p.set_defaults(func=cmd_deployments_create)
    _json_flag(dep.add_parser("list", help="your deployments")).set_defaults(func=cmd_deployments_list)
    for action, func, what in (("get", cmd_deployments_get, "one deployment"),
                               ("delete", cmd_deployments_delete, "stop a deployment and forget it")):
        p = _json_flag(dep.add_parser(action, help=what))
        p.add_argument("deployment_id")
        p.set_defaults(func=func)
    p = _json_flag(dep.add_parser("predict", help="label texts with a classifier deployment"))
    p.add_argument("deployment_id")
    p.add_argument("texts", nargs="+")
    p.set_defaults(func=cmd_deployments_predict)


def _deployment_line(d) -> str:
    return (f"{d.id}  {d.kind:<8} {d.state:<13} {d.requests_served:>7} requests  "
            f"{d.prompt_tokens + d.completion_tokens:>8} tokens  {', '.join(d.models)}")


@remote
def cmd_deployments_create(client, args) -> int:
    d = client.deployments.create(args.models, name=args.name, replicas=args.replicas, idle_seconds=args.idle_seconds,
                                  engine=args.engine, batch_window_ms=args.batch_window_ms)
    if args.wait:
        d = client.deployments.wait(d.id)
    dump(d) if args.json else print(_deployment_line(d))
    return EXIT_OK


@remote
def cmd_deployments_list(client, args) -> int:
    items = client.deployments.list()
    if args.json:
        dump(items)
    else:
        for d in items:
            print(_deployment_line(d))
    return EXIT_OK


@remote
def cmd_deployments_get(client, args) -> int:
    d = client.deployments.get(args.deployment_id)
    dump(d) if args.json else print(_deployment_line(d))
    return EXIT_OK


@remote
def cmd_deployments_delete(client, args) -> int:
    out = client.deployments.delete(args.deployment_id)
    dump(out) if args.json else print(f"{args.deployment_id}  deleted")
    return EXIT_OK


@remote
def cmd_deployments_predict(client, args) -> int:
    preds = client.deployments.predict(args.deployment_id, args.texts)
    if args.json:
        dump(preds)
    else:
        for p in preds:
            print(f"{p.label}\t{p.score:.3f}\t{p.text}")
    return EXIT_OK


def _training_data_args(p: argparse.ArgumentParser, model_help: str, set_metavar: str) -> None:
    """What a training job and a comparison job both take: the dataset, model, test set,
    hyperparameters and row limit."""
    p.add_argument("dataset_id")
    p.add_argument("--model", help=model_help)
    p.add_argument("--test-dataset", dest="test_dataset_id", help="a dataset id to test on (default: a split)")
    p.add_argument("--set", action="append", default=[], metavar=set_metavar, help="a hyperparameter")
    p.add_argument("--limit", type=int, help="use a stratified subset of N training rows")


def _json_flag(p):
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _dataset_line(d) -> str:
    return (f"{d.id}  {d.name or d.filename:<28} {d.status:<8} {d.rows or 0:>7} rows  {d.labels or 0:>4} labels  "
            f"text={d.text_column} label={d.label_column}")


@remote
def cmd_datasets_upload(client, args) -> int:
    d = client.datasets.upload(args.file, text_column=args.text_column, label_column=args.label_column,
                               name=args.name)
    if args.json:
        dump(d)
    else:
        print(_dataset_line(d))
        for w in ((d.report or {}).get("warnings") or [])[:10]:
            _say(f"  warning: {w.get('message', w) if isinstance(w, dict) else w}")
    return EXIT_OK


@remote
def cmd_datasets_rename(client, args) -> int:
    d = client.datasets.rename(args.dataset_id, args.name)
    dump(d) if args.json else print(f"{d.id}  {d.name}")
    return EXIT_OK


@remote
def cmd_models_rename(client, args) -> int:
    m = client.models.rename(args.model_id, args.name)
    dump(m) if args.json else print(f"{m.id}  {m.name}")
    return EXIT_OK


@remote
def cmd_datasets_list(client, args) -> int:
    items = client.datasets.list()
    if args.json:
        dump(items)
    else:
        for d in items:
            print(_dataset_line(d))
    return EXIT_OK


@remote
def cmd_datasets_get(client, args) -> int:
    d = client.datasets.get(args.dataset_id)
    if args.json:
        dump(d)
    else:
        print(_dataset_line(d))
    return EXIT_OK


def _job_line(j) -> str:
    what = j.spec.get("strategy") or ",".join(j.spec.get("strategies") or [])
    if j.kind == "bench-hardware":
        what = "device-only" if j.spec.get("sweep") is False else ("quick" if j.spec.get("quick", True) else "full")
    extra = f"  model {j.fine_tuned_model}" if j.fine_tuned_model else ""
    if j.placement:
        from ..contract.resources import placement_line

        extra += f"  {placement_line(j.placement).lower()}"
    if j.error:
        extra += f"  error {j.error.code}: {j.error.message[:120]}"
    return f"{j.id}  {j.kind:<7} {j.status:<10} {what:<14} {j.spec.get('model', '')}{extra}"


@remote
def cmd_jobs_list(client, args) -> int:
    items = client.jobs.list(limit=args.limit, status=args.status)
    if args.json:
        dump(items)
    else:
        for j in items:
            print(_job_line(j))
    return EXIT_OK


@remote
def cmd_jobs_get(client, args) -> int:
    j = client.jobs.get(args.job_id)
    dump(j) if args.json else print(_job_line(j))
    return EXIT_OK


@remote
def cmd_jobs_create(client, args) -> int:
    job = client.jobs.create(args.dataset_id, strategy=args.strategy, model=args.model,
                             params=split_set(args.set, json_values=True), test_dataset_id=args.test_dataset_id,
                             limit=args.limit, idempotency_key=args.idempotency_key, processes=args.processes,
                             **({"model_name": args.model_name} if args.model_name else {}))
    if job.billing and not args.json:
        _say(estimate_line(job.billing))
    if not args.watch:
        dump(job) if args.json else print(job.id)
        return EXIT_OK
    _say(f"job {job.id} {job.status}")
    return _watch(client, job.id, args.json)


@remote
def cmd_jobs_compare(client, args) -> int:
    names = [s.strip() for s in (args.strategies or "").split(",") if s.strip()]
    params = {name: split_set(items, json_values=True) for name, items in split_set_by_strategy(args.set).items()}
    cmp = client.comparisons.create(args.dataset_id, strategies=names or None, model=args.model,
                                    test_dataset_id=args.test_dataset_id, strategy_params=params or None,
                                    limit=args.limit, budget=args.budget, budget_usd=args.budget_usd,
                                    exhaustive=args.exhaustive, idempotency_key=args.idempotency_key)
    if cmp.job is not None and cmp.job.billing and not args.json:
        _say(estimate_line(cmp.job.billing))
    if not args.watch:
        dump(cmp) if args.json else print(cmp.id)
        return EXIT_OK
    _say(f"comparison {cmp.id} {cmp.status}" + (f", budget {_budget_text(cmp.budget)}" if cmp.budget else ""))
    return _watch(client, cmp.id, args.json)


@remote
def cmd_jobs_bench(client, args) -> int:
    job = client.run_hardware_benchmark(quick=not args.full, sweep=not args.device_only,
                                        idempotency_key=args.idempotency_key)
    if job.billing and not args.json:
        _say(estimate_line(job.billing))
    if not args.watch:
        dump(job) if args.json else print(job.id)
        return EXIT_OK
    _say(f"benchmark {job.id} {job.status}")
    return _watch(client, job.id, args.json)


def _budget_text(budget: dict) -> str:
    parts = [f"{budget['seconds']:.0f} s" if budget.get("seconds") is not None else None,
             f"${budget['usd']:.2f}" if budget.get("usd") is not None else None]
    return " or ".join(p for p in parts if p)


@remote
def cmd_jobs_watch(client, args) -> int:
    return _watch(client, args.job_id, args.json)


class Watcher:
    """Renders a job's events: a tqdm bar per progress phase (loss, validation F1, ETA), status
    transitions, metrics, and warnings as lines."""

    def __init__(self, bar: bool | None = None, out=None, err=None):
        self.bar_enabled = sys.stderr.isatty() if bar is None else bar
        self.out, self.err = out, err
        self.bar, self.phase = None, None

    def __call__(self, event) -> None:
        if event.type == "progress":
            self._progress(event.data)
        elif event.type == "status":
            to = event.data.get("to", "")
            came = event.data.get("from")
            self._line(f"{came} -> {to}: {event.message}" if came else f"{to}: {event.message}")
            if to in ("succeeded", "failed", "cancelled"):
                self.close()
        elif event.type == "metrics" or event.level in ("warning", "error"):
            self._line(f"{event.type}: {event.message}")

    def _line(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.out or sys.stdout)

    def _progress(self, data: dict) -> None:
        if not self.bar_enabled:
            return
        from tqdm import tqdm

        phase, total, step = data.get("phase", "train"), int(data.get("total_steps") or 0), int(data.get("step") or 0)
        if self.bar is None or phase != self.phase or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total or None, desc=phase, initial=step, dynamic_ncols=True, leave=False,
                            file=self.err or sys.stderr)
            self.phase = phase
        self.bar.n = step
        post = {}
        if data.get("loss") is not None:
            post["loss"] = f"{data['loss']:.4f}"
        if data.get("eval_metric") is not None:
            post["val_f1"] = f"{data['eval_metric']:.3f}"
        if data.get("eta_s") is not None:
            post["eta"] = _duration(data["eta_s"])
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.phase = None, None


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _watch(client, job_id: str, as_json: bool) -> int:
    watcher = Watcher(out=sys.stderr if as_json else None)
    try:
        job = client.jobs.watch(job_id, on_event=watcher)
    except KeyboardInterrupt:
        watcher.close()
        _say(f"\nstopped watching; job {job_id} goes on (`tunelab jobs watch {job_id}` to follow it again)")
        return EXIT_INTERRUPTED
    finally:
        watcher.close()
    if as_json:
        dump(job)
    else:
        metrics = (job.result or {}).get("metrics") or {}
        summary = f"job {job.id} {job.status}"
        if job.fine_tuned_model:
            summary += f": model {job.fine_tuned_model}"
        if "macro_f1" in metrics:
            summary += f" (macro-F1 {metrics['macro_f1']:.3f}, accuracy {metrics.get('accuracy', 0):.3f})"
        if job.kind == "compare" and (job.result or {}).get("recommended"):
            summary += f": recommended {job.result['recommended']}"
        bench = (job.result or {}).get("benchmark") if job.kind == "bench-hardware" else None
        if isinstance(bench, dict):
            slower = (bench.get("comparison") or {}).get("regressions") or []
            summary += (f": stored for {bench.get('worker')}, {len(bench.get('figures') or [])} figures, "
                        f"{len(bench.get('models') or [])} model rows"
                        + (f"; slower than the run before: {', '.join(slower)}" if slower else ""))
        if job.error:
            summary += f": {job.error.code}: {job.error.message}"
        print(summary)
    return JOB_EXIT.get(job.status, EXIT_ERROR)


@remote
def cmd_jobs_cancel(client, args) -> int:
    job = client.jobs.cancel(args.job_id)
    if args.json:
        dump(job)
    else:
        state = "cancel requested (it stops at its next checkpoint)" if job.status != "cancelled" else "cancelled"
        print(f"job {job.id}: {state}")
    return EXIT_OK


@remote
def cmd_jobs_resume(client, args) -> int:
    job = client.jobs.resume(args.job_id)
    step = next((e.data.get("step") for e in reversed(client.jobs.events(job.id, type="status").data)
                 if e.data.get("reason") == "resumed"), None) if not args.json else None
    if not args.watch:
        dump(job) if args.json else print(f"job {job.id}: {job.status}, resuming from its checkpoint at step {step}")
        return EXIT_OK
    _say(f"job {job.id} {job.status}, resuming from step {step}")
    return _watch(client, job.id, args.json)


@remote
def cmd_jobs_events(client, args) -> int:
    after, events = args.after, []
    while True:
        page = client.jobs.events(args.job_id, after=after, type=args.type)
        events += page.data
        if len(page.data) < 500:
            break
        after = page.last_id
    if args.json:
        dump(events)
    else:
        for e in events:
            print(f"{e.id:>6}  {e.created_at or '':<26} {e.type:<10} {e.level:<7} {e.message}")
    return EXIT_OK


@remote
def cmd_models_predict(client, args) -> int:
    preds = client.models.predict(args.model_id, args.texts)
    if args.json:
        dump(preds)
    else:
        for p in preds:
            print(f"{p.label}\t{p.score:.3f}\t{p.text}")
    return EXIT_OK


@remote
def cmd_models_get(client, args) -> int:
    m = client.models.get(args.model_id)
    if args.json:
        dump(m)
    else:
        print(f"{m.id}  {m.kind}  base {m.base_model or '-'}  strategy {m.strategy or '-'}  metrics "
              f"{json.dumps({k: v for k, v in (m.metrics or {}).items() if k in ('macro_f1', 'accuracy')})}")
    return EXIT_OK
