"""The issue's acceptance comparison: `tunelab compare` on the shared cifar10-mini (100 training and
50 test images a class, real JPEGs) with linear-probe, few-shot and full, on ResNet-20 (trained on
CIFAR-10: its features make a strong probe) and on EfficientNet-Lite0 (ImageNet features), through
the real CLI. ResNet-20 at 32 px takes well under a minute on 2 cores; EfficientNet-Lite0 (probe at
224 px, fine-tuning at 128 px) a few minutes, so it is slow-marked."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from image_archives import CIFAR, cifar_zip


STRATEGIES = {"image-linear-probe", "image-few-shot", "image-full"}


@pytest.fixture(scope="module")
def mini_zip(tmp_path_factory):
    return cifar_zip(tmp_path_factory.mktemp("img") / "cifar10-mini.zip", per_class=100, test_per_class=50)


def _compare(archive, model: str) -> dict:
    done = run_cli("compare", archive, "--model", model, "--strategies", "linear-probe,few-shot,full", "--json",
                   timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _check(result: dict) -> dict:
    rows = {r["strategy"]: r for r in result["results"]}
    assert set(rows) == STRATEGIES and not any("error" in r for r in rows.values())
    assert result["task"] == "image-classification" and result["recommended"] in STRATEGIES
    for r in rows.values():
        assert r["test_rows"] == 500
        lo, hi = r["macro_f1_interval"]
        assert lo <= r["macro_f1"] <= hi and r["train_seconds"] > 0 and r["latency_ms"] > 0
    return rows


def test_compare_resnet20_on_cifar10_mini(mini_zip):
    rows = _check(_compare(mini_zip, "resnet20-cifar10"))
    # CIFAR-10 features on CIFAR-10 images: the shared README measured ~80%
    assert rows["image-linear-probe"]["macro_f1"] >= 0.75
    assert rows["image-few-shot"]["macro_f1"] >= 0.6          # 8 images a class
    assert rows["image-full"]["macro_f1"] >= 0.7


@pytest.mark.slow
def test_compare_efficientnet_lite0_on_cifar10_mini(mini_zip):
    rows = _check(_compare(mini_zip, "efficientnet-lite0"))
    # ImageNet features on upscaled 32 px images: well above chance (0.1), below CIFAR's own ResNet
    assert rows["image-linear-probe"]["macro_f1"] >= 0.5
    assert rows["image-full"]["macro_f1"] >= 0.5
