"""Generative serving (tunelab/serving/lm_backend.py), ratios measured in one run on stories260K:

- tokens/s of 1 merged model vs 4 LoRA adapters on one base, under N concurrent streams (threads),
  each stream on its own adapter in turn (target: adapters >= 0.8x merged);
- time to first token p50/p99 of those streams (waiting for the step lock included);
- weight memory of 4 adapters on one base vs 4 merged copies (parameter bytes, each storage once;
  the copies as 4 x one merged model);
- adapter hot-load time (target < 2 s), and for SmolLM2-135M with --smollm2 (imports the catalog's
  GGUF on first use).

The adapters are LoRA r=16 on every projection with random (non-zero) weights: throughput and
memory do not depend on what an adapter learned.

    python benchmarks/bench_serving_generate.py [--streams 8] [--tokens 48] [--rounds 2] [--smollm2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path


def lora_artifacts(base: Path, base_ref: str, out: Path, n: int) -> list[Path]:
    """n LoRA artifacts of `base` (r=16 on every projection, random non-zero weights), written as a
    run writes them; the base is loaded once and the LoRA layers taken out again after each."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from tunelab.artifacts import write_artifact
    from tunelab.models.causal import load_causal_lm, load_chat_tokenizer
    from tunelab.models.lm_predictors import CausalLMModel

    model, tokenizer, folders = load_causal_lm(base), load_chat_tokenizer(base), []
    for i in range(n):
        torch.manual_seed(i)
        peft_model = get_peft_model(model, LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        lm = CausalLMModel(peft_model.eval(), tokenizer, base_ref, adapter=True)
        folders.append(write_artifact(out / f"lora{i}", lm, config={"strategy": "bench"}, metrics={},
                                      data_report={}, card="bench\n"))
        model = peft_model.unload()
    return folders


def run_streams(lm, names: list[str], tokens: int) -> dict:
    """len(names) threads, each streaming one answer from its model at once; tokens/s and TTFT."""
    from tunelab.models.generation_settings import GenerationSettings
    from tunelab.serving.lm_backend import Completion

    settings = GenerationSettings(max_new_tokens=tokens)
    ttft, counts = [0.0] * len(names), [0] * len(names)
    go = threading.Barrier(len(names) + 1)

    def stream(i: int) -> None:
        go.wait()
        t0 = time.perf_counter()
        g = lm.start(Completion(names[i], prompt=f"Once upon a time, a {['cat', 'dog', 'bird', 'fox'][i % 4]}",
                                settings=settings))
        for _ in g:
            ttft[i] = ttft[i] or time.perf_counter() - t0
        counts[i] = g.completion_tokens
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"tokens": sum(counts), "seconds": wall, "ttft": ttft}


def throughput(lm, names: list[str], tokens: int, rounds: int) -> dict:
    run_streams(lm, names, 4)                            # warm-up
    runs = [run_streams(lm, names, tokens) for _ in range(rounds)]
    ttft = sorted(x for r in runs for x in r["ttft"])
    return {"tokens_per_s": sum(r["tokens"] for r in runs) / sum(r["seconds"] for r in runs),
            "ttft_p50_ms": 1e3 * statistics.median(ttft),
            "ttft_p99_ms": 1e3 * ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))]}


def hot_load(base: Path, adapters: list[Path], repeats: int) -> float:
    """Median seconds of add(preload=True) of an adapter onto an already loaded base."""
    from tunelab.serving.lm_backend import MultiAdapterLM

    lm = MultiAdapterLM(base, max_adapters=2)
    times = [lm.add(f"a{i}", adapters[i % len(adapters)], preload=True) for i in range(repeats)]
    return statistics.median(times[1:] or times)         # the first also wraps the base in peft


def compare(base: Path, base_ref: str, tmp: Path, args) -> dict:
    """Throughput and TTFT of 1 merged model vs 4 adapters on one base; weight bytes of the 4
    adapters on one base vs 4 merged copies (4 x one merged model's bytes: they are all the same
    size); hot-load time of an adapter."""
    from tunelab.cli.generative import load_generator
    from tunelab.models.lm_predictors import save_merged
    from tunelab.serving.lm_backend import MultiAdapterLM

    adapters = lora_artifacts(base, base_ref, tmp, 4)
    merged = save_merged(load_generator(str(adapters[0])), tmp / "merged0")
    shared = MultiAdapterLM(base, max_adapters=4)
    for i, a in enumerate(adapters):
        shared.add(f"lora{i}", a, preload=True)
    one_merged = MultiAdapterLM(None)
    one_merged.add("merged0", merged, preload=True)
    merged_run = throughput(one_merged, ["merged0"] * args.streams, args.tokens, args.rounds)
    lora_run = throughput(shared, [f"lora{i % 4}" for i in range(args.streams)], args.tokens, args.rounds)
    result = {"streams": args.streams, "tokens_per_stream": args.tokens, "merged": merged_run,
              "adapters": lora_run, "throughput_ratio": lora_run["tokens_per_s"] / merged_run["tokens_per_s"],
              "bytes_4_adapters_one_base": shared.parameter_bytes(),
              "bytes_1_merged": one_merged.parameter_bytes()}
    del one_merged, shared
    result["bytes_4_merged"] = 4 * result["bytes_1_merged"]
    result["hot_load_s"] = hot_load(base, adapters, 6)
    return result


def stories(args, tmp: Path) -> dict:
    from tunelab.models.llama2c import import_llama2c

    src = args.shared / "datasets" / "models" / "stories260k-llama2c"
    base = import_llama2c(src / "checkpoint_legacy.bin", src / "tok512.model", tmp / "stories260k")
    return compare(base, str(base), tmp / "stories", args)


def smollm2(args, tmp: Path) -> dict:
    from tunelab.models import resolve_model

    t0 = time.perf_counter()
    spec = resolve_model("smollm2")                      # imports the packaged GGUF on first use
    imported = time.perf_counter() - t0
    small = argparse.Namespace(**{**vars(args), "tokens": args.smollm2_tokens, "rounds": 1})
    return {"import_s": imported, **compare(spec.path, "smollm2", tmp / "smollm2", small)}


def table(s: dict) -> list[tuple[str, str, str]]:
    return [("tokens/s, 1 merged model", f"{s['merged']['tokens_per_s']:.1f}", ""),
            ("tokens/s, 4 adapters on one base", f"{s['adapters']['tokens_per_s']:.1f}", ""),
            ("adapters / merged", f"{s['throughput_ratio']:.2f}x", "target >= 0.8x"),
            ("TTFT p50 / p99, merged (ms)", f"{s['merged']['ttft_p50_ms']:.0f} / {s['merged']['ttft_p99_ms']:.0f}", ""),
            ("TTFT p50 / p99, adapters (ms)",
             f"{s['adapters']['ttft_p50_ms']:.0f} / {s['adapters']['ttft_p99_ms']:.0f}", ""),
            ("weights, 4 adapters on one base (MB)", f"{s['bytes_4_adapters_one_base'] / 1e6:.2f}", ""),
            ("weights, 4 merged copies (MB)", f"{s['bytes_4_merged'] / 1e6:.2f}", ""),
            ("adapters / merged copies, memory", f"{s['bytes_4_adapters_one_base'] / s['bytes_4_merged']:.2f}x", ""),
            ("adapter hot-load (s)", f"{s['hot_load_s']:.3f}", "target < 2 s")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48, help="tokens per stream")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (hot-load, throughput, memory)")
    ap.add_argument("--smollm2-tokens", type=int, default=12, help="tokens per stream on SmolLM2")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-gen-"))
    result = {"stories260k": stories(args, tmp)}
    if args.smollm2:
        result["smollm2"] = smollm2(args, tmp)
    print(f"{args.streams} concurrent streams, {torch.get_num_threads()} torch thread(s); "
          "weights: parameter bytes, each storage counted once")
    for model, s in result.items():
        print(f"\n{model} ({s['tokens_per_stream']} tokens per stream)")
        for name, value, target in table(s):
            print(f"  {name:<40} {value:>14}  {target}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
