"""Tuned classifiers exported to ONNX and served with onnxruntime on the CPU.

One graph per artifact, from token ids (or a preprocessed image batch) to logits, with dynamic
batch and sequence axes: a sequence classifier (a LoRA adapter merged into its base first), a
sentence encoder with its pooling, normalisation and the linear head, or an image backbone with
its head. Tokenisation and image preprocessing stay in Python and are the artifact's own (its
tokenizer, max_length and truncation), so the ONNX logits match PyTorch's to ~1e-6. An int8 copy
(onnxruntime's dynamic quantisation of the weights) is made on request next to the fp32 graph.

An export folder holds model.onnx, optionally model.int8.onnx, export.json (what the graph takes
and the labels) and the tokenizer: it serves without the artifact or its base model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts.store import load_artifact, read_manifest
from ..models.image_predictors import ImageClassifierPredictor, ImageHeadPredictor
from ..models.inference import collate, lengths_of, tokenize
from ..models import resolve_model
from ..models.batch_shapes import inference_batches
from ..models.predictors import EmbeddingHeadPredictor, SequenceClassifierPredictor, model_key, softmax
from .errors import BadServingRequest

log = logging.getLogger(__name__)

FP32, INT8, META = "model.onnx", "model.int8.onnx", "export.json"
# Bumped when the graphs or export.json change, so that a cached export of an older layout is redone.
EXPORT_VERSION = 1
SUPPORTED_KINDS = ("sequence-classifier", "embedding-head", "image-head", "image-classifier")
OPSET = 18
_QUANTIZE_LOCK = threading.Lock()


class _Logits(nn.Module):
    """(input_ids, attention_mask) -> logits of a transformers sequence classifier."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _linear(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """A predictor's numpy head (logits = W x + b) as a layer of the graph."""
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return head


class _EncoderHead(nn.Module):
    """sentence-transformers' own modules (its pooling and normalisation), then the L2
    normalisation models.embeddings.encode applies, then the linear head: logits."""

    def __init__(self, encoder, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.encoder, self.head = encoder, _linear(weight, bias)

    def forward(self, input_ids, attention_mask):
        emb = self.encoder({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]
        return self.head(nn.functional.normalize(emb.float(), p=2, dim=1))


class _ImageHead(nn.Module):
    """A frozen image backbone's features, then the linear head: logits."""

    def __init__(self, backbone, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.backbone, self.head = backbone, _linear(weight, bias)

    def forward(self, pixels):
        return self.head(self.backbone.features(pixels).float())


def refuse(kind: str) -> BadServingRequest:
    return BadServingRequest(
        f"a {kind!r} model cannot be served with ONNX: the ONNX engines support "
        f"{', '.join(SUPPORTED_KINDS)}; deploy it with engine \"torch\" instead")


def _text_graph(predictor, out: Path) -> tuple[nn.Module, dict]:
    """The module to export for a text classifier, and what OnnxClassifier needs to feed it."""
    if isinstance(predictor, SequenceClassifierPredictor):
        model = predictor.model
        if predictor.adapter:
            # One graph with the LoRA deltas folded into the base weights: no adapter ops at run time.
            model = model.merge_and_unload()
        tokenizer, max_length = predictor.tokenizer, predictor.max_length
        module = _Logits(model.float().eval())
    else:
        from ..models.embeddings import _text_transformer

        encoder = predictor.encoder
        if not _text_transformer(encoder):
            raise BadServingRequest("this embedding-head model's encoder is not a text transformer with a "
                                    "tokenizer, which ONNX export needs; deploy it with engine \"torch\"")
        tokenizer, max_length = encoder.tokenizer, int(encoder.max_seq_length)
        module = _EncoderHead(encoder.float().eval(), predictor.weight, predictor.bias)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Both kinds tokenise as models.inference.tokenize does (truncation at max_length, special tokens).
    return module, {"inputs": "text", "max_length": max_length, "pad_id": int(pad)}


def _image_graph(predictor) -> tuple[nn.Module, dict]:
    backbone = predictor.backbone.float().eval()
    if isinstance(predictor, ImageHeadPredictor):
        module = _ImageHead(backbone, predictor.weight, predictor.bias)
    else:
        module = backbone
    # The graph computes in NCHW whatever memory format the convnets keep their weights in.
    return module.to(memory_format=torch.contiguous_format), {
        "inputs": "image", "preprocess": {**backbone.preprocess.to_dict(), "resample": int(backbone.preprocess.resample)}}


def _example_inputs(meta: dict) -> dict[str, tuple[torch.Tensor, dict]]:
    """Example inputs (2 rows, so that the batch axis is not specialised to 1), by input name,
    with their dynamic axes."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    if meta["inputs"] == "text":
        seq = torch.export.Dim("sequence", min=1, max=max(2, meta["max_length"]))
        ids = torch.full((2, 8), 5, dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 6:] = 0
        return {"input_ids": (ids, {0: batch, 1: seq}), "attention_mask": (mask, {0: batch, 1: seq})}
    size = int(meta["preprocess"]["size"])
    return {"pixels": (torch.zeros((2, 3, size, size)), {0: batch})}


def _export(module: nn.Module, meta: dict, path: Path) -> None:
    inputs = _example_inputs(meta)
    args = tuple(tensor for tensor, _ in inputs.values())
    # Dynamic axes by position: the modules' forward arguments need not carry the graph's input names.
    dynamic = tuple(axes for _, axes in inputs.values())
    # It also logs a warning per torchvision operator it cannot register (torchvision is not installed here).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        # The exporter warns about every renamed axis and deprecated pytree API: noise in a server's log.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), args, str(path), input_names=list(inputs), output_names=["logits"],
                              dynamic_shapes=dynamic, dynamo=True, external_data=False, opset_version=OPSET,
                              verbose=False)
    except Exception as e:          # noqa: BLE001  the exporter raises many kinds
        cause = str(e.__cause__ or e).strip().splitlines() or [""]
        raise BadServingRequest(f"this model could not be exported to ONNX ({type(e.__cause__ or e).__name__}: "
                                f"{cause[0][:300]}); deploy it with engine \"torch\"") from e


def quantize(fp32: Path, int8: Path) -> Path:
    """int8 weights (dynamic quantisation: activations quantised per batch at run time), which
    keeps a small CPU's matrix products in int8 without calibration data."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _QUANTIZE_LOCK, tempfile.TemporaryDirectory(dir=int8.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        part = Path(tmp) / INT8
        quantize_dynamic(str(prepared), str(part), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(part, int8)
    return int8


def folder_hash(folder: Path) -> str:
    """The content hash of an artifact folder (every file's bytes and relative path, not where it
    lies), plus the base model it names (an adapter or a frozen-encoder head is exported with its base)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(str(path.relative_to(folder)).encode() + b"\x00")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    base = read_manifest(folder).get("base_model")
    if base:
        h.update(f"base:{base}:{model_key(resolve_model(base).path)}".encode())
    return h.hexdigest()[:24]


def _is_current(out: Path, source: str) -> bool:
    """An export in `out` of this very content, by this version of the exporter."""
    if not (out / FP32).is_file() or not (out / META).is_file():
        return False
    meta = json.loads((out / META).read_text())
    return meta.get("version") == EXPORT_VERSION and meta.get("source") == source


def export_classifier(folder: Path, out: Path, *, int8: bool = False) -> Path:
    """Exports the tuned classifier in `folder` into the folder `out` (created) and returns the
    graph to serve: model.onnx, or model.int8.onnx when int8. An export of the same content already
    in `out` is reused. Unsupported kinds: BadServingRequest."""
    folder, out = Path(folder), Path(out)
    manifest = read_manifest(folder)
    kind = manifest.get("kind")
    if kind not in SUPPORTED_KINDS:
        raise refuse(str(kind))
    out.mkdir(parents=True, exist_ok=True)
    source = folder_hash(folder)
    if not _is_current(out, source):
        for stale in (FP32, INT8):
            (out / stale).unlink(missing_ok=True)
        t0 = time.perf_counter()
        predictor = load_artifact(folder)
        if isinstance(predictor, (SequenceClassifierPredictor, EmbeddingHeadPredictor)):
            module, meta = _text_graph(predictor, out)
        elif isinstance(predictor, (ImageHeadPredictor, ImageClassifierPredictor)):
            module, meta = _image_graph(predictor)
        else:                                       # a kind registered under a supported name elsewhere
            raise refuse(str(kind))
        meta = {**meta, "version": EXPORT_VERSION, "source": source, "kind": kind,
                "labels": list(predictor.label_names)}
        part = out / f".{FP32}.part"
        _export(module, meta, part)
        (out / META).write_text(json.dumps(meta, indent=2))
        os.replace(part, out / FP32)                # last: a folder with model.onnx is complete
        log.info("exported %s (%s) to ONNX in %.1f s", folder.name, kind, time.perf_counter() - t0)
    if int8 and not (out / INT8).is_file():
        quantize(out / FP32, out / INT8)
    return out / (INT8 if int8 else FP32)


class OnnxClassifier:
    """A ClassifierBackend on onnxruntime (CPUExecutionProvider) over an export folder. Calls run
    one at a time: fast tokenizers are not reentrant ("Already borrowed"), and one forward already
    uses every core."""

    def __init__(self, graph: Path, threads: int | None = None):
        import onnxruntime as ort

        graph = Path(graph)
        self.meta = json.loads((graph.parent / META).read_text())
        self.label_names: list[str] = list(self.meta["labels"])
        self.inputs: str = self.meta["inputs"]
        options = ort.SessionOptions()
        # Requests are batched upstream and one forward runs at a time: all cores go to that forward.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Pool threads keep onnxruntime's default of spinning briefly after a forward: turning it off
        # ("session.intra_op.allow_spinning" "0") cost a MiniLM request 4.5 -> 5.7 ms on 2 cores.
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.tokenizer, self._lock = None, threading.Lock()
        if self.inputs == "text":
            from ..models.loading import load_tokenizer

            self.tokenizer = load_tokenizer(graph.parent / "tokenizer")
        else:
            from ..models.image_preprocess import ImagePreprocess

            pre = self.meta["preprocess"]
            self.preprocess = ImagePreprocess(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})

    def predict_proba(self, items: list) -> np.ndarray:
        return softmax(self.logits(items)) if len(items) else np.zeros((0, len(self.label_names)), np.float32)

    def logits(self, items: list) -> np.ndarray:
        with self._lock:
            return self._text_logits(list(items)) if self.inputs == "text" else self._image_logits(list(items))

    def _text_logits(self, texts: list[str]) -> np.ndarray:
        ids = tokenize(self.tokenizer, texts, self.meta["max_length"])
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        # Runs of similar length, as the torch predictors pad them (models/batch_shapes.py).
        for index in inference_batches(lengths_of(ids), 128, "cpu"):
            batch = collate(ids, index, self.meta["pad_id"])
            out[index] = self.session.run(["logits"], {k: v.numpy() for k, v in batch.items()})[0]
        return out

    def _image_logits(self, images: list) -> np.ndarray:
        from ..models.image_preprocess import to_tensor

        out = np.zeros((len(images), len(self.label_names)), dtype=np.float32)
        for start in range(0, len(images), 64):
            x = to_tensor(images[start:start + 64], self.preprocess).numpy()
            out[start:start + 64] = self.session.run(["logits"], {"pixels": x})[0]
        return out
