"""Trained image classifiers as artifact kinds: images -> class probabilities, saved as safetensors.

Two shapes, as for text: a frozen backbone with a linear head (linear probe; nearest-class-mean
prototypes are a linear head too), and a fine-tuned network (whole or partly unfrozen). Both name
their base model (catalog name or folder) in the manifest and reload without any training code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .device import autocast
from .embeddings import FeatureCache
from .image_preprocess import to_tensor
from .vision import ImageBackbone, _open, encode_images, load_image_model

HEAD_FILE = "head.safetensors"
MODEL_FILE = "model.safetensors"


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _base_folder(manifest: dict, base_path: Path | None) -> Path:
    if base_path is not None:
        return Path(base_path)
    from .catalog import resolve_model

    return resolve_model(manifest["base_model"]).path


class ImageHeadPredictor:
    """probabilities = softmax(W · features(image) + b), the backbone frozen."""

    kind = "image-head"

    def __init__(self, backbone: ImageBackbone, weight: np.ndarray, bias: np.ndarray, label_names: list[str],
                 base_model: str, *, cache: FeatureCache | None = None, cache_key: str = "",
                 precision: str = "no", batch_size: int = 64):
        self.backbone = backbone.eval()
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        if self.weight.shape != (len(label_names), backbone.feature_dim) or self.bias.shape != (len(label_names),):
            raise ValueError(f"head {self.weight.shape}/{self.bias.shape} does not fit {len(label_names)} "
                             f"labels on {backbone.feature_dim}-d features")
        self.label_names, self.base_model = list(label_names), base_model
        self.cache, self.cache_key, self.precision, self.batch_size = cache, cache_key, precision, batch_size

    @classmethod
    def from_class_means(cls, backbone: ImageBackbone, means: np.ndarray, label_names: list[str],
                         base_model: str, **kwargs) -> "ImageHeadPredictor":
        """Nearest class mean as a linear head: argmin |f - mu|^2 = argmax 2 mu.f - |mu|^2 (the
        |f|^2 term is the same for every class). The softmax of these logits is a distance softmax."""
        means = np.asarray(means, dtype=np.float32)
        return cls(backbone, 2.0 * means, -(means * means).sum(axis=1), label_names, base_model, **kwargs)

    def features(self, images) -> np.ndarray:
        """Features of a list of PIL images or an ImageDataset (the cache applies to both)."""
        return encode_images(self.backbone, images, cache=self.cache, model_key=self.cache_key,
                             batch_size=self.batch_size)

    def predict_proba(self, images) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return _softmax(self.features(images) @ self.weight.T + self.bias)

    def save(self, directory: Path) -> dict:
        save_file({"weight": torch.from_numpy(self.weight), "bias": torch.from_numpy(self.bias)},
                  str(Path(directory) / HEAD_FILE))
        return {"kind": self.kind, "base_model": self.base_model, "files": [HEAD_FILE],
                "feature_dim": self.backbone.feature_dim, "preprocess": self.backbone.preprocess.to_dict()}

    @classmethod
    def load(cls, directory: Path, manifest: dict, label_names: list[str] | None = None,
             base_path: Path | None = None) -> "ImageHeadPredictor":
        head = load_file(str(Path(directory) / HEAD_FILE))
        backbone = load_image_model(_base_folder(manifest, base_path))
        return cls(backbone, head["weight"].numpy(), head["bias"].numpy(),
                   list(label_names if label_names is not None else manifest["labels"]),
                   manifest["base_model"], precision=manifest.get("precision", "no"))


class ImageClassifierPredictor:
    """A fine-tuned ImageBackbone (its head sized to these labels), saved whole as safetensors."""

    kind = "image-classifier"

    def __init__(self, backbone: ImageBackbone, label_names: list[str], base_model: str, *,
                 device: str = "cpu", precision: str = "no", batch_size: int = 64, trained_blocks: int | None = None):
        if backbone.head.out_features != len(label_names):
            raise ValueError(f"the network's head has {backbone.head.out_features} outputs for "
                             f"{len(label_names)} labels")
        self.backbone, self.label_names, self.base_model = backbone.eval(), list(label_names), base_model
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self.trained_blocks = trained_blocks        # partial unfreeze: how many last blocks trained

    @torch.inference_mode()
    def predict_proba(self, images) -> np.ndarray:
        self.backbone.eval()
        out = np.zeros((len(images), len(self.label_names)), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            stop = min(start + self.batch_size, len(images))
            x = to_tensor([_open(images, i) for i in range(start, stop)], self.backbone.preprocess)
            with autocast(self.device, self.precision):
                logits = self.backbone(x.to(self.device))
            out[start:stop] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return out

    def save(self, directory: Path) -> dict:
        self.backbone.save_weights(Path(directory) / MODEL_FILE)
        return {"kind": self.kind, "base_model": self.base_model, "files": [MODEL_FILE],
                "num_classes": len(self.label_names), "trained_blocks": self.trained_blocks,
                "preprocess": self.backbone.preprocess.to_dict()}

    @classmethod
    def load(cls, directory: Path, manifest: dict, label_names: list[str] | None = None,
             base_path: Path | None = None) -> "ImageClassifierPredictor":
        labels = list(label_names if label_names is not None else manifest["labels"])
        backbone = load_image_model(_base_folder(manifest, base_path))
        backbone.reset_head(len(labels))
        backbone.load_weights(Path(directory) / MODEL_FILE)
        saved = manifest.get("preprocess") or {}
        if saved.get("size"):       # trained at another size than the model's own (a CPU run at 128 px)
            import dataclasses

            backbone.preprocess = dataclasses.replace(backbone.preprocess, size=int(saved["size"]),
                                                      crop_pct=float(saved.get("crop_pct", backbone.preprocess.crop_pct)))
        return cls(backbone.eval(), labels, manifest["base_model"], precision=manifest.get("precision", "no"),
                   trained_blocks=manifest.get("trained_blocks"))


IMAGE_KINDS = {c.kind: c for c in (ImageHeadPredictor, ImageClassifierPredictor)}
