"""Decoding one image safely, and the checks of a whole image dataset.

One image: the header is read first (Image.open reads nothing else) and its pixel count checked
against the limit *before* a pixel is decoded, so a 20000x20000 PNG of a few KB is refused
without allocating 400 MB; Pillow's own decompression-bomb warning is an error here; the image
must then load completely (a truncated file fails: LOAD_TRUNCATED_IMAGES is never set); one frame
only. Every colour mode ends as 8-bit RGB (16-bit scaled, not clipped; transparency composited
on white) with the EXIF orientation applied.

A dataset: labels with one image, a single class, duplicates and train/test leakage by content
hash — each issue naming the members' paths, like the text report names lines.
"""

from __future__ import annotations

import io
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import Issue
from .validation import MAX_LINES_KEPT

# What Pillow may open: the everyday formats. Others (EPS runs Ghostscript, PSD, ICO...) are refused.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# A JPEG with a longer side over this is checked at reduced scale (decode(check_only=True)).
DRAFT_ABOVE = 1024
# Paths a message lists before "and N more".
MAX_PATHS_SHOWN = 10

MODE_NAMES = {
    "CMYK": "CMYK print colours", "I;16": "16-bit greyscale", "I;16B": "16-bit greyscale",
    "I;16L": "16-bit greyscale", "I": "32-bit greyscale", "F": "floating-point greyscale",
    "P": "palette", "PA": "palette with transparency", "LA": "greyscale with transparency",
    "L": "greyscale", "1": "black and white (1-bit)", "RGBA": "RGB with transparency",
}


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000            # width x height, read from the header before decoding
    max_images: int = 100_000               # images (and members) in one source
    max_bytes: int = 4 * 1024**3            # expanded size of a source
    max_image_bytes: int = 200 * 1024**2    # one file


@dataclass(frozen=True)
class ImageInfo:
    width: int          # as shown (EXIF orientation applied)
    height: int
    mode: str           # as stored ("CMYK", "I;16", "RGB"...)
    format: str         # "PNG", "JPEG"...


class ImageProblem(ValueError):
    """Why an image cannot be used: an issue code, a reason key (issues group on it) and detail."""

    def __init__(self, code: str, reason: str, detail: str = ""):
        super().__init__(f"{code}: {reason} {detail}".strip())
        self.code, self.reason, self.detail = code, reason, detail


# reason -> (what the images are, what the one image is, the fix); messages list the members.
REASONS = {
    "zero_byte": ("are empty files (zero bytes)", "is an empty file (zero bytes)",
                  "Remove the file(s), or replace them with the real image."),
    "corrupt": ("are damaged or cut short and cannot be decoded", "is damaged or cut short and cannot be decoded",
                "Re-save it as PNG or JPEG from the original, or remove the file(s)."),
    "unsupported": ("are not in a format tunelab reads (PNG, JPEG, BMP, GIF, WebP, TIFF)",
                    "is not in a format tunelab reads (PNG, JPEG, BMP, GIF, WebP, TIFF)",
                    "Re-save it as PNG (or JPEG), or remove the file(s)."),
    "unconvertible": ("use a colour mode that cannot be converted to RGB",
                      "uses a colour mode that cannot be converted to RGB",
                      "Re-save it as 8-bit RGB PNG or JPEG, or remove the file(s)."),
    "pixels": ("have more pixels than the limit (the mark of a decompression bomb)",
               "has more pixels than the limit (the mark of a decompression bomb)",
               "Resize it (2,000 px on the longer side is plenty) and re-save as PNG or JPEG, or remove the file(s)."),
    "file_bytes": ("are larger files than the limit for one image", "is a larger file than the limit for one image",
                   "Resize or re-compress it (JPEG), or remove the file(s)."),
    "frames": ("are animated or hold several frames/pages", "is animated or holds several frames/pages",
               "Save the one frame you mean as a PNG, or remove the file(s)."),
}


def _open(data: bytes, limits: ImageLimits) -> tuple[Image.Image, ImageInfo]:
    """Header only, checked: (unloaded image, info). ImageProblem when it cannot be used."""
    if not data:
        raise ImageProblem("bad_image", "zero_byte")
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = im.size
    except Image.UnidentifiedImageError:
        raise ImageProblem("bad_image", "unsupported") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem("image_too_large", "pixels", _pixels(exc)) from None
    except Exception:                       # noqa: BLE001 - any parser failure is a damaged file
        raise ImageProblem("bad_image", "corrupt") from None
    if width * height > limits.max_pixels:
        raise ImageProblem("image_too_large", "pixels", f"{width:,}x{height:,}")
    if width <= 0 or height <= 0:
        raise ImageProblem("bad_image", "corrupt")
    try:
        # A camera's MPO JPEG carries a preview as a second "frame": the first is the photo.
        frames = 1 if im.format == "MPO" else getattr(im, "n_frames", 1)
        orientation = im.getexif().get(0x0112, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageProblem("image_too_large", "pixels") from None
    except Exception:                       # noqa: BLE001
        raise ImageProblem("bad_image", "corrupt") from None
    if frames > 1:
        raise ImageProblem("animated_image", "frames", f"{frames} frames")
    if orientation in (5, 6, 7, 8):         # rotated a quarter turn: shown with the sides swapped
        width, height = height, width
    return im, ImageInfo(width, height, im.mode, im.format or "")


def _pixels(exc: Exception) -> str:
    """ "400,000,000 pixels" from Pillow's bomb message (it raises before telling the size)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else ""


def _load(im: Image.Image) -> None:
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageProblem("image_too_large", "pixels") from None
    except Exception:                       # noqa: BLE001 - truncated, bad CRC, bad Huffman table...
        raise ImageProblem("bad_image", "corrupt") from None


def decode(data: bytes, limits: ImageLimits | None = None, *, check_only: bool = False
           ) -> tuple[Image.Image, ImageInfo]:
    """(RGB image, EXIF orientation applied, info as stored). ImageProblem on anything else.
    check_only: a large JPEG is decoded at 1/8 scale (libjpeg still reads every byte, so damage
    and truncation are found) — the check of a folder of photos, several times faster."""
    limits = limits or ImageLimits()
    if len(data) > limits.max_image_bytes:
        raise ImageProblem("image_too_large", "file_bytes", f"{len(data) / 1e6:,.0f} MB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # Pillow's notes on odd EXIF or palettes are not problems...
        warnings.simplefilter("error", Image.DecompressionBombWarning)      # ...a bomb is
        im, info = _open(data, limits)
        if check_only and im.format == "JPEG" and max(im.size) > DRAFT_ABOVE:
            im.draft(None, (-(-im.size[0] // 8), -(-im.size[1] // 8)))
        _load(im)
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:                   # noqa: BLE001 - a malformed EXIF block: shown as stored
            pass
        return to_rgb(im), info


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit and wider greyscale scaled to 0..255 (Pillow's convert would clip it),
    transparency composited on white (plain conversion shows it as black)."""
    mode = im.mode
    try:
        if mode == "RGB":
            return im
        if mode.startswith("I") or mode == "F":
            a = np.asarray(im, dtype=np.float64)
            top = float(a.max()) if a.size else 0.0
            if mode.startswith("I;16") or (mode == "I" and top > 255):
                a = a * (255.0 / max(65535.0, top))
            elif mode == "F" and top <= 1.0:
                a = a * 255.0
            return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
        if mode in ("P", "PA") and (mode == "PA" or "transparency" in im.info):
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "RGBa", "La"):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", im.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        return im.convert("RGB")
    except (ValueError, OSError):
        raise ImageProblem("bad_image", "unconvertible", mode) from None


def check_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Decode once (and convert, so nothing fails later); keep only the info."""
    return decode(data, limits, check_only=True)[1]


# ---- issues ------------------------------------------------------------------------------------
def _shown(paths: list[str]) -> str:
    rest = len(paths) - MAX_PATHS_SHOWN
    return ", ".join(paths[:MAX_PATHS_SHOWN]) + (f" and {rest} more" if rest > 0 else "")


def issue(severity: str, code: str, message: str, fix: str, lines: list[int], paths: list[str], *,
          file: str | None, count: int | None = None) -> Issue:
    """An issue naming its members: the path (one member) in `column`, and in the message."""
    lines = sorted(n for n in lines if n)
    return Issue(severity, code, message, fix, line=lines[0] if lines else None,
                 column=paths[0] if len(paths) == 1 else None,
                 count=count if count is not None else max(len(paths), len(lines), 1),
                 lines=lines[:MAX_LINES_KEPT], file=file)


def problem_issues(problems: list[tuple[str, ImageProblem, str, int]]) -> list[Issue]:
    """[(file, problem, path, line)] as one issue per file, code and reason."""
    groups: dict[tuple, list] = defaultdict(list)
    for file, p, path, line in problems:
        groups[(file, p.code, p.reason)].append((path, p.detail, line))
    out = []
    for (file, code, reason), items in groups.items():
        what, _, fix = REASONS[reason]
        shown = [path + (f" ({detail})" if detail else "") for path, detail, _ in items]
        out.append(issue("error", code, f"{len(items):,} image(s) {what}: {_shown(shown)}.", fix,
                         [n for _, _, n in items], [path for path, _, _ in items], file=file))
    return out


def mode_issues(examples, file: str) -> list[Issue]:
    """One `converted_mode` warning per colour mode that is not RGB, with counts and examples."""
    by_mode: dict[str, list] = defaultdict(list)
    for e in examples:
        if e.mode and e.mode != "RGB":
            by_mode[e.mode].append(e)
    out = []
    for mode, group in sorted(by_mode.items()):
        name = MODE_NAMES.get(mode, mode)
        out.append(issue(
            "warning", "converted_mode",
            f"{len(group):,} image(s) are stored as {name}" + (f" (mode {mode})" if name != mode else "")
            + " and are converted to 8-bit RGB "
            f"for the model: {_shown([e.path for e in group])}.",
            "Nothing to do if they look right in the thumbnails; to skip the conversion, re-save them "
            "as 8-bit RGB PNG or JPEG.", [e.line for e in group], [e.path for e in group], file=file))
    return out


def label_issues(examples, file: str = "train") -> list[Issue]:
    counts = Counter(e.label for e in examples)
    if not counts:
        return [issue("error", "no_images", f"the {file} data holds no usable image.",
                      "Put the images in one folder per class (cat/1.png, dog/2.png...), zip the folders "
                      "and send the zip; see the other issues for the images that were refused.",
                      [], [], file=file, count=0)]
    out = []
    rare = sorted(label for label, n in counts.items() if n < 2)
    if rare:
        rare_set = set(rare)
        group = [e for e in examples if e.label in rare_set]
        labels = ", ".join(f'"{r}" ({next(e.path for e in group if e.label == r)})' for r in rare[:10])
        out.append(issue(
            "error", "rare_label", f"{len(rare)} label(s) have a single image: {labels}"
            + (f" and {len(rare) - 10} more" if len(rare) > 10 else "") + ".",
            "Add at least one more image of label " + ", ".join(f'"{r}"' for r in rare[:10])
            + " (ideally 10 or more each), or remove that class folder.",
            [e.line for e in group], [e.path for e in group], file=file))
    if len(counts) == 1:
        only = next(iter(counts))
        out.append(issue("error", "single_class",
                         f'every image has the label "{only}": there is nothing to tell apart.',
                         "Add a folder of images of at least one other class next to it.",
                         [], [], file=file, count=len(examples)))
    return out


def duplicate_issues(examples, file: str) -> list[Issue]:
    first: dict[str, object] = {}
    repeats = []
    for e in examples:
        if e.sha256 in first:
            repeats.append((e, first[e.sha256]))
        else:
            first[e.sha256] = e
    if not repeats:
        return []
    conflicting = sum(1 for e, f in repeats if e.label != f.label)
    pairs = [f"{e.path} = {f.path}" for e, f in repeats]
    note = (f"; {conflicting:,} of them under a different label, which no model can get right"
            if conflicting else "")
    return [issue("warning", "duplicate_image",
                  f"{len(repeats):,} image(s) are exact copies of an earlier one{note}: {_shown(pairs)}.",
                  "Remove the copies (keep one of each); for a copy under another label, decide on one label.",
                  [e.line for e, _ in repeats], [e.path for e, _ in repeats], file=file)]


def leakage_issues(train, test) -> list[Issue]:
    seen = {e.sha256: e for e in train}
    leaked = [(e, seen[e.sha256]) for e in test if e.sha256 in seen]
    if not leaked:
        return []
    share = len(leaked) / max(len(test), 1)
    pairs = [f"{e.path} = {t.path}" for e, t in leaked]
    return [issue("warning", "image_leakage",
                  f"{len(leaked):,} test image(s) ({share:.1%}) are also in the training data, so the test "
                  f"score would overstate quality on new images: {_shown(pairs)}.",
                  "Remove those images from the test set (or from the training set).",
                  [e.line for e, _ in leaked], [e.path for e, _ in leaked], file="test")]


def unseen_label_issues(train, test) -> list[Issue]:
    known = {e.label for e in train}
    group = [e for e in test if e.label not in known]
    if not group:
        return []
    labels = sorted({e.label for e in group})
    return [issue("warning", "unseen_label",
                  f"{len(labels)} test label(s) never appear in the training data: "
                  + ", ".join(f'"{x}"' for x in labels[:10]) + ". No model can predict them.",
                  "Add training images of those labels, or check both sets use the same folder names.",
                  [e.line for e in group], [e.path for e in group], file="test")]
