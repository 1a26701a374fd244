"""Model files a user sends: safetensors only, with the header checked before any library parses
it; pickles (torch .pt/.bin, .pkl, .ckpt) recognised by extension and by content and refused —
never unpickled — and folders that would run their own Python refused."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
CODE_SUFFIXES = {".py", ".pyc", ".so", ".sh"}
MAX_HEADER = 100 * 1024 * 1024


class UnsafeWeights(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    # protocol 2+ pickles start with PROTO; torch's zip format starts with a zip header.
    return (len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)) or head.startswith(b"PK\x03\x04")


def validate_safetensors(path: Path) -> int:
    """Number of tensors; UnsafeWeights if the header is not a well-formed, consistent one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise UnsafeWeights("bad_safetensors", f"{path.name}: too short to be safetensors")
        (n,) = struct.unpack("<Q", raw)
        if n == 0 or n > min(MAX_HEADER, size - 8):
            raise UnsafeWeights("bad_safetensors", f"{path.name}: header length {n} does not fit the file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise UnsafeWeights("bad_safetensors", f"{path.name}: header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise UnsafeWeights("bad_safetensors", f"{path.name}: header is not a JSON object")
    data_len, spans = size - 8 - n, []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise UnsafeWeights("bad_safetensors", f"{path.name}: __metadata__ must map strings to strings")
            continue
        _check_tensor(path.name, name, info, data_len)
        spans.append(tuple(info["data_offsets"]))
    spans.sort()
    cursor = 0
    for start, end in spans:          # contiguous, no overlap, no hidden bytes between tensors
        if start != cursor:
            raise UnsafeWeights("bad_safetensors", f"{path.name}: tensor data overlaps or leaves gaps")
        cursor = end
    if cursor != data_len:
        raise UnsafeWeights("bad_safetensors", f"{path.name}: {data_len - cursor} bytes after the last tensor")
    return len(spans)


def _check_tensor(file: str, name: str, info, data_len: int) -> None:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise UnsafeWeights("bad_safetensors", f"{file}: tensor {name!r} needs exactly dtype, shape, data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise UnsafeWeights("bad_safetensors", f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > 16 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape):
        raise UnsafeWeights("bad_safetensors", f"{file}: tensor {name!r} has a bad shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise UnsafeWeights("bad_safetensors", f"{file}: tensor {name!r} has bad data_offsets")
    start, end = offsets
    if not 0 <= start <= end <= data_len or end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise UnsafeWeights("bad_safetensors", f"{file}: tensor {name!r} does not match its bytes")


def check_uploaded_model(folder: Path) -> dict:
    """A model folder that came from a user: what loading it would need, refused unless safe."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    for p in files:
        if p.suffix.lower() in CODE_SUFFIXES:
            raise UnsafeWeights("remote_code", f"{p.relative_to(folder)}: model folders may not contain code; "
                                "tunelab never runs a model's own Python (trust_remote_code is off)")
        if p.suffix.lower() in PICKLE_SUFFIXES or (p.suffix.lower() != ".safetensors" and p.stat().st_size > 8
                                                   and looks_like_pickle(p)):
            raise UnsafeWeights("pickle", f"{p.relative_to(folder)}: pickled weights are refused (they can run "
                                "code when loaded); convert them to safetensors")
    config = folder / "config.json"
    if not config.is_file():
        raise UnsafeWeights("not_a_model", "no config.json at the top of the archive: not a Hugging Face model folder")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnsafeWeights("not_a_model", "config.json is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise UnsafeWeights("not_a_model", "config.json is not a JSON object")
    if cfg.get("auto_map"):
        raise UnsafeWeights("remote_code", "config.json asks for custom code (auto_map); trust_remote_code stays off")
    weights = [p for p in files if p.suffix == ".safetensors"]
    if not weights:
        raise UnsafeWeights("no_weights", "no .safetensors weights in the folder")
    tensors = sum(validate_safetensors(p) for p in weights)
    return {"model_type": cfg.get("model_type"), "architectures": cfg.get("architectures"), "tensors": tensors,
            "bytes": sum(p.stat().st_size for p in files)}
