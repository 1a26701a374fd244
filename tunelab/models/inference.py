"""Batched inference for sequence classifiers: tokenise once, sort by length, pad per batch."""

from __future__ import annotations

import numpy as np
import torch

from .batch_shapes import inference_batches
from .device import autocast


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length,
                     add_special_tokens=True)["input_ids"]


def lengths_of(ids: list[list[int]]) -> np.ndarray:
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))


def collate(ids: list[list[int]], index: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    rows = [ids[i] for i in index]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        input_ids[j, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[j, :len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@torch.inference_mode()
def predict_logits(model, ids: list[list[int]], pad_id: int, device: str, precision: str,
                   batch_size: int = 128) -> np.ndarray:
    out = None
    model.eval()
    for index in inference_batches(lengths_of(ids), batch_size, str(device).split(":")[0]):
        batch = {k: v.to(device) for k, v in collate(ids, index, pad_id).items()}
        with autocast(device, precision):
            logits = model(**batch).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(ids), logits.shape[1]), dtype=np.float32)
        out[index] = logits
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
