"""Analytic model FLOPs of a transformer, from counts a training loop keeps cheaply: rows, tokens
(the sum of the row lengths) and tokens_sq (the sum of their squares: attention grows with it).

Counted as torch.utils.flop_counter counts them, so an MFU built on them is PaLM's: 2 FLOPs per
multiply-add of every matmul (linear layers, attention scores, attention-weighted values); norms,
softmax, elementwise ops, embedding lookups and the loss are free. A causal mask is not halved (the
kernels compute the whole square; flop_counter does not halve it either). Padding is not counted:
the counts are of real tokens, so padded work lowers MFU, as it should.

Backward: a matmul's input gradient and its weight gradient each cost its forward again, so full
training is 3x forward. Attention products count 2x forward in backward (a gradient per operand),
which is what flop_counter shows for eager attention and for SDPA's math path (BERT training on CPU,
attention dropout > 0).
Two flop_counter quirks are deliberately not copied, neither being model work: the fused SDPA
kernels (GPU flash / memory-efficient) are counted at 2.5x in backward (they recompute the scores:
hardware FLOPs), and on CPU `_scaled_dot_product_flash_attention_for_cpu` (sdpa without dropout: Llama,
BERT in eval) has no formula at all, so flop_counter sees no attention FLOPs there.
"""

from __future__ import annotations

from dataclasses import dataclass

ENCODERS = ("bert", "roberta", "xlm-roberta")   # BERT layout; classifier = dense + out on the first token
DECODERS = ("llama", "mistral", "qwen2")         # Llama layout: GQA, gated MLP, lm_head on every token
MODES = ("full", "adapter", "forward")
KEY_PROJECTIONS = ("key", "k_proj", "k_lin", "key_proj")


@dataclass(frozen=True)
class FlopModel:
    """Forward FLOPs split by what they scale with. The extra fields refine adapter training."""
    per_token: float   # every linear layer a token goes through (incl. a causal LM's lm_head)
    per_pair: float    # per (query, key) pair, all layers: scores + weighted values, 4 * heads * head_dim a layer
    per_row: float     # a classifier's pooler + head, applied to one token per row
    # Forward FLOPs/token of the projections fed by the embeddings (layer 0's q/k/v): with frozen
    # embeddings autograd computes no input gradient for them, so adapter training skips them.
    first_inputs: float = 0.0
    # Per pair: layer 0's score gradient w.r.t. the keys, skipped in adapter training unless the key
    # projection has an adapter (its keys then need a gradient).
    first_key_pair: float = 0.0
    # Forward FLOPs/token of the LoRA adapters (flop_model_for on a peft model; 0 from a bare config).
    adapter_per_token: float = 0.0

    def forward(self, rows: int, tokens: int, tokens_sq: int) -> float:
        """A forward pass over rows of these lengths; additive over rows."""
        return ((self.per_token + self.adapter_per_token) * tokens + self.per_pair * tokens_sq
                + self.per_row * rows)

    def training(self, rows: int, tokens: int, tokens_sq: int, mode: str = "full") -> float:
        """One forward + backward over these rows.
        full: every matmul 3x (input and weight gradients; the embeddings train, so layer 0's inputs
          get gradients too).
        adapter: a frozen base, trainable adapters and head. The base does forward + input gradients
          (about 2x), except where autograd computes none: layer 0's q/k/v (frozen embeddings feed
          them) and layer 0's key gradient in the scores. Adapters (when known) do 3x their forward;
          the head is counted 3x (it trains). Not modelled: layer 0's lora_A input gradient (absent).
        forward: forward only (feature extraction, inference, a reference model)."""
        if mode not in MODES:
            raise ValueError(f"unknown FLOP mode {mode!r}: use one of {', '.join(MODES)}")
        fwd = self.forward(rows, tokens, tokens_sq)
        if mode == "forward":
            return fwd
        if mode == "full":
            return 3 * fwd
        backward = ((self.per_token - self.first_inputs + 2 * self.adapter_per_token) * tokens
                    + (2 * self.per_pair - self.first_key_pair) * tokens_sq + 2 * self.per_row * rows)
        return fwd + backward


def _dims(config) -> tuple[int, int, int, int, int]:
    """hidden, layers, query width (heads * head_dim), key/value width, MLP width."""
    h = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or h // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    inter = int(getattr(config, "intermediate_size", None) or 4 * h)
    return h, int(config.num_hidden_layers), heads * head_dim, kv_heads * head_dim, inter


def flop_model(config) -> FlopModel:
    """The FLOP model of a transformers config: an encoder classifier (BERT family) or a decoder
    causal LM (Llama family); ValueError for any other architecture (no guessing)."""
    kind = getattr(config, "model_type", None)
    if kind not in ENCODERS + DECODERS:
        raise ValueError(f"no analytic FLOP count for model_type {kind!r}: known are "
                         f"{', '.join(ENCODERS + DECODERS)}")
    h, layers, q, kv, inter = _dims(config)
    qkv = 2 * h * (q + 2 * kv)                 # q, k, v projections (k/v narrower with GQA)
    out = 2 * q * h                            # attention output projection
    if kind in ENCODERS:
        mlp = 2 * 2 * h * inter                # intermediate + output dense
        labels = int(getattr(config, "num_labels", 2) or 2)
        head = 2 * h * h + 2 * h * labels      # pooler (or dense) + classifier on the first token
        return FlopModel(per_token=layers * (qkv + out + mlp), per_pair=4 * q * layers, per_row=head,
                         first_inputs=qkv, first_key_pair=2 * q)
    mlp = 3 * 2 * h * inter                    # gate, up, down
    lm_head = 2 * h * int(config.vocab_size)
    return FlopModel(per_token=layers * (qkv + out + mlp) + lm_head, per_pair=4 * q * layers, per_row=0.0,
                     first_inputs=qkv, first_key_pair=2 * q)


def _unwrap(model):
    """The transformers model inside a peft wrapper (PeftModel or a bare LoraModel)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if inner is not None and hasattr(inner, "config") else model


def flop_model_for(model) -> FlopModel:
    """flop_model(model.config), plus what only the module knows: the active, unmerged LoRA
    adapters' FLOPs, whether layer 0's keys need a gradient (an adapted key projection), and
    whether the embeddings' output was made to require grad (enable_input_require_grads)."""
    base = _unwrap(model)
    fm = flop_model(base.config)
    adapters, key_adapted = 0.0, False
    for name, module in base.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not lora_a or lora_b is None or getattr(module, "merged", False):
            continue
        active = [a for a in getattr(module, "active_adapters", lora_a.keys()) if a in lora_a]
        if getattr(module, "disable_adapters", False) or not active:
            continue
        for a in active:
            down, up = lora_a[a], lora_b[a]
            adapters += 2 * down.out_features * (down.in_features + up.out_features)
        key_adapted = key_adapted or name.rsplit(".", 1)[-1] in KEY_PROJECTIONS
    inputs_need_grad = bool(getattr(base, "_require_grads_hooks", None))
    return FlopModel(per_token=fm.per_token, per_pair=fm.per_pair, per_row=fm.per_row,
                     first_inputs=0.0 if inputs_need_grad else fm.first_inputs,
                     first_key_pair=0.0 if key_adapted or inputs_need_grad else fm.first_key_pair,
                     adapter_per_token=adapters)


def flops_per_token(config, seq_len: int, mode: str = "full") -> float:
    """Training (or forward) FLOPs per token of one row of seq_len tokens: for tables."""
    return flop_model(config).training(1, seq_len, seq_len * seq_len, mode=mode) / seq_len
