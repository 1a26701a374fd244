"""Text generation with a causal LM: greedy or sampled (temperature, top-p), streamed piece by
piece, ending at EOS, at max_new_tokens or at the first stop string (which is not returned).
A caller that bills or reports usage passes `stats`: it holds the number of tokens the model
produced (the EOS token included: it was computed like any other) and why the answer ended."""

from __future__ import annotations

from typing import Iterator

import torch

from .generation_settings import GenerationSettings


def _next_token(logits: torch.Tensor, s: GenerationSettings, generator: torch.Generator) -> int:
    if s.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < s.top_p      # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def stream_tokens(model, tokenizer, prompt_ids: list[int], settings: GenerationSettings,
                  device: str = "cpu", stats: dict | None = None) -> Iterator[str]:
    """Yields the decoded text as it grows (new characters only), with the KV cache. `stats`, when
    given, is filled as it goes: completion_tokens, and finish_reason ("stop": EOS or a stop
    string, "length": max_new_tokens reached), set before the last piece is yielded."""
    stats = {} if stats is None else stats
    stats.update(completion_tokens=0, finish_reason=None)
    model.eval()
    generator = torch.Generator().manual_seed(settings.seed)
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    extra = getattr(model, "generation_config", None)
    if extra is not None and extra.eos_token_id is not None:
        eos_ids |= set(extra.eos_token_id if isinstance(extra.eos_token_id, list) else [extra.eos_token_id])
    ids = torch.tensor([prompt_ids], device=device)
    past, generated, emitted = None, [], ""
    stop = [s for s in settings.stop if s]
    for _ in range(settings.max_new_tokens):
        out = model(input_ids=ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        token = _next_token(out.logits[0, -1], settings, generator)
        stats["completion_tokens"] += 1
        if token in eos_ids:
            stats["finish_reason"] = "stop"
            break
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            stats["finish_reason"] = "stop"
            if cut > len(emitted):
                yield text[len(emitted):cut]
            return
        # Hold back what could be the start of a stop string, and incomplete UTF-8 ("\ufffd").
        hold = max((len(s) - 1 for s in stop), default=0)
        safe = len(text) - hold if hold else len(text)
        while safe > len(emitted) and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > len(emitted):
            yield text[len(emitted):safe]
            emitted = text[:safe]
        ids = torch.tensor([[token]], device=device)
    if stats["finish_reason"] is None:
        stats["finish_reason"] = "length"
    text = tokenizer.decode(generated, skip_special_tokens=True)
    if len(text) > len(emitted):
        yield text[len(emitted):]


def generate_text(model, tokenizer, prompt_ids: list[int], settings: GenerationSettings,
                  device: str = "cpu", stats: dict | None = None) -> str:
    return "".join(stream_tokens(model, tokenizer, prompt_ids, settings, device, stats))
