"""Quality of a causal LM on held-out conversations: token loss and perplexity on the assistant's
tokens, exact match and token F1 of greedy answers against the references."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import torch

from ..models.causal import IGNORE, collate_lm
from ..models.device import autocast
from .intervals import mean_interval, wilson_interval


def batch_loss_sum(model, batch: dict, device: str, precision: str) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the trained (non-IGNORE) positions, and their count."""
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch.pop("labels")
    with autocast(device, precision):
        logits = model(**batch, use_cache=False).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                             shift_labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, int((shift_labels != IGNORE).sum())


@torch.inference_mode()
def mean_token_loss(model, rows: list[dict], pad_id: int, device: str = "cpu", precision: str = "no",
                    batch_size: int = 16) -> float:
    """Token-weighted mean loss over every trained token of `rows` (nan when there is none)."""
    model.eval()
    order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")
    total, count = 0.0, 0
    for i in range(0, len(order), batch_size):
        loss, n = batch_loss_sum(model, collate_lm(rows, order[i:i + batch_size], pad_id), device, precision)
        total, count = total + float(loss), count + n
    return total / count if count else float("nan")


def perplexity(loss: float) -> float:
    return float(math.exp(min(loss, 50.0)))


_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_answer(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_metrics(predictions: list[str], references: list[str]) -> dict:
    """Exact match and token F1 of the answers, each with its 95% interval over the answers
    (token F1: bootstrap of the per-answer scores; exact match: Wilson)."""
    if not references:
        return {}
    exact = [exact_match(p, r) for p, r in zip(predictions, references)]
    f1 = [token_f1(p, r) for p, r in zip(predictions, references)]
    return {"exact_match": float(np.mean(exact)), "token_f1": float(np.mean(f1)),
            "exact_match_interval": wilson_interval(int(sum(exact)), len(exact)),
            "token_f1_interval": mean_interval(f1), "answers_scored": len(references)}
