"""Causal language models: safe loading, chat templates, and turning conversations into
training examples whose loss falls on the assistant's tokens only.

Masking works on characters, not on separately tokenised pieces: the whole conversation is
rendered once with the chat template, each assistant turn's span (its text plus the template's
end-of-turn marker, so the model learns to stop) is located by rendering the conversation up to
that turn, and a token is trained when its first character lies in such a span. Tokenising the
pieces separately would change the tokens at their seams (SentencePiece's dummy prefix).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .catalog import check_model_folder
from .loading import SAFE_KWARGS, load_tokenizer

IGNORE = -100

# For models without a chat template (base models such as stories260K). Documented in the README:
# "### User:" / "### Assistant:" headers, the assistant's turn ends with the EOS token.
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### User:\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}### Assistant:\n{{ m['content'] }}{{ eos_token }}\n\n"
    "{% else %}{{ m['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}")


def is_causal_lm_folder(path: Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in archs)


def load_causal_lm(path: Path, *, attention: str | None = None):
    from transformers import AutoModelForCausalLM

    check_model_folder(Path(path))
    kwargs = {"attn_implementation": attention} if attention else {}
    import torch

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **SAFE_KWARGS, **kwargs)


def load_chat_tokenizer(path: Path):
    """The model's tokenizer with a pad token and a chat template (the default one if it has none)."""
    tokenizer = load_tokenizer(Path(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def has_own_chat_template(path: Path) -> bool:
    return bool(load_tokenizer(Path(path)).chat_template)


def _dicts(messages) -> list[dict]:
    return [{"role": m.role, "content": m.content} if hasattr(m, "role") else dict(m) for m in messages]


def render(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(_dicts(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _adds_bos(tokenizer, text: str) -> bool:
    """Whether to let the tokenizer add its special tokens: only when the text does not already
    start with the BOS token the template wrote itself."""
    bos = tokenizer.bos_token
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    if not bos or not probe or probe[0] != tokenizer.bos_token_id:
        return False
    return not text.startswith(bos)


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def assistant_spans(tokenizer, messages) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained assistant turns."""
    messages = list(messages)
    full = render(tokenizer, messages)
    spans, search_from = [], 0
    for i, m in enumerate(messages):
        if m.role != "assistant" or not getattr(m, "train", True):
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[:i + 1])
        if full.startswith(before) and full.startswith(upto) and len(upto) > len(before):
            spans.append((len(before), len(upto)))
            search_from = len(upto)
            continue
        # Templates that rewrite earlier turns (e.g. drop past reasoning): find the content itself.
        at = full.find(m.content, search_from)
        if at < 0:
            raise ValueError(f"the chat template does not reproduce assistant turn {i + 1} verbatim")
        spans.append((at, at + len(m.content)))
        search_from = at + len(m.content)
    return full, spans


def encode_conversation(tokenizer, messages, max_length: int) -> EncodedExample:
    """input_ids and labels (IGNORE everywhere but the assistant turns; plain text: every token)."""
    messages = list(messages)
    if len(messages) == 1 and messages[0].role == "text":
        ids = tokenizer(messages[0].content, add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        labels = list(ids)
        if ids and ids[0] == tokenizer.bos_token_id:
            labels[0] = IGNORE
    else:
        text, spans = assistant_spans(tokenizer, messages)
        enc = tokenizer(text, add_special_tokens=_adds_bos(tokenizer, text), return_offsets_mapping=True)
        ids = enc["input_ids"]
        labels = [IGNORE] * len(ids)
        for j, (start, end) in enumerate(enc["offset_mapping"]):
            if end > start and any(a <= start < b for a, b in spans):
                labels[j] = ids[j]
    labels[0] = IGNORE          # never predicted from a previous example when packed
    truncated = len(ids) > max_length
    return EncodedExample(ids[:max_length], labels[:max_length], truncated)


def encode_prompt(tokenizer, messages) -> list[int]:
    """Token ids of a conversation that ends where the assistant's answer should begin."""
    text = render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=_adds_bos(tokenizer, text))["input_ids"]


def conversation_token_counter(tokenizer):
    """examples (Conversation or PreferencePair) -> token counts, for validation's too_long."""
    def count(examples) -> list[int]:
        out = []
        for e in examples:
            if hasattr(e, "chosen"):
                longest = max(e.chosen, e.rejected, key=len)
                out.append(len(encode_prompt(tokenizer, e.prompt)) + len(tokenizer(longest)["input_ids"]))
            else:
                out.append(len(encode_conversation(tokenizer, e.messages, 10**9).input_ids))
        return out
    return count


def pack(examples: list[EncodedExample], max_length: int) -> list[dict]:
    """Greedy packing of short examples into rows of up to max_length tokens. Each row has position
    ids that restart at every example: transformers then builds a block-diagonal causal mask (no
    attention across examples) when no attention mask is passed; the first token of each
    example is never trained, so no example is predicted from the one before it."""
    rows, current = [], {"input_ids": [], "labels": [], "position_ids": []}
    for e in sorted(examples, key=lambda e: -len(e.input_ids)):
        if current["input_ids"] and len(current["input_ids"]) + len(e.input_ids) > max_length:
            rows.append(current)
            current = {"input_ids": [], "labels": [], "position_ids": []}
        current["input_ids"] += e.input_ids
        current["labels"] += e.labels
        current["position_ids"] += list(range(len(e.input_ids)))
    if current["input_ids"]:
        rows.append(current)
    return rows


def collate_lm(rows: list[dict], index, pad_id: int):
    """A right-padded batch. Packed rows (with position_ids) get no attention mask, so the model
    masks by their position ids; their padding forms its own block at the end of the row."""
    import torch

    chosen = [rows[i] for i in index]
    width = max(len(r["input_ids"]) for r in chosen)
    input_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chosen), width), IGNORE, dtype=torch.long)
    packed = "position_ids" in chosen[0]
    extra = torch.zeros((len(chosen), width), dtype=torch.long)
    for j, r in enumerate(chosen):
        n = len(r["input_ids"])
        input_ids[j, :n] = torch.tensor(r["input_ids"])
        labels[j, :n] = torch.tensor(r["labels"])
        if packed:
            extra[j, :n] = torch.tensor(r["position_ids"])
            extra[j, n:] = torch.arange(width - n)
        else:
            extra[j, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels}
    batch["position_ids" if packed else "attention_mask"] = extra
    return batch


def real_tokens(batch) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int((batch["labels"] != IGNORE).sum()) + int((batch["position_ids"] == 0).sum())
