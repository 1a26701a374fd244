"""Image models as one shape, ImageBackbone: pooled features, a linear head, stages to unfreeze.

Three families load into it: EfficientNet-Lite0 (ImageNet) and ResNet-20 (CIFAR-10), both from
safetensors folders that image_import converted from their shipped pickles, and any Hugging Face
*ForImageClassification folder (ViT, ConvNeXt, ResNet, MobileNet...: safetensors only, never
remote code). Each starts with its pretrained classifier as `head` until reset_head().
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_file
from torch import nn

from .catalog import ModelSpec, UnsafeModel, check_model_folder
from .embeddings import FeatureCache
from .image_import import FAMILIES, WEIGHTS, build_native
from .image_preprocess import ImagePreprocess, preprocess_from_hf, to_tensor


class ImageBackbone(nn.Module):
    """features(x) -> [B, feature_dim]; forward(x) = head(features(x))."""

    feature_dim: int
    preprocess: ImagePreprocess
    family: str = ""

    def __init__(self, head: nn.Linear, preprocess: ImagePreprocess, label_names: list[str] | None):
        super().__init__()
        self.head, self.preprocess = head, preprocess
        self.feature_dim = head.in_features
        # The pretrained head's class names (CIFAR-10's, a HF config's id2label); None once reset
        # or when the weights do not name their classes (EfficientNet's 1000 ImageNet indices).
        self.pretrained_labels = label_names

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def reset_head(self, num_classes: int) -> None:
        device = self.head.weight.device
        self.head = nn.Linear(self.feature_dim, num_classes).to(device)
        self.pretrained_labels = None

    def state_for_save(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def save_weights(self, path: Path) -> None:
        # Own copies: safetensors refuses tensors that share storage or are not contiguous
        # (the convnets' weights are channels_last).
        save_file({k: v.clone() for k, v in self.state_for_save().items()}, str(path))

    def load_weights(self, path: Path) -> None:
        load_model(self, str(path), strict=True)


# Convolutions on CPU run ~2x faster on channels_last (NHWC) tensors: EfficientNet-Lite0 at batch 16,
# 1 thread, 21 -> 44 images/s, measured here. The native convnets keep their weights that way and
# take any input, converted in features().
CHANNELS_LAST = torch.channels_last


class EfficientNetLiteBackbone(ImageBackbone):
    family = "efficientnet-lite0"

    def __init__(self, net, preprocess: ImagePreprocess, label_names=None):
        head = net._fc
        del net._fc                 # the head lives in self.head alone (one copy in the state)
        super().__init__(head, preprocess, label_names)
        self.net = net.to(memory_format=CHANNELS_LAST)

    def features(self, x):
        return self.net.extract_features(x.contiguous(memory_format=CHANNELS_LAST)).mean(dim=(2, 3))

    def blocks(self) -> list[nn.Module]:
        """Stem, the seven stages (consecutive MBConv blocks of one width), the 1x1 head conv."""
        net = self.net
        stages: list[list[nn.Module]] = []
        for block in net._blocks:
            width = block._block_args.output_filters
            if not stages or stages[-1][0]._block_args.output_filters != width:
                stages.append([])
            stages[-1].append(block)
        return ([nn.ModuleList([net._conv_stem, net._bn0])] + [nn.ModuleList(s) for s in stages]
                + [nn.ModuleList([net._conv_head, net._bn1])])


class ResNetCifarBackbone(ImageBackbone):
    family = "resnet20-cifar"

    def __init__(self, net, preprocess: ImagePreprocess, label_names=None):
        head = net.linear
        del net.linear
        super().__init__(head, preprocess, label_names)
        self.net = net.to(memory_format=CHANNELS_LAST)

    def features(self, x):
        return self.net.features(x.contiguous(memory_format=CHANNELS_LAST))

    def blocks(self) -> list[nn.Module]:
        net = self.net
        return [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3]


class HFImageBackbone(ImageBackbone):
    """A transformers image classifier whose final Linear is moved out into self.head: with an
    Identity in its place, the model's `logits` are the pooled features its classifier read, for
    every architecture's own pooling (ViT's CLS token, ConvNeXt's normed mean, ResNet's pool)."""

    family = "hf"

    def __init__(self, model, preprocess: ImagePreprocess, label_names=None):
        parent, name, head = _final_linear(model)
        setattr(parent, name, nn.Identity())
        super().__init__(head, preprocess, label_names)
        self.model = model

    def features(self, x):
        return self.model(pixel_values=x).logits.flatten(1)

    def blocks(self) -> list[nn.Module]:
        """The model's layer list (ViT's encoder.layer, ConvNeXt's/ResNet's stages...): the
        ModuleList that holds the most parameters."""
        lists = [m for m in self.model.modules() if isinstance(m, nn.ModuleList) and len(m)]
        if not lists:
            return [self.model]
        best = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
        return list(best)


def _final_linear(model) -> tuple[nn.Module, str, nn.Linear]:
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        return model, "classifier", classifier
    if isinstance(classifier, nn.Sequential):
        for name, module in reversed(list(classifier.named_children())):
            if isinstance(module, nn.Linear):
                return classifier, name, module
    raise UnsafeModel(f"{type(model).__name__} has no linear `classifier` tunelab knows how to replace")


def load_image_model(spec: ModelSpec | Path) -> ImageBackbone:
    """An image model folder (a catalog entry's converted folder, or a HF image classifier) as an
    ImageBackbone in eval mode, on the CPU, with its pretrained head."""
    path = Path(spec.path if isinstance(spec, ModelSpec) else spec)
    check_model_folder(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    family = config.get("tunelab_image_family")
    if family:
        return _load_converted(path, family, config).eval()
    if not any(a.endswith("ForImageClassification") for a in config.get("architectures") or []):
        raise UnsafeModel(f"{path} is not an image classifier (architectures: {config.get('architectures')})")
    return _load_hf(path, config).eval()


def _load_converted(path: Path, family: str, config: dict) -> ImageBackbone:
    if family not in FAMILIES:
        raise UnsafeModel(f"{path}: unknown image model family {family!r}")
    net = build_native(family)
    load_model(net, str(path / WEIGHTS), strict=True)
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))] if config.get("id2label") else None
    pre = FAMILIES[family]["preprocess"]
    cls = EfficientNetLiteBackbone if family.startswith("efficientnet") else ResNetCifarBackbone
    return cls(net, pre, labels)


def _load_hf(path: Path, config: dict) -> ImageBackbone:
    import transformers
    from transformers import AutoModelForImageClassification

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = AutoModelForImageClassification.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=False, dtype=torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)
    id2label = config.get("id2label") or {}
    labels = [id2label[str(i)] for i in range(len(id2label))] if id2label else None
    if labels and all(n == f"LABEL_{i}" for i, n in enumerate(labels)):
        labels = None           # transformers' placeholder names say nothing
    return HFImageBackbone(model, preprocess_from_hf(path), labels)


def image_model_key(path: Path) -> str:
    """Identifies a model's weights for the feature cache (as predictors.model_key does for text)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")) + [Path(path) / "config.json"]:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(json.dumps(str(Path(path).resolve())).encode())
    return h.hexdigest()[:16]


def _hashes(items) -> list[str]:
    """Content hashes: an ImageDataset's own (file bytes), or a PIL image's mode, size and pixels."""
    if hasattr(items, "examples"):
        return [e.sha256 for e in items.examples]
    return [hashlib.sha256(f"{im.mode}:{im.size}:".encode() + im.tobytes()).hexdigest() for im in items]


def _open(items, i: int):
    return items.open(i) if hasattr(items, "open") and hasattr(items, "examples") else items[i]


@torch.inference_mode()
def encode_images(backbone: ImageBackbone, items, *, cache: FeatureCache | None = None, model_key: str = "",
                  batch_size: int = 64, progress=None, work=None) -> np.ndarray:
    """Pooled features float32 [n, feature_dim] of an ImageDataset (anything with .examples
    carrying .sha256 and .open(i)) or a list of PIL images, in batches, without augmentation.
    The cache key is the model key, the preprocessing and the images' content hashes (not their
    names: a renamed file hits, an edited one misses). progress(done, total) after each batch;
    work (training.work.WorkCounter) counts images as rows (and as tokens) and each batch's time."""
    n, key = len(items.examples) if hasattr(items, "examples") else len(items), ""
    if cache is not None:
        key = cache.key(f"image:{model_key}:{json.dumps(backbone.preprocess.to_dict())}", _hashes(items))
        hit = cache.get(key)
        if hit is not None:
            return hit
    backbone.eval()
    device = next(backbone.parameters()).device
    out = np.zeros((n, backbone.feature_dim), dtype=np.float32)
    for start in range(0, n, batch_size):
        t0 = time.perf_counter()
        stop = min(start + batch_size, n)
        x = to_tensor([_open(items, i) for i in range(start, stop)], backbone.preprocess)
        out[start:stop] = backbone.features(x.to(device)).float().cpu().numpy()
        if work is not None:
            work.add(np.ones(stop - start, dtype=np.int64))
            work.step(time.perf_counter() - t0)
        if progress:
            progress(stop, n)
    if cache is not None:
        cache.put(key, out)
    return out
