"""Commands for generative models: `models import-llama2c`, `models import-gguf`, `generate`, and
`datasets inspect` on conversations, plain text and preference pairs (train and compare are the
engine's, for every task: cli/commands.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import guarded as _guarded
from .exits import EXIT_DATA



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
    from ..models.llama2c import import_llama2c

    out = import_llama2c(args.checkpoint, args.tokenizer, args.out)
    print(f"imported {args.checkpoint.name} into {out} (transformers LlamaForCausalLM, safetensors)")
    return 0


def cmd_import_gguf(args) -> int:
    from ..models.gguf_import import import_gguf

    out = import_gguf(args.file, args.out)
    print(f"imported {args.file.name} into {out} (dequantised to float32, safetensors)")
    return 0


def load_generator(ref: str):
    """A CausalLMModel from a tuned artifact folder, a model folder or a catalog name."""
    from ..artifacts import load_artifact
    from ..models import resolve_model
    from ..models.causal import has_own_chat_template, load_causal_lm, load_chat_tokenizer
    from ..models.lm_predictors import CausalLMModel
    from ..strategies import ConfigError

    path = Path(ref).expanduser()
    if (path / "manifest.json").is_file():
        lm = load_artifact(path)
        if not isinstance(lm, CausalLMModel):
            raise ConfigError(f"{path} is a {lm.kind} model, not a generative one: use `tunelab predict`")
        return lm
    spec = resolve_model(ref)
    if spec.kind != "causal-lm":
        raise ConfigError(f"{spec.name} is not a causal language model")
    # A base model without a chat template of its own (stories260K) continues the prompt as text;
    # wrapping it in the default template makes it answer nonsense. A chat model uses its template.
    return CausalLMModel(load_causal_lm(spec.path), load_chat_tokenizer(spec.path), spec.ref,
                         chat=has_own_chat_template(spec.path))


def cmd_generate(args) -> int:
    from ..models.generation import GenerationSettings

    lm = load_generator(args.model)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, stop=args.stop, seed=args.seed)
    for piece in lm.stream(args.prompt, settings, raw=args.raw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_inspect_generative(args) -> int:
    from ..data.generative import read_generative
    from ..data.generative_checks import validate_generative
    from ..models import resolve_model
    from ..models.causal import conversation_token_counter, load_chat_tokenizer

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
