"""Loading base models: safetensors only, never remote code, never a network call."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from .catalog import ModelSpec, check_model_folder

# Nothing may be fetched at run time: make the Hugging Face libraries fail fast instead of waiting.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAFE_KWARGS = {"use_safetensors": True, "trust_remote_code": False}
log = logging.getLogger(__name__)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str):
    return load_tokenizer(Path(path))


def token_counter(spec: ModelSpec):
    """A function texts -> token counts (special tokens included), for validation and stats."""
    tokenizer = _cached_tokenizer(str(spec.path))

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True,
                                              truncation=False)["input_ids"]]
    return count


# Weights a classifier adds on top of an encoder: their absence from a base-model folder is expected.
HEAD_PARTS = ("classifier", "score", "pre_classifier", "pooler")


def load_classifier(path: Path, label_names: list[str]):
    """A sequence classifier on top of the base model, with a fresh head for these labels.
    transformers' load report (a table on stderr, in the middle of the progress bars) always
    lists the new head as MISSING; we silence it and warn only about what is not expected: base
    weights the folder lacks, which would start random and quietly cost quality."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    check_model_folder(path)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=len(label_names), output_loading_info=True,
            id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)},
            **SAFE_KWARGS)
    finally:
        transformers.logging.set_verbosity(verbosity)
    # The freshly initialised head, by identity: the loop may let it learn faster than the
    # pretrained layers (training.loop.LoopConfig.head_lr_scale).
    new = set(info.get("missing_keys", []))
    model.tunelab_new_parameters = {id(p) for n, p in model.named_parameters() if n in new}
    missing = [k for k in info.get("missing_keys", []) if not any(p in k.split(".") for p in HEAD_PARTS)]
    if missing:
        log.warning("%d weights of %s are not in the folder and start random (e.g. %s): the model "
                    "will need more data to reach the base model's quality", len(missing), path,
                    ", ".join(sorted(missing)[:3]))
    return model


def load_sentence_encoder(path: Path, max_length: int | None = None):
    """A sentence-transformers encoder: its pooling/normalisation modules when the folder has
    them, mean pooling otherwise (sentence-transformers' own default for plain HF folders)."""
    from sentence_transformers import SentenceTransformer

    check_model_folder(path)
    model = SentenceTransformer(str(path), device="cpu", trust_remote_code=False,
                                local_files_only=True)
    if max_length:
        model.max_seq_length = max_length
    return model
