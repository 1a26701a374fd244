"""Commands for generative models: `models import-llama2c`, `models import-gguf`, `generate`, and
`train`/`compare` on conversations, plain text and preference pairs (called from cli.py)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

EXIT_DATA, EXIT_CONFIG = 1, 2
GENERATIVE_STRATEGIES = ("sft-full", "sft-lora", "sft-qlora", "dpo")


def _guarded(func):
    """The exit statuses of cli.main for commands dispatched through set_defaults(func=...)."""
    @functools.wraps(func)
    def run(args) -> int:
        from .artifacts import ArtifactError
        from .data import DataError
        from .models import ModelNotFound, UnsafeModel
        from .models.llama2c import ImportFailed
        from .strategies import ConfigError

        try:
            return func(args)
        except DataError as exc:
            print(f"error: the data cannot be used:\n{exc}", file=sys.stderr)
            return EXIT_DATA
        except (ConfigError, ModelNotFound, UnsafeModel, ArtifactError, ImportFailed) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    return run


def extend(sub, groups) -> None:
    models = groups["models"]
    p = models.add_parser("import-llama2c", help="convert a llama2.c checkpoint + SentencePiece tokenizer")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("tokenizer", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_guarded(cmd_import_llama2c))
    p = models.add_parser("import-gguf", help="import a GGUF model (dequantised) as a safetensors folder")
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_guarded(cmd_import_gguf))

    g = sub.add_parser("generate", help="stream a causal LM's answer to a prompt")
    g.add_argument("model", help="a tuned model folder, a model folder or a catalog name")
    g.add_argument("prompt")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--raw", action="store_true", help="no chat template: continue the prompt as text")
    g.set_defaults(func=_guarded(cmd_generate))


def cmd_import_llama2c(args) -> int:
    from .models.llama2c import import_llama2c

    out = import_llama2c(args.checkpoint, args.tokenizer, args.out)
    print(f"imported {args.checkpoint.name} into {out} (transformers LlamaForCausalLM, safetensors)")
    return 0


def cmd_import_gguf(args) -> int:
    from .models.gguf_import import import_gguf

    out = import_gguf(args.file, args.out)
    print(f"imported {args.file.name} into {out} (dequantised to float32, safetensors)")
    return 0


def load_generator(ref: str):
    """A CausalLMModel from a tuned artifact folder, a model folder or a catalog name."""
    from .artifacts import load_artifact
    from .models import resolve_model
    from .models.causal import load_causal_lm, load_chat_tokenizer
    from .models.lm_predictors import CausalLMModel
    from .strategies import ConfigError

    path = Path(ref).expanduser()
    if (path / "manifest.json").is_file():
        lm = load_artifact(path)
        if not isinstance(lm, CausalLMModel):
            raise ConfigError(f"{path} is a {lm.kind} model, not a generative one: use `tunelab predict`")
        return lm
    spec = resolve_model(ref)
    if spec.kind != "causal-lm":
        raise ConfigError(f"{spec.name} is not a causal language model")
    return CausalLMModel(load_causal_lm(spec.path), load_chat_tokenizer(spec.path), spec.ref)


def cmd_generate(args) -> int:
    from .models.generation import GenerationSettings

    lm = load_generator(args.model)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, stop=args.stop, seed=args.seed)
    for piece in lm.stream(args.prompt, settings, raw=args.raw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def is_generative_run(args) -> bool:
    from .data.generative import sniff_file

    names = [getattr(args, "strategy", None)] + (getattr(args, "strategies", "") or "").split(",")
    if any(n and n.strip() in GENERATIVE_STRATEGIES for n in names):
        return True
    return sniff_file(args.file) is not None


def _prepare(args):
    from .models import resolve_model
    from .runner_generative import GenerativeDataSpec, prepare_generative

    model = resolve_model(args.model)
    spec = GenerativeDataSpec(args.file, args.test, args.limit, args.seed,
                              plain=args.file.suffix.lower() in (".txt", ".md", ".text"))
    return model, prepare_generative(spec, model)


def cmd_train_generative(args, progress) -> int:
    from .runner_generative import run_generative

    model, data = _prepare(args)
    result = run_generative(model, data, args.strategy, args.set, out=args.out, auto_fit=args.auto_fit,
                            progress=progress)
    progress.close()
    m = result.metrics
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "samples"}, indent=2, default=str))
    else:
        parts = [f"{k.replace('_', ' ')} {m[k]:.4g}" for k in ("test_loss", "base_test_loss", "test_perplexity",
                 "exact_match", "token_f1", "margin", "base_margin") if m.get(k) is not None]
        print(f"{result.strategy}: {', '.join(parts)} on {m.get('test_rows')} held-out examples; trained in "
              f"{m['train_seconds']:.1f}s ({m.get('tokens_per_second') or 0:.0f} tokens/s, peak "
              f"{m['peak_rss_mb']:.0f} MB); model in {args.out}")
    return 0


def cmd_compare_generative(args, names: list[str], progress) -> int:
    from .runner_generative import run_generative
    from .strategies import ConfigError

    model, data = _prepare(args)
    overrides: dict = {}
    for item in args.set:
        name, _, rest = item.partition(".")
        overrides.setdefault(name, []).append(rest)
    rows = []
    for name in names:
        try:
            out = args.out / name if args.out else None
            r = run_generative(model, data, name, overrides.get(name), out=out, progress=progress)
            rows.append({"strategy": r.strategy, **{k: v for k, v in r.metrics.items() if k != "samples"}})
        except ConfigError as exc:
            rows.append({"strategy": name, "error": str(exc)})
    progress.close()
    if args.json:
        print(json.dumps({"results": rows}, indent=2, default=str))
        return 0
    head = f"{'strategy':<12}{'test loss':>10}{'base loss':>10}{'tok F1':>8}{'train s':>9}{'tokens/s':>10}{'peak MB':>9}{'trainable':>12}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['strategy']:<12}  not run: {r['error'].splitlines()[0][:90]}")
            continue
        print(f"{r['strategy']:<12}{r.get('test_loss', float('nan')):>10.3f}{r.get('base_test_loss', float('nan')):>10.3f}"
              f"{r.get('token_f1', float('nan')):>8.3f}{r['train_seconds']:>9.1f}{r.get('tokens_per_second') or 0:>10.0f}"
              f"{r['peak_rss_mb']:>9.0f}{r['trainable_params']:>12,}")
    return 0


def cmd_inspect_generative(args) -> int:
    from .data.generative import read_generative
    from .data.generative_checks import validate_generative
    from .models import resolve_model
    from .models.causal import conversation_token_counter, load_chat_tokenizer

    ds = read_generative(args.file)
    spec = resolve_model(args.model)
    counter = conversation_token_counter(load_chat_tokenizer(spec.path)) if spec.kind == "causal-lm" else None
    report = validate_generative(ds, max_length=spec.max_length if counter else None, count_tokens=counter)
    if args.json:
        print(json.dumps({"format": ds.format, "kind": ds.kind, "encoding": ds.encoding, **report.to_dict()},
                         indent=2))
        return 0 if report.ok else EXIT_DATA
    stats = report.stats["train"]
    print(f"{args.file}: {ds.format} ({ds.kind}), {ds.encoding}, {len(ds)} examples"
          + (f", {stats['turns']['mean']:.1f} turns on average" if "turns" in stats else ""))
    if "length" in stats:
        print(f"length (tokens with {spec.name}'s chat template): mean {stats['length']['mean']:.0f}, "
              f"p95 {stats['length']['p95']}, max {stats['length']['max']}")
    for issue in report.errors + report.warnings:
        print(str(issue))
    print("The data can be used for training." if report.ok else "The data cannot be used as it is.")
    return 0 if report.ok else EXIT_DATA
