"""ONNX export of tuned classifiers: the fp32 graph gives PyTorch's logits (within 1e-4) for every
kind it supports, a LoRA adapter merged in; the int8 copy of a really trained MiniLM classifier loses
at most 0.01 macro-F1 on the test split; exports are cached by content; other kinds are refused
with what to do instead."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from .classifier_fixtures import BUILDERS, TEXTS, images
from tunelab.artifacts.store import load_artifact
from tunelab.models.image_predictors import ImageClassifierPredictor, ImageHeadPredictor
from tunelab.models.image_preprocess import to_tensor
from tunelab.models.inference import predict_logits, tokenize
from tunelab.models.predictors import SequenceClassifierPredictor
from tunelab.serving.classify_backend import open_classifier
from tunelab.serving.errors import BadServingRequest
from tunelab.serving.onnx_export import FP32, INT8, META, OnnxClassifier, export_classifier, folder_hash


@pytest.fixture(scope="module")
def probe(banking_subset, tmp_path_factory):
    """A real linear probe on MiniLM (10 Banking77 intents): an embedding-head artifact, and its test split."""
    from tunelab.engine import DataSpec, prepare_data, run_strategy
    from tunelab.models import resolve_model

    model = resolve_model("minilm")
    data = prepare_data(DataSpec(*banking_subset), model)
    out = tmp_path_factory.mktemp("probe") / "model"
    run_strategy(model, data, "linear-probe", out=out)
    return out, data.splits.test


@pytest.fixture(scope="module")
def artifacts(probe, tmp_path_factory):
    """kind -> artifact folder; the embedding head is the trained probe."""
    root = tmp_path_factory.mktemp("artifacts")
    folders = {kind: build(root / kind) for kind, build in BUILDERS.items() if kind != "embedding-head"}
    return {**folders, "embedding-head": probe[0]}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


def torch_logits(folder, items) -> np.ndarray:
    """The artifact's logits as its PyTorch predictor computes them in fp32 (a model trained
    in bf16 is served by torch under bf16 autocast, ~1e-2 off; the ONNX graph is fp32)."""
    p = load_artifact(folder)
    p.precision = "no"
    with torch.inference_mode():
        if isinstance(p, SequenceClassifierPredictor):
            return predict_logits(p.model, tokenize(p.tokenizer, items, p.max_length), p.tokenizer.pad_token_id,
                                  "cpu", "no")
        if isinstance(p, ImageClassifierPredictor):
            return p.backbone(to_tensor(items, p.backbone.preprocess)).numpy()
        features = p.features(items) if isinstance(p, ImageHeadPredictor) else p.embed(items)
        return features @ p.weight.T + p.bias


CASES = {kind: ("image" if kind.startswith("image") else "text") for kind in BUILDERS}


@pytest.mark.parametrize("kind", list(CASES))
def test_fp32_logits_match_pytorch(kind, artifacts, work):
    items = images() if CASES[kind] == "image" else TEXTS
    backend = open_classifier(artifacts[kind], "onnx", work)
    assert backend.inputs == CASES[kind]
    got, want = backend.logits(items), torch_logits(artifacts[kind], items)
    assert got.shape == want.shape == (len(items), len(backend.label_names))
    assert np.abs(got - want).max() <= 1e-4
    # Batch size 1 and the whole batch: the dynamic axes serve any shape.
    assert np.abs(backend.logits(items[:1]) - want[:1]).max() <= 1e-4
    probs = backend.predict_proba(items)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_lora_adapter_is_merged_into_one_graph(artifacts, work):
    import onnx

    folder = artifacts["sequence-classifier+lora"]
    open_classifier(folder, "onnx", work)
    graph = work / "onnx" / folder_hash(folder) / FP32
    names = " ".join(i.name for i in onnx.load(str(graph), load_external_data=False).graph.initializer)
    assert "lora" not in names.lower()
    # ...and the merge changed the model: its logits are not the bare base classifier's.
    base, lora = (torch_logits(artifacts[k], TEXTS) for k in ("sequence-classifier", "sequence-classifier+lora"))
    assert np.abs(base - lora).max() > 1e-2


def test_int8_loses_at_most_a_hundredth_of_macro_f1(probe, work):
    folder, test = probe
    texts, truth = test.texts, [e.label for e in test.examples]

    def macro_f1(backend) -> float:
        predicted = [backend.label_names[i] for i in backend.predict_proba(texts).argmax(axis=1)]
        return f1_score(truth, predicted, average="macro")

    scores = {engine: macro_f1(open_classifier(folder, engine, work)) for engine in ("torch", "onnx", "onnx-int8")}
    assert scores["torch"] >= 0.85, scores                  # a real model, not chance
    assert abs(scores["onnx"] - scores["torch"]) <= 0.002, scores
    assert scores["onnx-int8"] >= scores["torch"] - 0.01, scores
    graph = work / "onnx" / folder_hash(folder)
    assert (graph / INT8).stat().st_size < 0.5 * (graph / FP32).stat().st_size


def test_an_export_is_cached_by_content_not_by_path(artifacts, work, tmp_path):
    folder = artifacts["sequence-classifier"]
    open_classifier(folder, "onnx", work)                   # exported (or already)
    graph = work / "onnx" / folder_hash(folder) / FP32
    stamp = graph.stat().st_mtime_ns
    moved = shutil.copytree(folder, tmp_path / "elsewhere")     # as the supervisor decrypts it: a new path
    t0 = time.perf_counter()
    backend = open_classifier(moved, "onnx", work)
    assert time.perf_counter() - t0 < 5                     # no second export (one takes ~10 s)
    assert graph.stat().st_mtime_ns == stamp
    assert backend.predict_proba(TEXTS[:2]).shape == (2, len(backend.label_names))
    # Other content, another export folder.
    labels = json.loads((moved / "labels.json").read_text())
    (moved / "labels.json").write_text(json.dumps({**labels, "edited": True}))
    assert folder_hash(moved) != folder_hash(folder)


def test_an_interrupted_or_foreign_export_is_redone(artifacts, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / f".{FP32}.part").write_bytes(b"half a graph")      # a crash mid-export leaves no model.onnx
    graph = export_classifier(artifacts["image-head"], out)
    assert OnnxClassifier(graph).predict_proba(images(2)).shape == (2, 4)
    # The same folder given another model: its export replaces the first, never served in its place.
    graph = export_classifier(artifacts["image-classifier"], out)
    assert json.loads((out / META).read_text())["kind"] == "image-classifier"
    want = torch_logits(artifacts["image-classifier"], images(3))
    assert np.abs(OnnxClassifier(graph).logits(images(3)) - want).max() <= 1e-4


@pytest.mark.parametrize("kind", ["prompt-classifier", "causal-lm", "something-new"])
def test_unsupported_kinds_are_refused_with_what_to_do(kind, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"kind": kind, "labels": ["a", "b"]}))
    with pytest.raises(BadServingRequest) as e:
        export_classifier(folder, tmp_path / "out")
    assert kind in e.value.message and "sequence-classifier" in e.value.message
    assert 'engine "torch"' in e.value.message and e.value.status == 422
    assert not (tmp_path / "out" / FP32).exists()


def test_unknown_engine_and_unfinished_folder_are_refused(artifacts, tmp_path):
    with pytest.raises(BadServingRequest, match="onnx-int8"):
        open_classifier(artifacts["image-head"], "tensorrt", tmp_path)
    with pytest.raises(BadServingRequest, match="manifest"):
        open_classifier(tmp_path, "onnx", tmp_path)


def test_sessions_use_torchs_thread_count(artifacts, work):
    backend = open_classifier(artifacts["image-classifier"], "onnx", work)
    options = backend.session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    assert backend.session.get_providers() == ["CPUExecutionProvider"]
