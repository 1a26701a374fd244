"""Import a llama2.c checkpoint (Karpathy's legacy binary format) and its SentencePiece tokenizer
as a transformers `LlamaForCausalLM` folder (safetensors + a fast tokenizer).

The legacy format: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
a negative vocab_size means an unshared classifier), then float32 tensors in a fixed order.
Three details decide whether the result matches llama2.c token for token: wq/wk are permuted
from llama2.c's interleaved rotary pairs to transformers' rotate-half layout, rms_norm_eps is
llama2.c's 1e-5, and rope theta 10000.

The tokenizer is rebuilt from the SentencePiece model proto (BPE pieces, scores, byte fallback)
as a `tokenizers` BPE: in transformers 5.x, `LlamaTokenizer(vocab_file=...)` silently yields a
3-token vocabulary. `check_tokenizer_round_trip` compares it with sentencepiece itself.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = struct.Struct("<7i")


class ImportFailed(ValueError):
    """A file that is not what the importer expects; the message says which and why."""


@dataclass(frozen=True)
class Llama2cHeader:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def read_header(data: bytes) -> Llama2cHeader:
    if len(data) < HEADER.size:
        raise ImportFailed(f"the file is {len(data)} bytes: too short for a llama2.c header")
    dim, hidden, layers, heads, kv_heads, vocab, seq = HEADER.unpack_from(data)
    values = (dim, hidden, layers, heads, kv_heads, abs(vocab), seq)
    if min(values) <= 0 or dim % heads or heads % kv_heads or max(values) > 1_000_000:
        raise ImportFailed(f"not a llama2.c legacy checkpoint (header {values})")
    return Llama2cHeader(dim, hidden, layers, heads, kv_heads, abs(vocab), seq, vocab > 0)


def _permute_rotary(w, heads: int):
    """llama2.c rotates interleaved pairs (x0,x1),(x2,x3)...; transformers rotates halves."""
    out_dim, in_dim = w.shape
    return w.view(heads, out_dim // heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def read_llama2c(path: Path) -> tuple[Llama2cHeader, dict]:
    """The header and a transformers Llama state dict (float32 tensors)."""
    import torch

    data = Path(path).read_bytes()
    h = read_header(data)
    weights = np.frombuffer(data, dtype=np.float32, offset=HEADER.size)
    kv_dim = h.n_kv_heads * h.head_size
    L, D, F, V = h.n_layers, h.dim, h.hidden_dim, h.vocab_size
    shapes = [("emb", (V, D)), ("att_norm", (L, D)), ("wq", (L, D, D)), ("wk", (L, kv_dim, D)),
              ("wv", (L, kv_dim, D)), ("wo", (L, D, D)), ("ffn_norm", (L, D)), ("w1", (L, F, D)),
              ("w2", (L, D, F)), ("w3", (L, F, D)), ("norm", (D,)),
              ("freq_real", (h.seq_len, h.head_size // 2)), ("freq_imag", (h.seq_len, h.head_size // 2))]
    if not h.shared_classifier:
        shapes.append(("cls", (V, D)))
    expected = sum(int(np.prod(s)) for _, s in shapes)
    if weights.size != expected:
        raise ImportFailed(f"{path.name}: the header ({h}) implies {expected:,} weights but the file holds "
                           f"{weights.size:,}: not a legacy-format llama2.c checkpoint (or truncated)")
    t, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        t[name] = torch.from_numpy(weights[offset:offset + n].reshape(shape).copy())
        offset += n
    sd = {"model.embed_tokens.weight": t["emb"], "model.norm.weight": t["norm"],
          "lm_head.weight": t["emb"] if h.shared_classifier else t["cls"]}
    for i in range(L):
        p = f"model.layers.{i}."
        sd.update({p + "self_attn.q_proj.weight": _permute_rotary(t["wq"][i], h.n_heads),
                   p + "self_attn.k_proj.weight": _permute_rotary(t["wk"][i], h.n_kv_heads),
                   p + "self_attn.v_proj.weight": t["wv"][i], p + "self_attn.o_proj.weight": t["wo"][i],
                   p + "mlp.gate_proj.weight": t["w1"][i], p + "mlp.down_proj.weight": t["w2"][i],
                   p + "mlp.up_proj.weight": t["w3"][i], p + "input_layernorm.weight": t["att_norm"][i],
                   p + "post_attention_layernorm.weight": t["ffn_norm"][i]})
    return h, sd


def llama_config(h: Llama2cHeader, bos_id: int = 1, eos_id: int = 2):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=h.vocab_size, hidden_size=h.dim, intermediate_size=h.hidden_dim,
                       num_hidden_layers=h.n_layers, num_attention_heads=h.n_heads,
                       num_key_value_heads=h.n_kv_heads, max_position_embeddings=h.seq_len,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=h.shared_classifier,
                       bos_token_id=bos_id, eos_token_id=eos_id, architectures=["LlamaForCausalLM"])


def sentencepiece_tokenizer(model_file: Path):
    """A fast tokenizer equivalent to a SentencePiece BPE model with byte fallback (Llama's)."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(model_file).read_bytes())
    except Exception as exc:   # protobuf raises its own DecodeError
        raise ImportFailed(f"{Path(model_file).name} is not a SentencePiece model: {exc}") from None
    if proto.trainer_spec.model_type != 2:   # 2 = BPE
        raise ImportFailed(f"{Path(model_file).name} is a SentencePiece model of type "
                           f"{proto.trainer_spec.model_type}; only BPE (Llama-style) is supported")
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    merges = []
    for piece, score, kind in pieces:
        if kind != 1:          # only normal pieces are products of merges
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                merges.append((-score, vocab[left], vocab[right], left, right))
    merges.sort()
    spec = proto.trainer_spec
    unk, bos, eos = pieces[spec.unk_id][0], pieces[spec.bos_id][0], pieces[spec.eos_id][0]
    tok = Tokenizer(models.BPE(vocab, [(m[3], m[4]) for m in merges], unk_token=unk, fuse_unk=True,
                               byte_fallback=spec.byte_fallback))
    steps = []
    if proto.normalizer_spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(decode)
    tok.add_special_tokens([AddedToken(piece, normalized=False, special=True)
                            for piece, _, kind in pieces if kind in (2, 3)])   # unknown, control
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, spec.bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk,
                                   pad_token=unk, model_max_length=1_000_000, clean_up_tokenization_spaces=False)


def check_tokenizer_round_trip(tokenizer, model_file: Path, texts: list[str]) -> None:
    """Raise ImportFailed when the converted tokenizer disagrees with sentencepiece itself."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    for text in texts:
        ours, theirs = tokenizer(text)["input_ids"], [sp.bos_id()] + sp.encode(text)
        if ours != theirs:
            raise ImportFailed(f"the converted tokenizer encodes {text[:40]!r} as {ours[:12]}, sentencepiece "
                               f"as {theirs[:12]}")


ROUND_TRIP_TEXTS = ["Once upon a time, there was a little girl.", "Hello  world\n\nnew line é ü 你好",
                    " leading and trailing spaces ", "Tom's dog said: \"hi!\" 123 | 4.5", ""]


def import_llama2c(checkpoint: Path, tokenizer_model: Path, out: Path, *, name: str | None = None) -> Path:
    """Write a transformers folder to `out` (atomically: a temporary sibling renamed into place)."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    checkpoint, tokenizer_model, out = Path(checkpoint), Path(tokenizer_model), Path(out)
    for f in (checkpoint, tokenizer_model):
        if not f.is_file():
            raise ImportFailed(f"{f} does not exist")
    tokenizer = sentencepiece_tokenizer(tokenizer_model)
    check_tokenizer_round_trip(tokenizer, tokenizer_model, ROUND_TRIP_TEXTS)
    header, state = read_llama2c(checkpoint)
    if len(tokenizer) != header.vocab_size:
        raise ImportFailed(f"the tokenizer has {len(tokenizer)} pieces but the checkpoint's vocabulary is "
                           f"{header.vocab_size}: they do not belong together")
    config = llama_config(header, tokenizer.bos_token_id, tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=True)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "tunelab_import.json").write_text(json.dumps({
            "source": "llama2c", "checkpoint": checkpoint.name, "tokenizer": tokenizer_model.name,
            "name": name or out.name, "header": header.__dict__}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
