"""Plumbing of the training loop on a tiny randomly initialised model (no quality claims)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import BertConfig, BertForSequenceClassification

from tunelab.training.loop import EncodedSplit, LoopConfig, train_loop


def _tiny_model():
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=2, attn_implementation="eager")
    return BertForSequenceClassification(cfg)


def _split(n: int) -> EncodedSplit:
    rng = np.random.default_rng(0)
    ids = [[1] + list(rng.integers(2, 50, size=int(rng.integers(3, 9)))) for _ in range(n)]
    return EncodedSplit(ids, np.array([i % 2 for i in range(n)]))


@pytest.fixture
def foreign_accelerate_state():
    """Another accelerate user (a bf16 Trainer, a notebook) initialised the process-wide state."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    Accelerator(cpu=True, mixed_precision="bf16")
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_loop_runs_after_another_accelerate_user(foreign_accelerate_state, tmp_path):
    cfg = LoopConfig(epochs=1, batch_size=8, checkpoint_every=1000)
    result = train_loop(_tiny_model(), _split(32), _split(8), cfg, tmp_path / "ckpt", pad_id=0)
    assert result.state.global_step == 4
