"""Model files a user sends: safetensors only, with the header checked before any library parses
it; pickles (torch .pt/.bin, .pkl, .ckpt) recognised by extension and by content and refused —
never unpickled — and folders that would run their own Python refused."""

from __future__ import annotations

import json
import math
import pickletools
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
    """A torch zip, or bytes that an unpickler would run: parsed with pickletools.genops, which
    reads opcodes and never executes them. Every protocol, 0 and 1 (text-like, no header) too."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4).startswith(b"PK\x03\x04"):      # torch's zip format holds a pickle
            return True
        f.seek(0)
        return _runs_as_pickle(_CappedReader(f, size))


# An unpickler runs code only through an object it imported: GLOBAL and INST name a module and
# an attribute on their line, STACK_GLOBAL takes both from the stack. (REDUCE, BUILD, OBJ, NEWOBJ
# call what an import put there; EXT* import only what the loading process registered, none by
# default; PERSID hands an id to the loader's own persistent_load.)
_IMPORTS_BY_NAME = {"GLOBAL", "INST"}
SNIFF_MAX_OPCODES = 100_000       # this many valid opcodes in a row: a pickle, whatever follows
SNIFF_MAX_ARG = 1 << 20           # an opcode argument larger than this is skipped, never read


class _SkippedArgument(Exception):
    pass


class _CappedReader:
    """The file as genops reads it, never more than SNIFF_MAX_ARG bytes at once: a longer
    argument (an attacker may put a long harmless string before the code) is skipped, and the
    scan goes on after it; one longer than the rest of the file reads as truncated, where an
    unpickler fails too, before running anything after it."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def read(self, n: int = -1) -> bytes:
        if 0 <= n <= SNIFF_MAX_ARG:
            return self.f.read(n)
        if n < 0 or n > self.size - self.f.tell():
            return b""
        self.f.seek(n, 1)
        raise _SkippedArgument

    def readline(self) -> bytes:
        line = self.f.readline(SNIFF_MAX_ARG + 1)
        if len(line) <= SNIFF_MAX_ARG or line.endswith(b"\n"):
            return line
        while line and not line.endswith(b"\n"):     # skip the rest of an over-long line
            line = self.f.readline(SNIFF_MAX_ARG)
        raise _SkippedArgument

    def tell(self) -> int:
        return self.f.tell()


def _runs_as_pickle(reader: _CappedReader) -> bool:
    """True if the stream, read as pickle opcodes from its first byte, reaches an import, a
    protocol 2+ header, a STOP after real content, or SNIFF_MAX_OPCODES opcodes, before an
    invalid byte (where an unpickler stops without running anything more)."""
    count = 0
    while True:                                 # once more after each skipped argument
        try:
            for opcode, arg, _pos in pickletools.genops(reader):
                count += 1
                if count >= SNIFF_MAX_OPCODES or (opcode.name == "STACK_GLOBAL" and count > 2):
                    return True                 # (it pops a module and a name something pushed)
                if opcode.name in _IMPORTS_BY_NAME and _importable(arg):
                    return True
                if opcode.name == "PROTO" and count == 1 and isinstance(arg, int) and 2 <= arg <= 5:
                    return True
                if opcode.name == "STOP":       # "N." (None) or "I1\n." hold nothing to run
                    return count > 2
            return False
        except _SkippedArgument:
            count += 1
        except (ValueError, OverflowError, struct.error):   # not a pickle opcode, or cut short
            return False


def _importable(arg) -> bool:
    """GLOBAL's "module name" argument as an unpickler would import it: dotted identifiers (a
    text file that starts with a "c" reads as GLOBAL too, but its words never import)."""
    return isinstance(arg, str) and all(part.isidentifier() for word in arg.split(" ", 1)
                                        for part in word.split("."))


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
