"""The causal-LM task for the shared training loop: next-token loss on the trained tokens
(assistant turns, or all of plain text), validation by held-out loss (lower is better)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..evaluation.generative import batch_loss_sum, mean_token_loss, perplexity
from ..models.causal import IGNORE, EncodedExample, collate_lm, pack, real_tokens


@dataclass
class LMSplit:
    rows: list[dict]           # input_ids, labels and, when packed, position_ids

    @classmethod
    def from_examples(cls, examples: list[EncodedExample], packed: bool = False,
                      max_length: int = 0) -> "LMSplit":
        if packed:
            return cls(pack(examples, max_length))
        return cls([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r["input_ids"]) for r in self.rows), dtype=np.int64, count=len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)


class CausalLMTask:
    metric_name = "val_loss"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def size(self, split: LMSplit) -> int:
        return len(split)

    def row_sizes(self, split: LMSplit) -> np.ndarray:
        """Trained tokens a row (what the loss is a mean over): a rank's share of a global batch
        is its share of these (training/distributed.global_batch_share)."""
        return np.fromiter((sum(1 for t in r["labels"][1:] if t != IGNORE) for r in split.rows),
                           dtype=np.int64, count=len(split.rows))

    def loss(self, model, split: LMSplit, index, device, cfg) -> tuple[torch.Tensor, int]:
        batch = collate_lm(split.rows, index, self.pad_id)
        tokens = real_tokens(batch)
        total, count = batch_loss_sum(model, batch, cfg.device, cfg.precision)
        return total / max(count, 1), tokens

    def evaluate(self, model, split: LMSplit, cfg) -> tuple[float, dict]:
        loss = mean_token_loss(model, split.rows, self.pad_id, cfg.device, cfg.precision, batch_size=cfg.batch_size)
        model.train()
        return -loss, {"val_loss": loss, "val_perplexity": perplexity(loss)}
