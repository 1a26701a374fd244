"""partial-unfreeze: train the last blocks of an image backbone and a new head, the rest frozen.

Image data's answer to LoRA, declared as such: peft's LoRA adapts linear and 1x1 convolution
weights, but the backbones of the catalog are mostly depthwise and 3x3 convolutions with
BatchNorm (EfficientNet-Lite0, ResNet-20), where a low-rank update has little to adapt and saves
little (their parameters are few; the activations are what costs). Training the last stages
keeps what transfers (the early, generic filters) and adapts what is specific to the pretraining
task, for a fraction of full fine-tuning's backward pass: nothing before the first trained block
needs a gradient.
"""

from __future__ import annotations

from pydantic import Field

from .base import ConfigError, register
from .image_classification import IMAGE_CLASSIFICATION
from .image_full import ImageFineTuneBase, ImageFineTuneParams


class PartialParams(ImageFineTuneParams):
    unfreeze_blocks: int = Field(2, ge=1, le=100, description=(
        "the backbone's last blocks (stages) trained with the head; the earlier ones stay frozen"))
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="the unfrozen blocks' (AdamW)")


@register
class PartialUnfreeze(ImageFineTuneBase):
    name = "partial-unfreeze"
    task = IMAGE_CLASSIFICATION
    aliases = ("partial",)
    rank = 40
    lighter = ("image-linear-probe", "a linear probe instead: frozen features, only a linear head trained")
    advice = ("The last blocks and the head trained: most of fine-tuning's gain on images unlike the "
              "pretraining, for less time and memory. Used where LoRA does not apply (convolutional backbones).")
    summary = ("Fine-tune the last blocks + a new head (this task's stand-in for LoRA, which does not suit "
               "convolutional backbones).")
    Params = PartialParams

    def freeze(self, model, params) -> None:
        blocks = model.blocks()
        k = params.unfreeze_blocks
        if k > len(blocks):
            raise ConfigError(f"unfreeze_blocks={k} but the backbone has {len(blocks)} blocks; "
                              f"use --set unfreeze_blocks={len(blocks)} or fewer (or the full strategy)")
        for p in model.parameters():
            p.requires_grad_(False)
        model.tunelab_trained = [*blocks[len(blocks) - k:], model.head]
        for module in model.tunelab_trained:
            for p in module.parameters():
                p.requires_grad_(True)

    def advise(self, facts, budget: str, cuda: bool):
        return None
