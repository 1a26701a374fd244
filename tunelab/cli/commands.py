"""tunelab's command line: inspect data, train, predict, compare. A stable interface: scripts and
the service rely on its commands, flags, exit statuses and --json shapes.

Exit statuses: 0 ok; 1 the data has errors; 2 the configuration cannot work (unknown model or
strategy, bad hyperparameters, does not fit in memory, qlora without CUDA). The whole table, with
remote mode's and the operator commands', is cli/exits.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import admin, bench, billing, generative, images, remote
from .budget import add_budget_args
from .common import say as _say, split_set_by_strategy
from .errors import UsageError, guarded
from .exits import EXIT_CONFIG, EXIT_DATA, EXIT_OK

__all__ = ["COMMANDS", "EXIT_CONFIG", "EXIT_DATA", "EXIT_OK", "build_parser", "cmd_compare", "cmd_inspect",
           "cmd_models", "cmd_predict", "cmd_strategies", "cmd_train", "main", "render_table"]


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="training data: CSV, TSV, JSON, JSONL or Parquet, or a zip/tar "
                   "(or folder) of images, one folder per class")
    p.add_argument("--test", type=Path, help="your own test file (default: a stratified 20%% split)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--limit", type=int, help="use a stratified subset of N training rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="catalog name or a local Hugging Face folder (default: minilm for "
                   "labelled texts, smollm2 for conversations and preference pairs, efficientnet-lite0 for images)")


def build_parser(extensions=()) -> argparse.ArgumentParser:
    """`extensions`: functions (sub, groups) that add commands (the service's, the remote mode's):
    the CLI stays below them in the layering and never imports the server."""
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=os.environ.get("TUNELAB_SERVER"),
                        help="remote mode: a tunelab server URL (or TUNELAB_SERVER)")
    parser.add_argument("--api-key", default=os.environ.get("TUNELAB_API_KEY"),
                        help="remote mode: your API key (or TUNELAB_API_KEY)")
    sub = parser.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="inspect datasets").add_subparsers(dest="action", required=True)
    inspect = ds.add_parser("inspect", help="validation report and stats; exit 1 on errors")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--test", type=Path)
    inspect.add_argument("--text-column")
    inspect.add_argument("--label-column")
    inspect.add_argument("--model", default="minilm", help="whose tokenizer counts lengths")
    inspect.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="the model catalog").add_subparsers(dest="action", required=True)
    models.add_parser("list", help="catalog models installed here").add_argument("--json", action="store_true")

    train = sub.add_parser("train", help="train, evaluate and write a model folder")
    _data_args(train)
    train.add_argument("--strategy", required=True)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--auto-fit", action="store_true", help="apply the cheapest change that fits memory")
    train.add_argument("--processes", type=int, default=1, metavar="N",
                       help="train on N data-parallel processes (torchrun: gloo on CPU, NCCL on GPUs); the "
                            "batch size stays the global batch; strategies with a training loop only")
    train.add_argument("--json", action="store_true")

    compare = sub.add_parser("compare", help="run several strategies on the same split, recommend one")
    _data_args(compare)
    compare.add_argument("--strategies", help="comma-separated (default: the task's default comparison; "
                         "`tunelab strategies` lists them)")
    compare.add_argument("--set", action="append", default=[], metavar="STRATEGY.KEY=VALUE")
    compare.add_argument("--out", type=Path, help="keep each strategy's model under OUT/STRATEGY")
    compare.add_argument("--auto-fit", action="store_true")
    add_budget_args(compare)
    compare.add_argument("--json", action="store_true")

    predict = sub.add_parser("predict", help="label texts with a trained model folder")
    predict.add_argument("model_dir", type=Path)
    predict.add_argument("texts", nargs="*")
    predict.add_argument("--file", type=Path, help="a data file; its text column is labelled")
    predict.add_argument("--json", action="store_true")
    from .batch import add_local

    add_local(predict)

    strategies = sub.add_parser("strategies", help="the strategies and their hyperparameters")
    strategies.add_argument("--json", action="store_true")
    groups = {"datasets": ds, "models": models}
    # remote adds groups["jobs"], admin groups["admin"]: billing adds commands to both.
    for extend in (remote.extend, admin.extend, billing.extend, generative.extend, bench.extend, *extensions):
        extend(sub, groups)
    return parser


def _progress(enabled: bool):
    from ..training.progress import TqdmProgress

    return TqdmProgress(enabled=enabled and sys.stderr.isatty())


def cmd_inspect(args) -> int:
    from ..data import read_table, validate
    from ..strategies.generative import read_kind
    from ..models import resolve_model, token_counter

    if images.is_images(args.file):   # an archive or folder of images, one folder per class
        return images.cmd_inspect_images(args)
    if read_kind(args.file):          # conversations, plain text, preference pairs
        return generative.cmd_inspect_generative(args)
    spec = resolve_model(args.model)
    train = read_table(args.file, text_column=args.text_column, label_column=args.label_column)
    test = read_table(args.test, text_column=train.text_column, label_column=train.label_column) if args.test else None
    report = validate(train, test, max_length=spec.max_length, count_tokens=token_counter(spec))
    if args.json:
        print(json.dumps({"columns": {"text": train.text_column, "label": train.label_column},
                          "encoding": train.encoding, "format": train.format, **report.to_dict()}, indent=2))
    else:
        print(f"{args.file}: {train.format}, {train.encoding}, text column {train.text_column!r}, "
              f"label column {train.label_column!r}")
        _print_stats(report.stats.get("train", {}))
        print(report.render())
    return EXIT_OK if report.ok else EXIT_DATA


def _print_stats(stats: dict) -> None:
    if not stats:
        return
    print(f"rows: {stats.get('rows')}, labels: {stats.get('num_labels')}")
    for label, count in list(stats.get("label_counts", {}).items())[:20]:
        print(f"  {label:<30} {count}")
    length = stats.get("length", {})
    print(f"length ({stats.get('length_unit')}): mean {length.get('mean', 0):.1f}, p95 {length.get('p95')}, "
          f"max {length.get('max')}")


def _prepare(args):
    """The model and the data split for the file's task (its content decides: a table of texts and
    labels, or conversations / plain text / preference pairs)."""
    from ..engine import DataSpec, prepare_data, task_of_file
    from ..models import resolve_model

    model = resolve_model(args.model or task_of_file(args.file).default_model)
    data = prepare_data(DataSpec(args.file, args.test, args.text_column, args.label_column, args.limit,
                                 args.seed), model)
    return model, data


def cmd_train(args) -> int:
    from ..training import launch

    if launch.is_rank():
        return _train_rank(args)
    if args.processes != 1:
        return _train_on_ranks(args)
    return _train(args)


def _train_on_ranks(args) -> int:
    """This process becomes the agent of N ranks, each running this same command."""
    from ..settings import get_settings
    from ..strategies import ConfigError, get_strategy
    from ..training import launch

    if not 1 < args.processes <= 64:
        raise UsageError("--processes takes 1 to 64")
    if not get_strategy(args.strategy).distributed:
        raise ConfigError(f"{args.strategy} has no training loop to spread over {args.processes} processes; "
                          "leave out --processes")
    argv = getattr(args, "argv", None) or sys.argv[1:]
    return launch.launch(["-m", "tunelab", *argv], args.processes, max_restarts=get_settings().ddp_max_restarts,
                         cpus=os.cpu_count() or 1, report=lambda message: _say(f"error: {message}"))


def _train_rank(args) -> int:
    """One rank: rank 0 trains, reports and writes the model folder; the others train only (what
    they would write goes to a scratch folder, deleted)."""
    import shutil
    import tempfile

    from ..training import launch
    from ..training.distributed import RankDone, World

    launch.join_as_rank()
    world = World.from_env()
    scratch = None if world.is_main else Path(tempfile.mkdtemp(prefix=f"tunelab-rank{world.rank}-"))
    try:
        code = guarded(lambda a: _train(a, out=scratch, quiet=not world.is_main))(args)
    except RankDone:
        code = EXIT_OK
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    # the CLI's answers (done, bad data, bad configuration) end a rank normally: not restarted
    return launch.rank_exit(code, answers=(EXIT_OK, EXIT_DATA, EXIT_CONFIG))


def _train(args, out: Path | None = None, quiet: bool = False) -> int:
    """out: where the model folder goes instead of --out (checkpoints stay under --out)."""
    from ..engine import run_strategy

    model, data = _prepare(args)
    progress = _progress(not args.json and not quiet)
    result = run_strategy(model, data, args.strategy, args.set, out=out or args.out, work_dir=args.out,
                          auto_fit=args.auto_fit, progress=progress)
    progress.close()
    if quiet:
        return EXIT_OK
    m = result.metrics
    if result.plan.applied:
        _say(f"auto-fit: {result.plan.applied}")
    if result.notes.get("resumed_from_step"):
        _say(f"resumed from checkpoint at step {result.notes['resumed_from_step']}")
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k not in ("per_class", "confusion_matrix")}, indent=2,
                         default=str))
    else:
        print(f"{data.task.headline(result.strategy, m)}; model in {args.out}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from ..engine import Budget, compare

    names = [s.strip() for s in (args.strategies or "").split(",") if s.strip()]
    params = split_set_by_strategy(args.set)
    budget = Budget(args.budget, args.budget_usd) if args.budget is not None or args.budget_usd is not None else None
    model, data = _prepare(args)
    progress = _progress(not args.json)
    result = compare(model, data, names or None, params=params, out_root=args.out,
                     auto_fit=args.auto_fit, progress=progress, budget=budget, exhaustive=args.exhaustive)
    progress.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return EXIT_OK
    print(f"{len(data.splits.train)} train / {len(data.splits.validation)} validation / "
          f"{len(data.splits.test)} test rows ({data.splits.test_origin} test set), model {model.name}"
          + (f"; budget {budget.describe()}" if budget else "") + "\n")
    print(render_table(result.results, data.task.columns))
    print(f"\nrecommended: {result.recommended}: {result.reason}")
    return EXIT_OK


EFFICIENCY_COLUMNS = (("tokens_per_s", "tokens/s", "{:,.0f}"), ("mfu", "MFU", "{:.0%}"))


def render_table(rows: list[dict], columns) -> str:
    """The task's columns (key, header, format), one row a strategy; a strategy that did not run says
    why. A number with an interval in the row (`<key>_interval`, e.g. macro-F1's) shows it:
    "0.950 (0.86–0.99)", the 95% interval over the test rows."""
    from ..evaluation.intervals import format_short

    def cell(r: dict, key: str, fmt: str) -> str:
        if r.get(key) is None:
            return "-"
        interval = r.get(f"{key}_interval")
        return format_short(r[key], interval) if interval else fmt.format(r[key])

    done = [r for r in rows if "error" not in r]
    if any(r.get("tokens_per_s") for r in done):      # every task's runs: how fast they ran here
        columns = (*columns, *EFFICIENCY_COLUMNS)
    cells = [[cell(r, key, fmt) for key, _, fmt in columns] for r in done]
    widths = [max([len(header) + 2, 9] + [len(c[i]) + 2 for c in cells]) for i, (_, header, _) in enumerate(columns)]
    name_w = max([16] + [len(r.get("strategy", "")) + 2 for r in rows])
    head = f"{'strategy':<{name_w}}" + "".join(f"{h:>{w}}" for (_, h, _), w in zip(columns, widths))
    lines = [head, "-" * len(head)]
    by_row = iter(cells)
    for r in rows:
        if r.get("skipped") or r.get("stopped"):     # a comparison that spends little says what it spared
            lines.append(f"{r['strategy']:<16}  {r['reason']}")
            if r.get("curve"):
                lines.append(f"{'':<18}validation curve (step: metric): "
                             + ", ".join(f"{c['step']}: {c['metric']:.3f}" for c in r["curve"][-8:]))
            continue
        if "error" in r:
            lines.append(f"{r['strategy']:<16}  not run: {r['error'].splitlines()[0][:90]}")
            continue
        lines.append(f"{r['strategy']:<{name_w}}" + "".join(f"{c:>{w}}" for c, w in zip(next(by_row), widths)))
    if any(r.get("quality_interval") for r in done):
        lines.append("(in brackets: the 95% interval over the test rows)")
    if any(r.get("mfu") is not None for r in done):
        lines.append("(MFU: the share of this machine's measured matrix-product peak the run's training or "
                     "encoding used)")
    return "\n".join(lines)


def cmd_predict(args) -> int:
    from ..artifacts import ArtifactError, load_artifact

    predictor = load_artifact(args.model_dir)
    if predictor.kind == "causal-lm":
        raise ArtifactError(f"{args.model_dir} is a generative model: use `tunelab generate {args.model_dir} PROMPT`")
    if getattr(args, "out", None) is not None:
        if not args.file or args.texts:
            raise SystemExit("--out writes the predictions of --file: give a file, not texts")
        from .batch import predict_to_file

        return predict_to_file(predictor, args)
    if images.predicts_images(predictor):     # an image model: the arguments are image files
        return images.cmd_predict_images(predictor, args)
    texts = list(args.texts)
    if args.file:
        texts += _texts_from_file(args.file)
    if not texts:
        raise SystemExit("give texts to label, or --file")
    proba = predictor.predict_proba(texts)
    names = predictor.label_names
    rows = [{"text": t, "label": names[int(p.argmax())], "score": float(p.max()),
             "probabilities": {n: float(x) for n, x in zip(names, p)}} for t, p in zip(texts, proba)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['label']}\t{r['score']:.3f}\t{r['text']}")
    return EXIT_OK


def _texts_from_file(path: Path) -> list[str]:
    """Texts to label may come without labels: a plain text file is one text a line."""
    from ..data import DataError, read_table

    if path.suffix.lower() in (".txt", ""):
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    try:
        return read_table(path).texts
    except DataError:
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def cmd_models(args) -> int:
    from ..models import list_models

    specs = [s.to_dict() for s in list_models()]
    if args.json:
        print(json.dumps(specs, indent=2))
    else:
        for s in specs:
            print(f"{s['name']:<10} {s['task']:<22} {s['parameters']/1e6:6.1f}M params  max {s['max_length']} "
                  f"tokens  {s['license']}")
    return EXIT_OK


def cmd_strategies(args) -> int:
    from ..strategies import available, get_strategy

    out = []
    for name in available():
        s = get_strategy(name)
        out.append({"name": name, "family": s.family, "summary": s.summary,
                    "params": {k: {"default": f.default if not callable(f.default_factory) else f.default_factory(),
                                   "description": f.description} for k, f in s.Params.model_fields.items()}})
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for s in out:
            print(f"{s['name']:<13} [{s['family']}] {s['summary']}")
            print("    " + ", ".join(f"{k}={v['default']}" for k, v in s["params"].items()))
    return EXIT_OK


COMMANDS = {"inspect": cmd_inspect, "train": cmd_train, "compare": cmd_compare, "predict": cmd_predict,
            "list": cmd_models, "strategies": cmd_strategies}


def main(argv: list[str] | None = None, extensions=()) -> int:
    """Run one command; its exit status. `extensions` as for build_parser."""
    from ..logs import quiet_libraries

    quiet_libraries()
    args = build_parser(extensions).parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]     # what ranks of `train --processes` run
    command = getattr(args, "func", None) or \
        COMMANDS[getattr(args, "action", None) if args.command in ("datasets", "models") else args.command]
    return guarded(command)(args)


if __name__ == "__main__":
    sys.exit(main())
