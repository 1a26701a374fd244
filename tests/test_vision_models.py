"""Image models: the converted pretrained weights (ResNet-20 on CIFAR-10, EfficientNet-Lite0 on
ImageNet) judged on real images, Pillow preprocessing, bring-your-own HF image folders and what is
refused, and the image artifact kinds' save/load round trips."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tunelab.models.catalog import ModelNotFound, UnsafeModel, resolve_model, spec_from_folder
from tunelab.models.embeddings import FeatureCache
from tunelab.models.image_preprocess import ImagePreprocess, preprocess_from_hf, to_tensor
from tunelab.models.image_predictors import ImageClassifierPredictor, ImageHeadPredictor
from tunelab.models.vision import encode_images, image_model_key, load_image_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets"
CIFAR = SHARED / "vision" / "cifar10-mini"
RESNET_FILE = "resnet20-cifar10/resnet20-12fca82f.th"


@dataclass(frozen=True)
class _Example:
    path: str
    label: str
    sha256: str


class Folder:
    """The duck type encode_images takes (data.images.ImageDataset's .examples/.open), built here
    so that these model tests do not depend on the archive reader."""

    def __init__(self, root: Path, per_class: int | None = None):
        self.root = root
        self.examples = []
        for label in sorted(p.name for p in root.iterdir()):
            for f in sorted((root / label).glob("*.jpg"))[:per_class]:
                self.examples.append(_Example(f"{label}/{f.name}", label,
                                              hashlib.sha256(f.read_bytes()).hexdigest()))

    def __len__(self):
        return len(self.examples)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]

    def open(self, i: int) -> Image.Image:
        with Image.open(self.root / self.examples[i].path) as im:
            return im.convert("RGB")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("cifar10-mini")
    shutil.copytree(CIFAR, dest, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="module", autouse=True)
def shared_models(tmp_path_factory):
    """A copy of the ResNet-20 pickle in a private shared-models folder (TUNELAB_SHARED_MODELS)."""
    dest = tmp_path_factory.mktemp("shared-models")
    (dest / RESNET_FILE).parent.mkdir(parents=True)
    shutil.copy(SHARED / "models" / RESNET_FILE, dest / RESNET_FILE)
    before = os.environ.get("TUNELAB_SHARED_MODELS")
    os.environ["TUNELAB_SHARED_MODELS"] = str(dest)
    yield dest
    if before is None:
        os.environ.pop("TUNELAB_SHARED_MODELS", None)
    else:
        os.environ["TUNELAB_SHARED_MODELS"] = before


@pytest.fixture(scope="module")
def resnet():
    return load_image_model(resolve_model("resnet20-cifar10"))


# ---- quality of the converted pretrained weights, on real images --------------------------------

def test_resnet20_pretrained_head_on_cifar_jpegs(cifar, resnet):
    """Architecture + converted weights + preprocessing together: the CIFAR-10 head scores like
    the shared README's ~80% on these 500 JPEG test images."""
    test = Folder(cifar / "test")
    assert len(test) == 500 and resnet.pretrained_labels == sorted(set(test.labels))
    clf = ImageClassifierPredictor(resnet, resnet.pretrained_labels, "resnet20-cifar10")
    proba = clf.predict_proba(test)
    accuracy = np.mean(np.asarray(clf.label_names)[proba.argmax(1)] == np.asarray(test.labels))
    assert accuracy >= 0.75, accuracy


@pytest.fixture
def one_thread():
    """`make test` runs two pytest workers on two cores: a second torch thread each only adds
    hand-offs (EfficientNet-Lite0 encoding on this loaded machine: 44 images/s on one thread,
    18 on two, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_efficientnet_lite0_features_make_a_probe(cifar, tmp_path, one_thread):
    """ImageNet features of 20 CIFAR images a class + a logistic regression: far above chance
    (0.10) on 10 test images a class (measured 0.6 on 20 a class); the second encoding is a cache
    hit. 300 images at 224 px: the slowest test here (~15-40 images/s on a shared 2-core machine)."""
    from sklearn.linear_model import LogisticRegression

    spec = resolve_model("efficientnet-lite0")
    assert (spec.task, spec.kind) == ("image-classification", "image-encoder")
    model = load_image_model(spec)
    train, test = Folder(cifar / "train", 20), Folder(cifar / "test", 10)
    cache, seen = FeatureCache(tmp_path), []
    key = image_model_key(spec.path)
    x_train = encode_images(model, train, cache=cache, model_key=key, progress=lambda d, t: seen.append((d, t)))
    x_test = encode_images(model, test, cache=cache, model_key=key)
    assert x_train.shape == (200, 1280) and x_train.dtype == np.float32 and seen[-1] == (200, 200)
    probe = LogisticRegression(C=0.1, max_iter=2000).fit(x_train, train.labels)
    assert probe.score(x_test, test.labels) > 0.45
    again = encode_images(model, train, cache=cache, model_key=key)
    assert cache.hits == 1 and np.array_equal(again, x_train)


# ---- the one-time conversion -------------------------------------------------------------------

def test_pickle_is_converted_once_then_loaded_as_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path))
    first = load_image_model(resolve_model("resnet20-cifar10"))
    folder = tmp_path / "models" / "resnet20-cifar10"
    config = json.loads((folder / "config.json").read_text())
    assert (folder / "model.safetensors").is_file() and "auto_map" not in config
    assert not [p for p in folder.iterdir() if p.suffix in {".th", ".pth", ".bin", ".pt"}]

    def no_unpickling(*a, **k):
        raise AssertionError("torch.load called after the conversion")
    monkeypatch.setattr(torch, "load", no_unpickling)
    second = load_image_model(resolve_model("resnet20-cifar10"))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(first(x), second(x))
    assert spec_from_folder(folder).kind == "image-encoder"      # the folder passes as bring-your-own too


def test_missing_shared_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TUNELAB_SHARED_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound, match="TUNELAB_SHARED_MODELS"):
        resolve_model("resnet20-cifar10")


# ---- preprocessing -----------------------------------------------------------------------------

PRE = ImagePreprocess(224, 0.875, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _photo(w=64, h=48, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
def test_to_tensor_shape_and_normalisation(mode):
    x = to_tensor([_photo(mode=mode), Image.new("L", (50, 90), 127)], PRE)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert abs(float(x[1].mean())) < 0.01          # mid-grey is ~0 after (x - 0.5) / 0.5
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_training_augmentation_is_reproducible_from_the_seed():
    images = [_photo(80, 60), _photo(40, 70)]
    a = to_tensor(images, PRE, train=True, rng=np.random.default_rng(7))
    b = to_tensor(images, PRE, train=True, rng=np.random.default_rng(7))
    c = to_tensor(images, PRE, train=True, rng=np.random.default_rng(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, to_tensor(images, PRE))
    with pytest.raises(ValueError, match="Generator"):
        to_tensor(images, PRE, train=True)


@pytest.mark.parametrize("config, expected", [
    ({"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
     ImagePreprocess(32, 1.0, (0.5,) * 3, (0.5,) * 3)),
    ({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "image_mean": [0.485, 0.456, 0.406],
      "image_std": [0.229, 0.224, 0.225]},
     ImagePreprocess(224, 0.875, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
    ({"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3,
      "image_std": [0.5] * 3}, ImagePreprocess(224, 224 / 256, (0.5,) * 3, (0.5,) * 3)),
])
def test_preprocessing_from_a_hf_processor_config(tmp_path, config, expected):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    assert preprocess_from_hf(tmp_path) == expected


# ---- bring-your-own Hugging Face image folders ---------------------------------------------------

def _tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=3))


def _tiny_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                     num_labels=3))


def _hf_folder(path: Path, build) -> Path:
    torch.manual_seed(0)
    model = build().eval()
    model.config.id2label = {0: "ok", 1: "scratch", 2: "dent"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return path


@pytest.mark.parametrize("build, dim", [(_tiny_vit, 32), (_tiny_resnet, 16)], ids=["vit", "resnet"])
def test_hf_image_classifier_folder_loads_as_bring_your_own(tmp_path, build, dim):
    folder = _hf_folder(tmp_path / "byo", build)
    spec = spec_from_folder(folder)
    assert (spec.task, spec.kind, spec.max_length) == ("image-classification", "image-encoder", 224 if dim == 16 else 32)
    backbone = load_image_model(resolve_model(str(folder)))
    assert backbone.feature_dim == dim and backbone.pretrained_labels == ["ok", "scratch", "dent"]
    from transformers import AutoModelForImageClassification
    reference = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    x = to_tensor([_photo(), _photo(30, 30)], backbone.preprocess)
    with torch.inference_mode():
        assert torch.allclose(backbone(x), reference(pixel_values=x).logits, atol=1e-5)
        assert backbone.features(x).shape == (2, dim)
    backbone.reset_head(5)
    assert backbone(x).shape == (2, 5) and backbone.pretrained_labels is None


@pytest.mark.parametrize("spoil, message", [
    (lambda f: _edit_config(f, auto_map={"AutoModelForImageClassification": "evil.Model"}), "custom code"),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "no .safetensors"),
], ids=["remote-code", "pickle-only"])
def test_unsafe_hf_image_folders_are_refused(tmp_path, spoil, message):
    folder = _hf_folder(tmp_path / "byo", _tiny_vit)
    spoil(folder)
    with pytest.raises(UnsafeModel, match=message):
        resolve_model(str(folder))
    with pytest.raises(UnsafeModel, match=message):
        load_image_model(folder)


def _edit_config(folder: Path, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


# ---- backbones' stages and the artifact kinds ----------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20-cifar10", "efficientnet-lite0"])
def test_blocks_and_head_cover_every_parameter(name):
    backbone = load_image_model(resolve_model(name))
    in_blocks = {id(p) for b in backbone.blocks() for p in b.parameters()}
    head = {id(p) for p in backbone.head.parameters()}
    assert in_blocks | head == {id(p) for p in backbone.parameters()} and not in_blocks & head
    assert len(backbone.blocks()) == {"resnet20-cifar10": 4, "efficientnet-lite0": 9}[name]


def _round_trip(tmp_path, predictor, images):
    from tunelab.artifacts.store import load_artifact, write_artifact

    out = write_artifact(tmp_path / "model", predictor, config={"strategy": "test"}, metrics={},
                         data_report={}, card="test")
    loaded = load_artifact(out)
    assert type(loaded) is type(predictor) and loaded.label_names == predictor.label_names
    np.testing.assert_array_equal(loaded.predict_proba(images), predictor.predict_proba(images))
    return loaded


def test_prototype_head_round_trips(tmp_path, cifar, resnet):
    train = Folder(cifar / "train", 5)
    features = encode_images(resnet, train)
    labels = sorted(set(train.labels))
    means = np.stack([features[np.asarray(train.labels) == c].mean(0) for c in labels])
    predictor = ImageHeadPredictor.from_class_means(resnet, means, labels, "resnet20-cifar10")
    images = [train.open(i) for i in range(0, 50, 7)]
    nearest = ((encode_images(resnet, images)[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(predictor.predict_proba(images).argmax(1), nearest)
    _round_trip(tmp_path, predictor, images)


@pytest.mark.parametrize("base", ["resnet20-cifar10", "hf-folder"])
def test_fine_tuned_network_round_trips(tmp_path, base):
    ref = base if base != "hf-folder" else str(_hf_folder(tmp_path / "byo", _tiny_vit))
    backbone = load_image_model(resolve_model(ref))
    backbone.reset_head(2)
    images = [_photo(32, 32), _photo(40, 36, "L"), Image.new("RGB", (32, 32), (200, 10, 10))]
    backbone.train()
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1)
    x = to_tensor(images, backbone.preprocess, train=True, rng=np.random.default_rng(0))
    torch.nn.functional.cross_entropy(backbone(x), torch.tensor([0, 1, 0])).backward()
    optimizer.step()                        # the body changes too: the artifact must carry it
    predictor = ImageClassifierPredictor(backbone, ["good", "bad"], resolve_model(ref).ref)
    loaded = _round_trip(tmp_path, predictor, images)
    assert loaded.predict_proba(images).shape == (3, 2)
