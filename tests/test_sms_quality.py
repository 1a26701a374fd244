"""SMS spam with LoRA on the real pretrained encoder reaches >= 0.97 accuracy."""

from __future__ import annotations

import pytest

from tunelab.models import resolve_model
from tunelab.engine import DataSpec, prepare_data, run_strategy


@pytest.mark.slow      # a long quality run: `make test-slow`
def test_lora_on_sms_spam_reaches_97_percent(shared_copy):
    model = resolve_model("minilm")
    data = prepare_data(DataSpec(shared_copy / "sms_spam.tsv", limit=1000), model)
    result = run_strategy(model, data, "lora", {"max_length": 64})
    assert result.metrics["accuracy"] >= 0.97, result.metrics
    assert result.metrics["per_class"]["spam"]["recall"] >= 0.8
