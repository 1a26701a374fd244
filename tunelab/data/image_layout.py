"""Which member of an image source is which example: the layout, found from the member names.

One folder per class (`cat/1.png`, under any number of shared top folders); `train|test|val/
<class>/...`; or CSV/TSV/JSONL/JSON manifests of path,label rows (paths relative to the manifest;
a manifest named *test*/*val*, or a `split` column, says which set a row is in). Decides nothing
about the bytes: image_checks decodes, images.py reads.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .errors import Issue
from .image_checks import issue

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Image files tunelab does not decode: reported (re-save as PNG), not silently skipped.
OTHER_IMAGE_SUFFIXES = {".heic", ".heif", ".avif", ".svg", ".psd", ".ico", ".jxl", ".jp2", ".raw", ".cr2",
                        ".nef", ".dng", ".arw", ".pcx", ".tga", ".ppm", ".pgm", ".pbm", ".eps"}
ALL_IMAGE_SUFFIXES = frozenset(IMAGE_SUFFIXES | OTHER_IMAGE_SUFFIXES)
MANIFEST_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json"}
MAX_MANIFEST_BYTES = 64 * 1024**2
SPLITS = {"train": "train", "training": "train", "test": "test", "testing": "test",
          "val": "val", "valid": "val", "validation": "val", "dev": "val"}
PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path",
                "img", "image_file", "image_name")
LABEL_COLUMNS = ("label", "class", "category", "target", "class_name", "label_name", "labels")
SPLIT_COLUMNS = ("split", "subset", "set")


def suffix(path: str) -> str:
    return PurePosixPath(path).suffix.lower()


@dataclass
class Plan:
    """Which member is which example: {file: [(path, label, line)]}, and what was left out."""
    parts: dict[str, list[tuple[str, str, int]]] = field(default_factory=lambda: defaultdict(list))
    issues: list[Issue] = field(default_factory=list)
    ignored: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))   # why -> paths


def folder_plan(paths: list[str], plan: Plan) -> None:
    """Folder per class, after the folders every file shares (keeping one above each file);
    `train|test|val/<class>/file` when the first remaining folder names a split."""
    parts = [p.split("/") for p in paths]
    keep = min((len(p) for p in parts), default=2) - 2
    k = 0
    while k < keep and len({p[k] for p in parts}) == 1:
        k += 1
    rest = [p[k:] for p in parts]
    split_layout = any(len(r) >= 3 and r[0].lower() in SPLITS for r in rest)
    unlabelled = []
    for path, r in zip(paths, rest):
        if split_layout:
            split = SPLITS.get(r[0].lower()) if len(r) >= 3 else None
            if split is None:
                plan.ignored["outside the train/test folders"].append(path)
            else:
                plan.parts[split].append((path, r[1], 0))
        elif len(r) >= 2:
            plan.parts["train"].append((path, r[0], 0))
        else:
            unlabelled.append(path)
    if unlabelled:
        plan.issues.append(issue("error", "missing_label",
                                 f"{len(unlabelled):,} image(s) are not inside a class folder: "
                                 f"{', '.join(unlabelled[:10])}{' ...' if len(unlabelled) > 10 else ''}.",
                                 "Move each image into a folder named after its class (cat/1.png, dog/2.png), "
                                 "or remove it.", [], unlabelled, file="train"))


def _rows(name: str, data: bytes) -> list[tuple[int, dict]]:
    """(line, {lower-cased column: value}) of a CSV/TSV/JSONL/JSON manifest."""
    text = data.decode("utf-8-sig", errors="replace")
    ext = suffix(name)
    if ext in (".jsonl", ".json"):
        if ext == ".json" or text.lstrip().startswith("["):
            records = json.loads(text)
            items = [(i + 1, r) for i, r in enumerate(records if isinstance(records, list) else [])]
        else:
            items = [(i + 1, json.loads(line)) for i, line in enumerate(text.splitlines()) if line.strip()]
        return [(n, {str(k).strip().lower(): "" if v is None else str(v) for k, v in r.items()})
                for n, r in items if isinstance(r, dict)]
    delimiter = "\t" if ext == ".tsv" else max(",;\t", key=lambda d: text.split("\n", 1)[0].count(d))
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    return [(reader.line_num, {str(k or "").strip().lower(): (v or "") for k, v in row.items()}) for row in reader]


def _column(row: dict, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in row), None)


def manifest_plan(manifests: dict[str, bytes], images: set[str], plan: Plan) -> bool:
    """The plan from the manifests that have a path and a label column; False when none has."""
    used: set[str] = set()
    found = False
    for name, data in sorted(manifests.items()):
        try:
            rows = _rows(name, data)
        except (ValueError, csv.Error):
            continue
        head = rows[0][1] if rows else {}
        columns = [_column(head, names) for names in (PATH_COLUMNS, LABEL_COLUMNS, SPLIT_COLUMNS)]
        if columns[0] and columns[1]:
            found = True
            used |= _manifest_rows(name, rows, columns, images, plan)
    if found:
        plan.ignored["not listed in the manifest"] += sorted(images - used)
    return found


def _manifest_rows(name: str, rows: list[tuple[int, dict]], columns: list, images: set[str], plan: Plan) -> set[str]:
    """One manifest's rows into the plan; the image paths it used."""
    path_col, label_col, split_col = columns
    words = set(re.split(r"[^a-z0-9]+", PurePosixPath(name).stem.lower()))
    default = next((SPLITS[w] for w in ("test", "testing", "val", "valid", "validation") if w in words), "train")
    base, used, missing, unlabelled = posixpath.dirname(name), set(), [], []
    for line, row in rows:
        raw = row.get(path_col, "").strip().replace("\\", "/")
        # Relative to the manifest's folder; else as written, relative to the archive's root.
        path = posixpath.normpath(posixpath.join(base, raw)) if raw else ""
        if raw and path not in images:
            path = posixpath.normpath(raw)
        label = row.get(label_col, "").strip()
        split = SPLITS.get(row.get(split_col, "").strip().lower(), default) if split_col else default
        if path not in images:
            missing.append((line, raw))
        elif not label:
            unlabelled.append((line, path))
        else:
            used.add(path)
            plan.parts[split].append((path, label, line))
    if missing:
        plan.issues.append(issue("error", "missing_image",
                                 f"{len(missing):,} row(s) of {name} name an image that is not in the archive: "
                                 + ", ".join(f"line {n}: {p or '(empty)'}" for n, p in missing[:10]) + ".",
                                 f"Fix the paths in {name} (relative to its folder) or add the images.",
                                 [n for n, _ in missing], [p for _, p in missing], file="train"))
    if unlabelled:
        plan.issues.append(issue("error", "missing_label", f"{len(unlabelled):,} row(s) of {name} have no label: "
                                 + ", ".join(p for _, p in unlabelled[:10]) + ".",
                                 f"Fill in the label column in {name}, or delete those rows.",
                                 [n for n, _ in unlabelled], [p for _, p in unlabelled], file="train"))
    return used
