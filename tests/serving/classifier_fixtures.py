"""Tuned classifier artifacts for the serving tests, written through artifacts.store like a run
writes them, on the real pretrained MiniLM. Untrained heads (and LoRA weights drawn at random, so
that merging them changes the model) are enough where only PyTorch-vs-ONNX agreement is tested;
quality claims train a real model through tunelab.engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tunelab.artifacts.store import write_artifact
from tunelab.models import resolve_model
from tunelab.models.loading import load_classifier, load_sentence_encoder, load_tokenizer
from tunelab.models.predictors import EmbeddingHeadPredictor, SequenceClassifierPredictor

LABELS = ["billing", "cards", "fraud", "travel"]
TEXTS = ["my card was stolen yesterday", "how do I top up", "?",
         "I was charged twice for the same purchase at a shop abroad, please refund me the money",
         "exchange rate", "Why is my transfer still pending after three days? It said it would be instant.",
         "hi", "lost wallet"] * 2


def _write(out: Path, predictor) -> Path:
    return write_artifact(out, predictor, config={"strategy": "test"}, metrics={}, data_report={}, card="test")


def sequence_artifact(out: Path, *, adapter: bool = False, seed: int = 0) -> Path:
    """A MiniLM sequence classifier; adapter: a LoRA adapter (random, non-zero B) on it."""
    torch.manual_seed(seed)
    path = resolve_model("minilm").path
    model = load_classifier(path, LABELS)
    if adapter:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8,
                                                 target_modules=["query", "value"], init_lora_weights=False,
                                                 modules_to_save=["pooler"]))
    model.eval()
    predictor = SequenceClassifierPredictor(model, load_tokenizer(path), LABELS, max_length=64,
                                            base_model="minilm", adapter=adapter)
    return _write(out, predictor)


def embedding_artifact(out: Path, *, seed: int = 0) -> Path:
    """A MiniLM sentence encoder with a random linear head (the linear-probe's kind)."""
    rng = np.random.default_rng(seed)
    encoder = load_sentence_encoder(resolve_model("minilm").path)
    weight = rng.normal(0, 3, (len(LABELS), encoder.get_embedding_dimension())).astype(np.float32)
    bias = rng.normal(0, 0.1, len(LABELS)).astype(np.float32)
    return _write(out, EmbeddingHeadPredictor(encoder, weight, bias, LABELS, "minilm"))


IMAGE_MODEL = "resnet20-cifar10"
SHARED_IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "vision" / "cifar10-mini" / "test"


def images(n: int = 12) -> list:
    """Real CIFAR JPEGs (read, never written), as the PIL images a server decodes."""
    from PIL import Image

    paths = sorted(SHARED_IMAGES.rglob("*.jpg"))[::50][:n]
    return [Image.open(p).convert("RGB") for p in paths]


def image_head_artifact(out: Path, *, seed: int = 0) -> Path:
    """The ResNet-20 backbone frozen under a random linear head (the image linear-probe's kind)."""
    from tunelab.models.image_predictors import ImageHeadPredictor
    from tunelab.models.vision import load_image_model

    rng = np.random.default_rng(seed)
    backbone = load_image_model(resolve_model(IMAGE_MODEL))
    weight = rng.normal(0, 0.5, (len(LABELS), backbone.feature_dim)).astype(np.float32)
    return _write(out, ImageHeadPredictor(backbone, weight, np.zeros(len(LABELS), np.float32), LABELS, IMAGE_MODEL))


def image_classifier_artifact(out: Path, *, seed: int = 0) -> Path:
    """ResNet-20 with a new head for these labels, saved whole (the image fine-tune's kind)."""
    from tunelab.models.image_predictors import ImageClassifierPredictor
    from tunelab.models.vision import load_image_model

    torch.manual_seed(seed)
    backbone = load_image_model(resolve_model(IMAGE_MODEL))
    backbone.reset_head(len(LABELS))
    return _write(out, ImageClassifierPredictor(backbone, LABELS, IMAGE_MODEL))


BUILDERS = {
    "sequence-classifier": sequence_artifact,
    "sequence-classifier+lora": lambda out: sequence_artifact(out, adapter=True),
    "embedding-head": embedding_artifact,
    "image-head": image_head_artifact,
    "image-classifier": image_classifier_artifact,
}
