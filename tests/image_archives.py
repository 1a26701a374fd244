"""Image archives for the service and browser tests: a small copy of the shared cifar10-mini,
zipped (real JPEGs), and the issue's acceptance archive of hostile members."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "vision" / "cifar10-mini"


def cifar_zip(dest: Path, per_class: int = 10, test_per_class: int = 0, classes: list[str] | None = None) -> Path:
    """The first `per_class` training images of each class (and `test_per_class` test images, in
    the archive's test/ folder) as train/<class>/<file>.jpg in a zip at `dest`."""
    classes = classes or sorted(p.name for p in (CIFAR / "train").iterdir() if p.is_dir())
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, n in (("train", per_class), ("test", test_per_class)):
            for c in classes:
                for f in sorted((CIFAR / split / c).iterdir())[:n]:
                    zf.writestr(f"{split}/{c}/{f.name}", f.read_bytes())
    return dest


def cifar_image(cls: str = "cat", index: int = 0, split: str = "test") -> bytes:
    return sorted((CIFAR / split / cls).iterdir())[index].read_bytes()


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit greyscale PNG of width x height, all black: ~50 KB that claims 400 M pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + b"\0" * ((width + 7) // 8)
    raw = zlib.compressobj(9)
    body = b"".join(raw.compress(row * 1000) for _ in range(height // 1000)) + raw.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _image(mode: str, fmt: str, size=(32, 32), colour=None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format=fmt)
    return buf.getvalue()


def hostile_zip(dest: Path) -> tuple[Path, dict[str, str]]:
    """The acceptance archive: good images in two classes plus a corrupt PNG, a zero-byte file, a
    `../` member, a 20000x20000 PNG bomb, a CMYK JPEG and a 16-bit greyscale PNG. Returns the path
    and {member: what it is} for the members a report must name."""
    good = [cifar_image("cat", i, "train") for i in range(3)] + [cifar_image("dog", i, "train") for i in range(3)]
    corrupt = _image("RGB", "PNG", colour=(200, 10, 10))
    corrupt = corrupt[:len(corrupt) // 2]
    bad = {"train/cat/corrupt.png": "corrupt", "train/dog/empty.png": "zero-byte",
           "../escape.png": "traversal", "train/cat/bomb.png": "bomb",
           "train/dog/cmyk.jpg": "cmyk", "train/cat/grey16.png": "16-bit"}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, data in enumerate(good):
            zf.writestr(f"train/{'cat' if i < 3 else 'dog'}/good{i}.jpg", data)
        zf.writestr("train/cat/corrupt.png", corrupt)
        zf.writestr("train/dog/empty.png", b"")
        zf.writestr("../escape.png", good[0])
        zf.writestr("train/cat/bomb.png", png_bomb())
        zf.writestr("train/dog/cmyk.jpg", _image("CMYK", "JPEG", colour=(0, 50, 100, 0)))
        zf.writestr("train/cat/grey16.png", _image("I;16", "PNG"))
    return dest, bad
