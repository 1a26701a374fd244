"""Image datasets: a zip, a tar (any compression) or a plain folder of images, read like a text
file is — every problem reported with the member's path and a fix, nothing trusted.

    train, test, report = read_image_source(Path("photos.zip"), work)
    if not report.ok: raise DataError(report.errors)
    train.open(0)          # PIL RGB image, EXIF orientation applied

Layouts, found from the member names: one folder per class (`cat/1.png`, with or without one top
folder); `train/<class>/...` and `test/<class>/...` (`val/`, `valid/`, `validation/` is the test
set when there is no test folder); or a CSV/TSV/JSONL manifest of path,label rows (paths relative
to the manifest). Hidden files, `__MACOSX/`, `.DS_Store` and `Thumbs.db` are ignored.

Order of work, so that one report lists every problem and nothing is left on disk on an error:
list the members (every unsafe one reported), check the limits, then read each image once from
the archive, decode it (image_checks), and write only the good ones, under names already checked,
into a staging folder in `work` — removed again when the report has an error.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from PIL import Image

from .errors import DataError, Issue
from .image_checks import (REASONS, ImageLimits, ImageProblem, check_image, decode, duplicate_issues, issue,
                           label_issues, leakage_issues, mode_issues, problem_issues, unseen_label_issues)
from .image_layout import (ALL_IMAGE_SUFFIXES, IMAGE_SUFFIXES, MANIFEST_SUFFIXES, MAX_MANIFEST_BYTES, Plan,
                           folder_plan, manifest_plan, suffix)
from .image_members import Budget, Listing, SourceError, is_junk, list_members, read_members, source_kind
from .image_stats import image_stats
from .validation import Report, check_imbalance

__all__ = ["IMAGE_KIND", "IMAGE_SUFFIXES", "ImageExample", "ImageDataset", "ImageLimits", "is_image_source",
           "read_image_source", "read_image_bytes", "image_stats", "thumbnails"]

IMAGE_KIND = "images"
# is_image_source looks at this many members at most: a cheap look, not a read.
SNIFF_MEMBERS = 5000


@dataclass(frozen=True)
class ImageExample:
    path: str           # member path inside the archive/folder, POSIX, as the user sees it
    label: str
    line: int           # 1-based: reading order, or the manifest row (header = line 1)
    sha256: str         # of the file's bytes: feature cache key, duplicates, leakage
    width: int = 0      # as shown (EXIF orientation applied)
    height: int = 0
    mode: str = ""      # colour mode as stored ("RGB", "CMYK", "I;16"...)
    format: str = ""    # "PNG", "JPEG"...
    bytes: int = 0


@dataclass
class ImageDataset:
    examples: list[ImageExample]
    root: Path                  # folder the members were extracted to (paths relative to it)
    source: str = ""            # archive name, for messages
    sha256: str = ""            # archive content hash
    format: str = "images"
    text_column: str = "image"
    label_column: str = "label"
    limits: ImageLimits = field(default_factory=ImageLimits)

    @property
    def texts(self) -> list[str]:
        return [e.path for e in self.examples]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]

    @property
    def label_names(self) -> list[str]:
        return sorted({e.label for e in self.examples})

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices) -> "ImageDataset":
        return ImageDataset([self.examples[i] for i in indices], self.root, self.source, self.sha256,
                            self.format, self.text_column, self.label_column, self.limits)

    def image_bytes(self, i: int) -> bytes:
        return Path(self.root).joinpath(*self.examples[i].path.split("/")).read_bytes()

    def open(self, i: int) -> Image.Image:
        """Decoded with the same checks as when it was read, EXIF-transposed, RGB."""
        return decode(self.image_bytes(i), self.limits)[0]


# ---- recognising and reading a source ------------------------------------------------------------
def is_image_source(path: Path) -> bool:
    """A zip/tar/folder whose (non-hidden) files are mostly images, by name: lists, reads nothing."""
    try:
        if source_kind(Path(path)) is None:
            return False
        listing = list_members(Path(path), SNIFF_MEMBERS)
    except (SourceError, OSError):
        return False
    names = [m.path for m in listing.safe if not is_junk(m.path)]
    images = sum(suffix(n) in IMAGE_SUFFIXES for n in names)
    return images > 0 and images * 2 >= len(names)


class _Source:
    """One archive or folder: listed, planned, read once."""

    def __init__(self, path: Path, file: str, limits: ImageLimits):
        self.path, self.file, self.limits = Path(path), file, limits
        self.issues: list[Issue] = []
        self.listing = Listing("none")
        self.plan = Plan()
        try:
            self.listing = list_members(self.path, limits.max_images + 1000)
            self._check_listing()
            self._make_plan()
        except SourceError as exc:
            self.issues.append(issue("error", exc.code, str(exc), exc.fix, [], [], file=file))

    @property
    def readable(self) -> bool:
        return self.listing.kind != "none" and not any(i.code in _FATAL for i in self.issues)

    def _check_listing(self) -> None:
        by_problem = defaultdict(list)
        for m in self.listing.unsafe:
            by_problem[m.problem].append(m.path)
        for problem, names in by_problem.items():
            self.issues.append(issue(
                "error", "unsafe_member",
                f"{len(names):,} archive member(s) refused, each {problem}: {', '.join(names[:10])}"
                + (f" and {len(names) - 10} more" if len(names) > 10 else "") + ". Nothing was extracted.",
                "Make the archive again from a plain folder of images (no links, no '..' or absolute paths), "
                "e.g. `zip -r data.zip data/`.", [], names, file=self.file))
        images = [m for m in self.listing.safe if suffix(m.path) in ALL_IMAGE_SUFFIXES]
        if self.listing.too_many or len(images) > self.limits.max_images:
            self.issues.append(issue("error", "too_many_images",
                                     f"{self.path.name} has more than {self.limits.max_images:,} images or files",
                                     "Split the data into several smaller archives, or sample it.", [], [],
                                     file=self.file))
        declared = sum(m.size for m in self.listing.safe)
        if declared > self.limits.max_bytes:
            self.issues.append(issue("error", "archive_too_large",
                                     f"{self.path.name} holds {declared:,} bytes (limit {self.limits.max_bytes:,})",
                                     "Split the data into smaller archives, or resize the images.", [], [],
                                     file=self.file))

    def _make_plan(self) -> None:
        names = [m.path for m in self.listing.safe if not is_junk(m.path)]
        images = [n for n in names if suffix(n) in ALL_IMAGE_SUFFIXES]
        manifests = [n for n in names if suffix(n) in MANIFEST_SUFFIXES]
        if manifests and self.readable:          # an unsafe member elsewhere does not hide the manifest
            sizes = {m.path: m.size for m in self.listing.safe}
            small = {n for n in manifests if sizes[n] <= MAX_MANIFEST_BYTES}
            budget = Budget(self.limits.max_bytes)
            data = {n: b for n, b in read_members(self.path, self.listing.kind, small, budget, MAX_MANIFEST_BYTES)
                    if b is not None}
            if manifest_plan(data, set(images), self.plan):
                return
        folder_plan(sorted(images), self.plan)

    def read(self, wanted: dict[str, tuple[str, str, int]], staging: dict[str, Path], problems: list
             ) -> dict[str, list[ImageExample]]:
        """Decode each wanted member once; write the good ones under staging[file] (when given)."""
        found: dict[str, list[ImageExample]] = defaultdict(list)
        budget = Budget(self.limits.max_bytes, self.path.stat().st_size if self.path.is_file() else None)
        for path, data in read_members(self.path, self.listing.kind, set(wanted), budget,
                                       self.limits.max_image_bytes):
            file, label, line = wanted[path]
            try:
                if data is None:
                    raise ImageProblem("image_too_large", "file_bytes")
                info = check_image(data, self.limits)
            except ImageProblem as p:
                problems.append((file, p, path, line))
                continue
            found[file].append(ImageExample(path, label, line, hashlib.sha256(data).hexdigest(), info.width,
                                            info.height, info.mode, info.format, len(data)))
            if staging.get(file) is not None:
                target = staging[file].joinpath(*path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        return found

    @cached_property
    def file_sha256(self) -> str:
        """The archive's bytes ("" for a folder: its examples' hashes identify it)."""
        h = hashlib.sha256()
        if not self.path.is_file():
            return ""
        with open(self.path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                h.update(chunk)
        return h.hexdigest()


# Problems after which the source is not read further.
_FATAL = {"not_an_archive", "corrupt_archive", "too_many_images", "archive_too_large"}


def read_image_source(path: Path, work: Path, *, limits: ImageLimits | None = None,
                      test_path: Path | None = None) -> tuple[ImageDataset, ImageDataset | None, Report]:
    """(train, test or None, report). An archive's good images are written under `work` (the
    datasets' root); with errors in the report nothing is left there. A folder is read in place."""
    limits = limits or ImageLimits()
    main = _Source(Path(path), "train", limits)
    other = _Source(Path(test_path), "test", limits) if test_path is not None else None
    sources, ignored = _assign(main, other)
    issues = [i for src in (main, other) if src is not None for i in src.issues + src.plan.issues]
    write = not any(i.severity == "error" for i in issues)
    found, problems, roots, staged = defaultdict(list), [], {}, []
    for src, files in sources:
        staging = {}
        for file, items in files.items():
            if write and items and src.listing.kind in ("zip", "tar"):
                staging[file] = Path(tempfile.mkdtemp(prefix=f"{file}-", dir=_mkdir(Path(work))))
                staged.append(staging[file])
            roots[file] = staging.get(file) or (src.path if src.listing.kind == "folder" else Path(work))
        if src.readable:
            try:
                for file, examples in src.read(_numbered(files), staging, problems).items():
                    found[file] += examples
            except (SourceError, OSError) as exc:
                issues.append(issue("error", getattr(exc, "code", "corrupt_archive"), str(exc),
                                    getattr(exc, "fix", "Make the archive again from the original folder."),
                                    [], [], file=src.file))
    has_test = other is not None or bool(sources[0][1].get("test"))
    train = _dataset(found["train"], roots["train"], main, limits)
    test = _dataset(found["test"], roots["test"], other or main, limits) if has_test else None
    issues += problem_issues(problems) + _data_issues(train, test, ignored, main.readable)
    report = Report(sorted(issues, key=lambda i: i.severity != "error"), image_stats(train, test))
    if not report.ok:
        for folder in staged:
            shutil.rmtree(folder, ignore_errors=True)
    return train, test, report


def _assign(main: _Source, other: _Source | None) -> tuple[list, dict[str, list[str]]]:
    """[(source, {file: [(path, label, line)]})] and {why left out: paths}: the archive's test
    folder is the test set (its val folder when there is none), unless a test source was given."""
    parts = main.plan.parts
    ignored = {k: list(v) for k, v in main.plan.ignored.items()}
    test_items = parts.get("test") or parts.get("val") or []
    if parts.get("test") and parts.get("val"):
        ignored["in the val folder (the test folder is the test set)"] = [p for p, _, _ in parts["val"]]
    if other is None:
        return [(main, {"train": parts.get("train", []), "test": test_items})], ignored
    if test_items:
        ignored[f"in the archive's test folder ({other.path.name} is the test set)"] = [p for p, _, _ in test_items]
    theirs = other.plan.parts
    return [(main, {"train": parts.get("train", [])}),
            (other, {"test": theirs.get("test") or theirs.get("val") or theirs.get("train") or []})], ignored


def _numbered(files: dict[str, list]) -> dict[str, tuple[str, str, int]]:
    """{path: (file, label, line)}: a manifest row keeps its line, a folder's images are numbered
    in path order."""
    out = {}
    for file, items in files.items():
        ordered = sorted(items, key=lambda x: (x[2], x[0]))
        out.update({p: (file, label, line or i + 1) for i, (p, label, line) in enumerate(ordered)})
    return out


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _dataset(examples: list[ImageExample], root: Path, src: _Source, limits: ImageLimits) -> ImageDataset:
    examples = sorted(examples, key=lambda e: (e.line, e.path))
    sha = src.file_sha256 if src.readable else ""
    if src.readable and not sha:            # a folder: what it holds, path and content
        sha = hashlib.sha256("".join(f"{e.path}\0{e.sha256}\n" for e in examples).encode()).hexdigest()
    return ImageDataset(examples, Path(root), src.path.name, sha, limits=limits)


def _data_issues(train: ImageDataset, test: ImageDataset | None, ignored: dict[str, list[str]],
                 readable: bool) -> list[Issue]:
    out = mode_issues(train.examples, "train") + duplicate_issues(train.examples, "train")
    if readable:
        out += label_issues(train.examples, "train") + check_imbalance(train)
    if test is not None:
        out += mode_issues(test.examples, "test") + duplicate_issues(test.examples, "test")
        out += label_issues(test.examples, "test")[:1] if not test.examples else []
        out += leakage_issues(train.examples, test.examples) + unseen_label_issues(train.examples, test.examples)
    for why, paths in ignored.items():
        if paths:
            out.append(issue("warning", "ignored_images", f"{len(paths):,} image(s) are {why} and were left out: "
                             + ", ".join(paths[:10]) + (" ..." if len(paths) > 10 else "") + ".",
                             "Move them into the right folder (or list them) if they are meant to be used.",
                             [], paths, file="train"))
    return out


# ---- what the UI and the predict API use -----------------------------------------------------------
def thumbnails(ds: ImageDataset, per_class: int = 6, size: int = 64) -> dict[str, list[dict]]:
    """{label: [{"path", "data_url"}]}: the first `per_class` images of each class, at most
    size x size (aspect kept), as PNG data URLs."""
    chosen: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(ds.examples):
        if len(chosen[e.label]) < per_class:
            chosen[e.label].append(i)
    out: dict[str, list[dict]] = {}
    for label in sorted(chosen):
        out[label] = []
        for i in chosen[label]:
            try:
                image = ds.open(i)
            except (ImageProblem, OSError):
                continue
            image.thumbnail((size, size))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            out[label].append({"path": ds.examples[i].path,
                               "data_url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")})
    return out


def read_image_bytes(data: bytes, *, limits: ImageLimits | None = None) -> Image.Image:
    """One uploaded image, checked like an archive's: RGB, EXIF orientation applied. DataError
    with one issue (bad_image, image_too_large, animated_image) otherwise."""
    try:
        return decode(data, limits or ImageLimits())[0]
    except ImageProblem as p:
        _, one, _ = REASONS[p.reason]
        detail = f" ({p.detail})" if p.detail else ""
        fix = ONE_FIX.get(p.reason, ONE_FIX[""])
        raise DataError(Issue("error", p.code, f"The image {one}{detail}.", fix)) from None


ONE_FIX = {"": "Re-save it as PNG or JPEG and send it again.",
           "zero_byte": "Send the image file itself: this one is empty.",
           "pixels": "Resize it (2,000 px on the longer side is plenty), re-save it as PNG or JPEG and send it again.",
           "file_bytes": "Resize or re-compress it (JPEG) and send it again.",
           "frames": "Save the one frame you mean as a PNG and send that."}
