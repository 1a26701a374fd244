"""Sentence embeddings, with an on-disk cache keyed by (model, texts).

Frozen-feature strategies spend nearly all their time in the encoder; caching its output means
a second run on the same data (another head, another C, a re-evaluation) costs no encoder pass.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file


class FeatureCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits = self.misses = 0

    def key(self, model_key: str, texts: list[str]) -> str:
        h = hashlib.sha256(model_key.encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()

    def contains(self, key: str) -> bool:
        return (self.root / key[:2] / f"{key}.safetensors").is_file()

    def get(self, key: str) -> np.ndarray | None:
        path = self.root / key[:2] / f"{key}.safetensors"
        if path.is_file():
            self.hits += 1
            return load_file(str(path))["features"]
        self.misses += 1
        return None

    def put(self, key: str, features: np.ndarray) -> None:
        folder = self.root / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        os.close(fd)
        save_file({"features": np.ascontiguousarray(features, dtype=np.float32)}, tmp)
        os.replace(tmp, folder / f"{key}.safetensors")


def encode(encoder, texts: list[str], *, cache: FeatureCache | None = None, model_key: str = "",
           precision: str = "no", batch_size: int = 64, progress=None) -> np.ndarray:
    """Normalised sentence embeddings as float32 [n, dim]."""
    key = cache.key(model_key, texts) if cache is not None else ""
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    features = np.zeros((0, encoder.get_embedding_dimension()), dtype=np.float32)
    if texts:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            features = encoder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True,
                                      show_progress_bar=bool(progress) and len(texts) > 500)
        features = features.astype(np.float32)
    if cache is not None:
        cache.put(key, features)
    return features
