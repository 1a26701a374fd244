"""Causal-LM results as artifact kinds: a tuned generative model (full weights or a LoRA adapter,
optionally merged), and a prompted classifier that picks the label by log-likelihood."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import copy
from collections import namedtuple

from .causal import IGNORE, encode_conversation, encode_prompt, load_causal_lm, load_chat_tokenizer
from .device import autocast
from .generation import GenerationSettings, generate_text, stream_tokens


_Turn = namedtuple("_Turn", "role content")


class CausalLMModel:
    """A causal LM (possibly a peft model) with its tokenizer: generates, saves, merges."""

    kind = "causal-lm"

    def __init__(self, model, tokenizer, base_model: str, *, adapter: bool = False, max_length: int = 512,
                 device: str = "cpu", precision: str = "no", chat: bool = True, export_merged: bool = False):
        self.model, self.tokenizer, self.base_model, self.adapter = model, tokenizer, base_model, adapter
        self.max_length, self.device, self.precision, self.chat = max_length, device, precision, chat
        self.export_merged = export_merged
        self.label_names: list[str] = []

    def prompt_ids(self, prompt: str | list, raw: bool = False) -> list[int]:
        if raw or not self.chat:
            return self.tokenizer(prompt)["input_ids"]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return encode_prompt(self.tokenizer, messages)

    def stream(self, prompt, settings: GenerationSettings, raw: bool = False):
        return stream_tokens(self.model, self.tokenizer, self.prompt_ids(prompt, raw), settings, self.device)

    def generate(self, prompt, settings: GenerationSettings | None = None, raw: bool = False) -> str:
        return generate_text(self.model, self.tokenizer, self.prompt_ids(prompt, raw),
                             settings or GenerationSettings(), self.device)

    def merged(self):
        """The adapter folded into a copy of the base weights (a plain transformers model)."""
        import copy

        if not self.adapter:
            return self.model
        return copy.deepcopy(self.model).merge_and_unload()

    def save(self, directory: Path) -> dict:
        directory = Path(directory)
        self.tokenizer.save_pretrained(str(directory / "tokenizer"))
        files = ["tokenizer"]
        if self.adapter:
            self.model.save_pretrained(str(directory / "adapter"), safe_serialization=True)
            files.append("adapter")
            if self.export_merged:
                save_merged(self, directory / "merged")
                files.append("merged")
        else:
            self.model.save_pretrained(str(directory / "model"), safe_serialization=True)
            self.tokenizer.save_pretrained(str(directory / "model"))
            files.append("model")
        return {"kind": self.kind, "base_model": self.base_model, "adapter": self.adapter,
                "merged": "merged" if self.adapter and self.export_merged else None,
                "max_length": self.max_length, "chat": self.chat, "files": files}

    @classmethod
    def load(cls, directory: Path, manifest: dict, label_names: list[str], base_path: Path | None):
        directory = Path(directory)
        tokenizer = load_chat_tokenizer(directory / "tokenizer")
        if manifest.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_causal_lm(base_path), str(directory / "adapter"))
        else:
            model = load_causal_lm(directory / "model")
        model.eval()
        return cls(model, tokenizer, manifest["base_model"], adapter=bool(manifest.get("adapter")),
                   max_length=manifest.get("max_length", 512), precision=manifest.get("precision", "no"),
                   chat=manifest.get("chat", True))


def save_merged(lm: CausalLMModel, out: Path) -> Path:
    """A standalone transformers folder (safetensors + tokenizer) with the adapter merged in."""
    merged = lm.merged()
    merged.save_pretrained(str(out), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(out))
    return Path(out)


class PromptClassifier:
    """Classification by prompting a causal LM: for each text, the log-likelihood of every label's
    tokens as the assistant's answer (constrained: only the labels can come out), optionally
    calibrated by the scores of a content-free input (Zhao et al. 2021) so a model's bias towards
    one label does not decide every answer."""

    kind = "prompt-classifier"

    def __init__(self, model, tokenizer, label_names: list[str], base_model: str, *, instruction: str,
                 shots: list[tuple[str, str]], verbalizers: dict[str, str], calibration: str = "none",
                 normalize: str = "sum", max_text_tokens: int = 256, device: str = "cpu", precision: str = "no"):
        self.model, self.tokenizer, self.label_names, self.base_model = model, tokenizer, label_names, base_model
        self.instruction, self.shots, self.verbalizers = instruction, shots, verbalizers
        self.calibration, self.normalize, self.max_text_tokens = calibration, normalize, max_text_tokens
        self.device, self.precision = device, precision
        self.bias: np.ndarray | None = None
        self.on_progress = None        # (done, total) -> None, while texts are scored
        self._label_ids = [self._answer_ids(self.verbalizers[n]) for n in label_names]

    def _answer_ids(self, answer: str) -> list[int]:
        """The answer's tokens as the template places them after the prompt, with the end-of-turn
        marker: scoring "positive<end>" rather than "positive" rules out longer answers."""
        turns = [_Turn("user", "Text: x"), _Turn("assistant", answer)]
        e = encode_conversation(self.tokenizer, turns, 10**6)
        return [i for i, label in zip(e.input_ids, e.labels) if label != IGNORE]

    def _clip(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_text_tokens else self.tokenizer.decode(ids[:self.max_text_tokens])

    def messages(self, text: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.instruction}]
        for shot_text, label in self.shots:
            msgs += [{"role": "user", "content": f"Text: {self._clip(shot_text)}"},
                     {"role": "assistant", "content": self.verbalizers[label]}]
        return msgs + [{"role": "user", "content": f"Text: {self._clip(text)}"}]

    @torch.inference_mode()
    def label_scores(self, text: str) -> np.ndarray:
        """Log-likelihood of each label: the prompt runs once, its KV cache serves every label."""
        prompt = encode_prompt(self.tokenizer, self.messages(text))
        self.model.eval()
        prefix, prefix_cache = self._shared_prefix()
        with autocast(self.device, self.precision):
            if prefix and len(prompt) > len(prefix) and prompt[:len(prefix)] == prefix:
                # The instruction and the examples are the same for every text: computed once.
                out = self.model(input_ids=torch.tensor([prompt[len(prefix):]], device=self.device),
                                 past_key_values=copy.deepcopy(prefix_cache), use_cache=True)
            else:
                out = self.model(input_ids=torch.tensor([prompt], device=self.device), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        width = max(len(ids) for ids in self._label_ids)
        scores = np.zeros(len(self._label_ids), dtype=np.float64)
        if width > 1:
            cache = out.past_key_values
            n = len(self._label_ids)
            cache.batch_repeat_interleave(n)
            rest = torch.tensor([ids[:-1] + [ids[-1]] * (width - len(ids)) for ids in self._label_ids],
                                device=self.device)[:, :width - 1]
            mask = torch.ones((n, len(prompt) + width - 1), dtype=torch.long, device=self.device)
            with autocast(self.device, self.precision):
                logits = self.model(input_ids=rest, past_key_values=cache, attention_mask=mask,
                                    use_cache=True).logits.float()
            following = torch.log_softmax(logits, -1)
        for j, ids in enumerate(self._label_ids):
            total = float(first[ids[0]])
            for k in range(1, len(ids)):
                total += float(following[j, k - 1, ids[k]])
            scores[j] = total / (len(ids) if self.normalize == "mean" else 1)
        return scores

    def _shared_prefix(self):
        """The token prefix every prompt shares (longest common prefix of two probes) and its KV cache."""
        if getattr(self, "_prefix", None) is None:
            a = encode_prompt(self.tokenizer, self.messages("alpha"))
            b = encode_prompt(self.tokenizer, self.messages("omega zulu"))
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            self._prefix, self._prefix_cache = a[:n], None
            if n:
                with torch.inference_mode(), autocast(self.device, self.precision):
                    out = self.model(input_ids=torch.tensor([a[:n]], device=self.device), use_cache=True)
                self._prefix_cache = out.past_key_values
        return self._prefix, self._prefix_cache

    def calibrate(self, texts: list[str] | None = None) -> None:
        """content-free: the mean label scores of empty inputs; batch: of real unlabelled texts
        (Zhou et al. 2023), which also removes the bias the domain's texts themselves bring."""
        if self.calibration == "content-free":
            self.bias = np.mean([self.label_scores(t) for t in ("N/A", "", "[MASK]")], axis=0)
        elif self.calibration == "batch" and texts:
            self.bias = np.mean([self.label_scores(t) for t in texts], axis=0)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if self.calibration == "content-free" and self.bias is None:
            self.calibrate()
        rows = []
        for i, text in enumerate(texts):
            if self.on_progress is not None and (i % 16 == 0 or i == len(texts) - 1):
                self.on_progress(i + 1, len(texts))
            s = self.label_scores(text) - (self.bias if self.bias is not None else 0.0)
            e = np.exp(s - s.max())
            rows.append(e / e.sum())
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), len(self.label_names))

    def save(self, directory: Path) -> dict:
        config = {"instruction": self.instruction, "shots": self.shots, "verbalizers": self.verbalizers,
                  "calibration": self.calibration, "normalize": self.normalize,
                  "max_text_tokens": self.max_text_tokens,
                  "bias": self.bias.tolist() if self.bias is not None else None}
        (Path(directory) / "prompt.json").write_text(json.dumps(config, indent=2))
        return {"kind": self.kind, "base_model": self.base_model, "files": ["prompt.json"]}

    @classmethod
    def load(cls, directory: Path, manifest: dict, label_names: list[str], base_path: Path | None):
        config = json.loads((Path(directory) / "prompt.json").read_text())
        bias = config.pop("bias")
        obj = cls(load_causal_lm(base_path), load_chat_tokenizer(base_path), label_names, manifest["base_model"],
                  shots=[tuple(s) for s in config.pop("shots")], precision=manifest.get("precision", "no"),
                  **config)
        obj.bias = np.asarray(bias) if bias is not None else None
        return obj


GENERATIVE_KINDS = {c.kind: c for c in (CausalLMModel, PromptClassifier)}
