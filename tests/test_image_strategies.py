"""Image classification as one more task of the engine: recognised by content, its strategies
found under the text strategies' names, each fitted on real CIFAR JPEGs with the real ResNet-20
weights, written as a model folder that loads back and predicts the same, pre-flight refusing
what would not fit, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import run_cli
from image_archives import CIFAR, cifar_zip

RESNET = "resnet20-cifar10"



@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory):
    """10 training and 5 test images a class (the archive's test/ folder is the test set)."""
    return cifar_zip(tmp_path_factory.mktemp("img") / "tiny.zip", per_class=10, test_per_class=5)


@pytest.fixture(scope="module")
def mini_zip(tmp_path_factory):
    """The whole cifar10-mini: 100 training and 50 test images a class."""
    return cifar_zip(tmp_path_factory.mktemp("img") / "mini.zip", per_class=100, test_per_class=50)


@pytest.fixture(scope="module")
def resnet():
    from tunelab.models import resolve_model

    return resolve_model(RESNET)


@pytest.fixture(scope="module")
def tiny(tiny_zip, resnet):
    from tunelab.engine import DataSpec, prepare_data

    return prepare_data(DataSpec(tiny_zip), resnet)


def test_an_image_archive_is_the_image_task(tiny_zip, tmp_path):
    from tunelab.engine import task_of_file

    table = tmp_path / "texts.csv"
    table.write_text("text,label\nhello,a\nbye,b\n")
    assert task_of_file(tiny_zip).name == "image-classification"
    assert task_of_file(tiny_zip).default_model == "efficientnet-lite0"
    assert task_of_file(table).name == "text-classification"


@pytest.mark.parametrize("asked, runs", [("linear-probe", "image-linear-probe"), ("few-shot", "image-few-shot"),
                                         ("full", "image-full"), ("partial-unfreeze", "partial-unfreeze"),
                                         ("image-full", "image-full")])
def test_text_names_resolve_on_image_data(asked, runs):
    from tunelab.strategies import default_compare, default_strategy, resolve, task_named

    task = task_named("image-classification")
    assert resolve(asked, task).name == runs
    assert default_strategy(task) == "image-linear-probe"
    assert set(default_compare(task)) == {"image-linear-probe", "image-few-shot", "image-full"}


def test_lora_on_image_data_names_the_strategies_that_apply():
    from tunelab.strategies import ConfigError, resolve, task_named

    with pytest.raises(ConfigError, match="partial-unfreeze"):
        resolve("lora", task_named("image-classification"))


def test_the_split_uses_the_archives_test_folder(tiny):
    s = tiny.splits
    assert s.test_origin == "user" and len(s.test) == 50
    assert len(s.train) + len(s.validation) == 100
    assert s.label_names == sorted(p.name for p in (CIFAR / "train").iterdir())


FITS = [("linear-probe", []), ("few-shot", ["k=5"]),
        ("full", ["epochs=1", "min_steps=3", "batch_size=16"]),
        ("partial-unfreeze", ["epochs=1", "min_steps=3", "batch_size=16"])]


@pytest.mark.parametrize("strategy, params", FITS, ids=[f[0] for f in FITS])
def test_each_strategy_writes_a_model_that_loads_back_and_predicts_the_same(strategy, params, tiny, resnet,
                                                                             tmp_path):
    from tunelab.artifacts import load_artifact
    from tunelab.engine import run_strategy

    result = run_strategy(resnet, tiny, strategy, params, out=tmp_path / "model")
    m = result.metrics
    assert m["task"] == "image-classification" and m["test_rows"] == 50
    assert 0.0 <= m["macro_f1"] <= 1.0 and m["macro_f1_interval"] is not None
    assert m["latency_ms_per_example"] > 0 and m["trainable_params"] > 0
    loaded = load_artifact(tmp_path / "model")
    images = [tiny.splits.test.open(i) for i in range(10)]
    again = loaded.predict_proba(images)
    assert loaded.label_names == tiny.splits.label_names
    assert np.allclose(again.sum(1), 1.0, atol=1e-5)
    # the folder's model is the evaluated one: its probabilities are the run's on the same images
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["task"] == "image-classification" and config["data"]["inputs"] == "image"
    first = load_artifact(tmp_path / "model").predict_proba(images)
    assert np.allclose(first, again, atol=1e-6)


def test_a_model_trained_at_another_size_predicts_at_that_size_after_reloading(tiny, tmp_path):
    """EfficientNet-Lite0 takes 224 px; a run at 64 px must be served at 64 px, reloaded or not."""
    from tunelab.artifacts import load_artifact
    from tunelab.engine import plan_strategy
    from tunelab.models import resolve_model

    planned = plan_strategy(resolve_model("efficientnet-lite0"), tiny, "partial-unfreeze",
                            ["epochs=1", "min_steps=1", "batch_size=16", "image_size=64", "unfreeze_blocks=1"])
    predictor = planned.strategy.fit(planned.ctx)
    assert predictor.backbone.preprocess.size == 64
    images = [tiny.splits.test.open(i) for i in range(12)]
    before = predictor.predict_proba(images)
    from tunelab.artifacts import write_artifact

    write_artifact(tmp_path / "m", predictor, config={"strategy": "partial-unfreeze"}, metrics={}, data_report={})
    loaded = load_artifact(tmp_path / "m")
    assert loaded.backbone.preprocess.size == 64
    assert np.allclose(loaded.predict_proba(images), before, atol=1e-5)


def test_the_model_card_speaks_of_images(tiny, resnet, tmp_path):
    from tunelab.engine import run_strategy

    run_strategy(resnet, tiny, "few-shot", out=tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "test images" in card and "tokens" not in card


def test_resnet20_probe_on_cifar10_mini_is_strong_and_its_features_are_cached(mini_zip, resnet, tmp_path):
    """ResNet-20 was trained on CIFAR-10: its frozen features separate these classes (~0.8)."""
    from tunelab.engine import DataSpec, prepare_data, run_strategy

    data = prepare_data(DataSpec(mini_zip), resnet)
    first = run_strategy(resnet, data, "linear-probe")
    assert first.metrics["macro_f1"] >= 0.7, first.metrics["macro_f1"]
    again = run_strategy(resnet, data, "linear-probe")
    assert again.notes["feature_cache"]["misses"] == 0 and again.notes["feature_cache"]["hits"] >= 2
    assert abs(again.metrics["macro_f1"] - first.metrics["macro_f1"]) < 1e-9


def test_few_shot_takes_k_images_a_class(tiny, resnet):
    from tunelab.engine import run_strategy

    result = run_strategy(resnet, tiny, "few-shot", ["k=3"])
    assert result.notes["examples_used"] == 30
    assert result.metrics["macro_f1"] > 0.3        # CIFAR features: far above chance (0.1) from 3 a class


def test_preflight_refuses_an_absurd_run_with_the_ways_that_fit(tiny, resnet, monkeypatch):
    from tunelab.engine import plan_strategy
    from tunelab.engine.planning import DoesNotFit
    from tunelab.training.preflight import current_rss_mb

    # The budget counts what this process already holds (a long-lived test worker holds GBs): 3 GB more.
    limit = int(current_rss_mb()) + 3000
    monkeypatch.setenv("TUNELAB_MEMORY_LIMIT_MB", str(limit))
    with pytest.raises(DoesNotFit) as caught:
        plan_strategy(resnet, tiny, "full", ["image_size=512", "batch_size=256"])
    message, options = str(caught.value), caught.value.options
    assert "Ways that fit" in message and options
    assert all(o.peak_mb <= limit * 0.9 for o in options)
    assert any("partial-unfreeze" == o.strategy or "image_size" in o.params or "batch_size" in o.params
               for o in options)
    planned = plan_strategy(resnet, tiny, "full", ["image_size=512", "batch_size=256"], auto_fit=True)
    assert planned.plan.applied and planned.plan.estimate.peak_mb <= limit * 0.9


def test_preflight_predicts_time_and_memory(tiny, resnet):
    from tunelab.engine import plan_strategy

    for name in ("linear-probe", "full"):
        est = plan_strategy(resnet, tiny, name, ["epochs=1"] if name == "full" else []).plan.estimate
        assert est.peak_mb > 0 and est.seconds > 0 and est.breakdown_mb


def test_cli_inspect_train_and_predict_an_image_zip(tiny_zip, tmp_path):
    inspect = run_cli("datasets", "inspect", tiny_zip, "--json")
    assert inspect.returncode == 0, inspect.stderr
    report = json.loads(inspect.stdout)
    assert report["kind"] == "images" and report["images"]
    text = run_cli("datasets", "inspect", tiny_zip)
    assert text.returncode == 0 and "images" in text.stdout

    train = run_cli("train", tiny_zip, "--model", RESNET, "--strategy", "linear-probe", "--out", tmp_path / "m",
                    "--json")
    assert train.returncode == 0, train.stderr
    metrics = json.loads(train.stdout)
    assert metrics["strategy"] == "image-linear-probe" and metrics["test_rows"] == 50
    assert (tmp_path / "m" / "manifest.json").is_file()

    image = tmp_path / "cat.jpg"
    image.write_bytes(sorted((CIFAR / "test" / "cat").iterdir())[0].read_bytes())
    predicted = run_cli("predict", tmp_path / "m", image, "--json")
    assert predicted.returncode == 0, predicted.stderr
    (row,) = json.loads(predicted.stdout)
    assert row["label"] in metrics_labels(tmp_path / "m") and abs(sum(row["probabilities"].values()) - 1) < 1e-4


def metrics_labels(model_dir) -> list[str]:
    return json.loads((model_dir / "manifest.json").read_text())["labels"]
