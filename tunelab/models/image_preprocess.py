"""Image preprocessing with Pillow + numpy: resize, centre crop, normalise; light augmentation.

No torchvision: its PyPI wheels do not import next to the CPU torch used here. Evaluation resizes
the shorter side to size / crop_pct and crops the centre size x size (the ImageNet convention);
training takes a random resized crop and a random horizontal flip, drawn from the caller's numpy
Generator so that a seed gives the same batches.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Random resized crop: the fraction of the image's area kept, and the crop's aspect ratio range.
# 0.35 rather than torchvision's 0.08: the images here are small (CIFAR's 32 px), and a crop of
# 8% of them keeps too little of the object to be worth learning from.
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ImagePreprocess:
    size: int                   # the square input the network takes
    crop_pct: float = 1.0       # evaluation: resize the shorter side to size / crop_pct, crop the centre
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    resample: int = Image.BICUBIC

    def to_dict(self) -> dict:
        return {"size": self.size, "crop_pct": self.crop_pct, "mean": list(self.mean), "std": list(self.std)}


def to_tensor(images: list[Image.Image], pre: ImagePreprocess, *, train: bool = False,
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """A float32 batch [B, 3, size, size], normalised. train: random resized crop + flip from rng."""
    if train and rng is None:
        raise ValueError("train=True needs a numpy Generator (rng) so that augmentation is reproducible")
    out = np.empty((len(images), pre.size, pre.size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        image = image if image.mode == "RGB" else image.convert("RGB")
        fitted = _random_crop(image, pre, rng) if train else _centre_crop(image, pre)
        out[i] = np.asarray(fitted, dtype=np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32) * 255.0
    std = np.asarray(pre.std, dtype=np.float32) * 255.0
    out -= mean
    out /= std
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _centre_crop(image: Image.Image, pre: ImagePreprocess) -> Image.Image:
    w, h = image.size
    short = math.floor(pre.size / pre.crop_pct) if pre.crop_pct < 1 else pre.size
    scale = short / min(w, h)
    nw, nh = max(pre.size, round(w * scale)), max(pre.size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), pre.resample)
    left, top = (nw - pre.size) // 2, (nh - pre.size) // 2
    if (left, top, nw, nh) == (0, 0, pre.size, pre.size):
        return image
    return image.crop((left, top, left + pre.size, top + pre.size))


def _random_crop(image: Image.Image, pre: ImagePreprocess, rng: np.random.Generator) -> Image.Image:
    """torchvision's RandomResizedCrop (10 tries, then the largest centred crop of a valid ratio),
    resized to size x size in one Pillow call (box=), then flipped with probability 1/2."""
    w, h = image.size
    box = None
    for _ in range(10):
        area = w * h * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (left, top, left + cw, top + ch)
            break
    if box is None:
        ratio = w / h
        cw, ch = (w, round(w / CROP_RATIO[1])) if ratio > CROP_RATIO[1] else \
            (round(h * CROP_RATIO[0]), h) if ratio < CROP_RATIO[0] else (w, h)
        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
    image = image.resize((pre.size, pre.size), pre.resample, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC}


def preprocess_from_hf(folder: Path) -> ImagePreprocess:
    """A Hugging Face image processor's settings (preprocessor_config.json) as an ImagePreprocess.
    ViT-style processors resize straight to height x width; here the shorter side is resized and
    the centre cropped, which is the same for square images and keeps the aspect of others."""
    path = Path(folder) / "preprocessor_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    size = cfg.get("size", 224)
    if isinstance(size, dict):
        side = size.get("shortest_edge") or size.get("height") or size.get("width") or 224
    else:
        side = int(size)
    crop = cfg.get("crop_size") if cfg.get("do_center_crop", True) else None
    if isinstance(crop, dict):
        crop = crop.get("height") or crop.get("width")
    if crop:                                    # resize to `side`, crop `crop` (MobileNet, BiT...)
        input_size, crop_pct = int(crop), min(1.0, int(crop) / int(side))
    elif cfg.get("crop_pct") and int(side) < 384:   # ConvNeXt/ResNet: resize side/crop_pct, crop side
        input_size, crop_pct = int(side), float(cfg["crop_pct"])
    else:
        input_size, crop_pct = int(side), 1.0
    normalise = cfg.get("do_normalize", True)
    mean = tuple(cfg.get("image_mean", (0.5, 0.5, 0.5))) if normalise else (0.0, 0.0, 0.0)
    std = tuple(cfg.get("image_std", (0.5, 0.5, 0.5))) if normalise else (1.0, 1.0, 1.0)
    return ImagePreprocess(input_size, crop_pct, mean, std, _RESAMPLE.get(cfg.get("resample", 3), Image.BICUBIC))
