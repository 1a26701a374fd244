"""Trained classifiers as objects that map texts to class probabilities and save themselves.

Two shapes cover every strategy: a sentence encoder with a linear head (zero-shot, few-shot,
linear-probe), and a transformers sequence classifier (full, LoRA, QLoRA).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .embeddings import FeatureCache, encode
from .inference import predict_logits, tokenize
from .loading import SAFE_KWARGS, load_sentence_encoder, load_tokenizer


class Predictor(Protocol):
    label_names: list[str]
    kind: str

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...

    def save(self, directory: Path) -> dict: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class EmbeddingHeadPredictor:
    """probabilities = softmax(W · embed(text) + b)."""

    kind = "embedding-head"

    def __init__(self, encoder, weight: np.ndarray, bias: np.ndarray, label_names: list[str],
                 base_model: str, body_saved: bool = False, cache: FeatureCache | None = None,
                 cache_key: str = "", precision: str = "no"):
        self.encoder, self.weight, self.bias = encoder, weight.astype(np.float32), bias.astype(np.float32)
        self.label_names, self.base_model, self.body_saved = label_names, base_model, body_saved
        self.cache, self.cache_key, self.precision = cache, cache_key, precision

    def embed(self, texts: list[str]) -> np.ndarray:
        return encode(self.encoder, texts, cache=self.cache, model_key=self.cache_key,
                      precision=self.precision)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return softmax(self.embed(texts) @ self.weight.T + self.bias)

    def save(self, directory: Path) -> dict:
        save_file({"weight": torch.from_numpy(self.weight), "bias": torch.from_numpy(self.bias)},
                  str(directory / "head.safetensors"))
        files = ["head.safetensors"]
        if self.body_saved:
            self.encoder.save(str(directory / "body"), safe_serialization=True)
            files.append("body")
        return {"kind": self.kind, "base_model": self.base_model, "body": "body" if self.body_saved else None,
                "files": files}

    @classmethod
    def load(cls, directory: Path, manifest: dict, label_names: list[str], base_path: Path):
        body = directory / manifest["body"] if manifest.get("body") else base_path
        head = load_file(str(directory / "head.safetensors"))
        return cls(load_sentence_encoder(body), head["weight"].numpy(), head["bias"].numpy(),
                   label_names, manifest["base_model"], body_saved=bool(manifest.get("body")),
                   precision=manifest.get("precision", "no"))


class SequenceClassifierPredictor:
    """A transformers sequence classifier (possibly a peft model) with its tokenizer."""

    kind = "sequence-classifier"

    def __init__(self, model, tokenizer, label_names: list[str], max_length: int, base_model: str,
                 device: str = "cpu", precision: str = "no", adapter: bool = False):
        self.model, self.tokenizer, self.label_names = model, tokenizer, label_names
        self.max_length, self.base_model, self.device, self.precision = max_length, base_model, device, precision
        self.adapter = adapter

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        ids = tokenize(self.tokenizer, texts, self.max_length)
        pad = self.tokenizer.pad_token_id or 0
        return softmax(predict_logits(self.model, ids, pad, self.device, self.precision))

    def save(self, directory: Path) -> dict:
        self.tokenizer.save_pretrained(str(directory / "tokenizer"))
        if self.adapter:
            # The adapter alone (a few MB); the base model is named in the manifest.
            self.model.save_pretrained(str(directory / "adapter"), safe_serialization=True)
            files = ["adapter", "tokenizer"]
        else:
            self.model.save_pretrained(str(directory / "model"), safe_serialization=True)
            files = ["model", "tokenizer"]
        return {"kind": self.kind, "base_model": self.base_model, "adapter": self.adapter,
                "max_length": self.max_length, "files": files}

    @classmethod
    def load(cls, directory: Path, manifest: dict, label_names: list[str], base_path: Path):
        from transformers import AutoModelForSequenceClassification

        tokenizer = load_tokenizer(directory / "tokenizer")
        if manifest.get("adapter"):
            from peft import PeftModel

            from .loading import load_classifier
            model = PeftModel.from_pretrained(load_classifier(base_path, label_names),
                                              str(directory / "adapter"))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(directory / "model"), **SAFE_KWARGS)
        model.eval()
        return cls(model, tokenizer, label_names, manifest.get("max_length", 256), manifest["base_model"],
                   precision=manifest.get("precision", "no"), adapter=bool(manifest.get("adapter")))


PREDICTOR_KINDS = {c.kind: c for c in (EmbeddingHeadPredictor, SequenceClassifierPredictor)}

from .lm_predictors import GENERATIVE_KINDS  # noqa: E402  (causal-LM kinds: tuned LMs, prompted classifiers)

PREDICTOR_KINDS.update(GENERATIVE_KINDS)
from .image_predictors import IMAGE_KINDS  # noqa: E402  (image kinds: frozen backbone + head, fine-tuned network)

PREDICTOR_KINDS.update(IMAGE_KINDS)


def model_key(path: Path) -> str:
    """Identifies a model's weights for caches: the hash of its config and weight-file sizes/mtimes."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")) + [Path(path) / "config.json"]:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(json.dumps(str(Path(path).resolve())).encode())
    return h.hexdigest()[:16]
