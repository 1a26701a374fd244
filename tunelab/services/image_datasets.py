"""Image archives as a tenant's datasets: the image path of an upload.

An archive (zip or tar of one folder per class, or a CSV/JSONL of path,label inside it) is read
with data.images.read_image_source in a private scratch folder under the tenant's staging area,
which is removed at once: the decoded members never stay on disk. A report with errors refuses
the upload (DataError naming the members, nothing stored); otherwise the archive's bytes are
stored encrypted through the tenant's DatasetStore (meta kind "images") and the row keeps the
report and the stats.

Thumbnails are small copies of the tenant's images, so they are kept like every other copy of
its data: sealed with the tenant's key (`stats.thumbnails_sealed`, a ciphertext; the database is
not encrypted), unsealed only for the tenant's own pages and its preview route."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..data import DataError
from ..data.errors import Issue
from ..security.storage import cipher, dataset_store

IMAGE_TASK = "image-classification"
THUMBS_PER_CLASS = 8
THUMB_SIZE = 64
MAX_THUMBS = 400
SEALED_THUMBS = "thumbnails_sealed"


# Zip containers that are documents, not archives of images (a workbook full of pictures is a table).
DOCUMENT_SUFFIXES = (".xlsx", ".xlsm", ".docx", ".pptx", ".odt", ".ods", ".epub")


def is_image_upload(path: Path) -> bool:
    """An archive or folder whose members are mostly images (cheap: lists names only)."""
    from ..data.images import is_image_source

    if Path(path).suffix.lower() in DOCUMENT_SUFFIXES:
        return False
    try:
        return bool(is_image_source(Path(path)))
    except Exception:           # noqa: BLE001 - not an archive it can list: the table readers say why
        return False


def read_image_upload(tenant_id: str, home: Path, named: Path, *, purpose: str, max_bytes: int | None = None) -> dict:
    """Read, check and store the archive `named` (its name is the user's): the new row's fields.
    DataError (nothing stored) when the report has errors. Runs in a parser process like
    services.datasets.read_dataset: takes and returns only what pickles, touches no database."""
    from ..data.images import IMAGE_KIND, ImageLimits, image_stats, read_image_source, thumbnails
    from ..security.archives import UnsafeArchive

    store = dataset_store(home, tenant_id)
    staging = store.root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=staging, prefix="images-"))      # owner-only, removed below
    data = named.read_bytes()       # the bytes that are checked are the bytes that are stored
    try:
        limits = ImageLimits(max_bytes=max_bytes) if max_bytes else None
        try:
            train, test, report = read_image_source(named, work, limits=limits)
        except UnsafeArchive as exc:
            raise DataError(Issue("error", getattr(exc, "code", "unsafe_member"), str(exc),
                                  "Make the archive again from a plain folder: one folder per class.")) from None
        if not report.ok:
            raise DataError(report.errors + report.warnings)
        stats = image_stats(train, test)
        labels = list(train.label_names)
        thumbs = thumbnails(*_thumbnail_plan(train, labels), size=THUMB_SIZE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stored = store.import_bytes(data, named.name, IMAGE_KIND)
    stats = {k: v for k, v in dict(stats).items() if k != "thumbnails"}
    stats.setdefault("num_labels", len(labels))
    stats.setdefault("rows", len(train))        # what the wizard's advisor reads, as for a table
    stats[SEALED_THUMBS] = cipher(home, tenant_id).encrypt_text(json.dumps(thumbs))
    issues = report.to_dict()
    return dict(filename=named.name, purpose=purpose, bytes=len(data), sha256=stored.sha256, status="processed",
                text_column=None, label_column=None, rows=len(train),
                report={k: v for k, v in issues.items() if k != "stats"}
                | {"task": IMAGE_TASK, "kind": IMAGE_KIND, "format": _archive_format(named),
                   "test_rows": len(test) if test is not None else None, "labels": labels},
                stats=stats)


def _thumbnail_plan(train, labels: list[str]) -> tuple:
    """(dataset, per class) for the thumbnails: up to THUMBS_PER_CLASS a class and MAX_THUMBS in all
    (a row's sealed stats stay around a megabyte whatever the number of classes)."""
    per_class = max(1, min(THUMBS_PER_CLASS, MAX_THUMBS // max(len(labels), 1)))
    if len(labels) <= MAX_THUMBS:
        return train, per_class
    shown = set(labels[:MAX_THUMBS])
    return train.subset([i for i, e in enumerate(train.examples) if e.label in shown]), per_class


def _archive_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".zip", "zip"), (".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar.bz2", "tar.bz2"),
                        (".tar.xz", "tar.xz"), (".tar", "tar")):
        if name.endswith(suffix):
            return fmt
    return "archive"


def is_image_row(row) -> bool:
    """A dataset row whose data is an image archive (its report says so)."""
    return (row.report or {}).get("task") == IMAGE_TASK


def row_thumbnails(home: Path, row) -> dict[str, list[dict]]:
    """{label: [{"path", "data_url"}]} unsealed for the tenant's own page; {} when there are none
    (or the key that sealed them was rotated away)."""
    sealed = (row.stats or {}).get(SEALED_THUMBS)
    if not isinstance(sealed, str):
        return {}
    try:
        value = json.loads(cipher(home, row.tenant_id).decrypt_text(sealed))
    except Exception:           # noqa: BLE001 - a damaged row or a rotated key: no thumbnails, not a 500
        return {}
    return value if isinstance(value, dict) else {}


def preview_images(home: Path, row, limit: int) -> list[dict]:
    """The API's preview of an image dataset: {line, path, label, thumbnail} from the sealed
    thumbnails (a few per class: what the page shows), in reading order."""
    rows = [{"path": t.get("path", ""), "label": label, "thumbnail": t.get("data_url")}
            for label, items in row_thumbnails(home, row).items() for t in items]
    rows.sort(key=lambda r: r["path"])
    return [{"line": i + 1, **r} for i, r in enumerate(rows[:limit])]


def public_stats(stats: dict | None) -> dict:
    """The stats as the API shows them: without the sealed thumbnails (a ciphertext means nothing
    to a client; the preview route gives the images)."""
    return {k: v for k, v in (stats or {}).items() if k != SEALED_THUMBS}


MAX_MEMBER_BYTES = 50 * 1024 * 1024


def member_thumbnails(home: Path, rows: list, paths: list[str], size: int = THUMB_SIZE) -> dict[str, str]:
    """{member path: PNG data URL} for the given members of the rows' stored archives (a model
    page's misclassified test images). The archive is decrypted in memory and only the named
    members are read (each bomb-checked by read_image_bytes): nothing is written to disk. A path
    not found, or not an image, is left out."""
    wanted = {p for p in paths if p}
    out: dict[str, str] = {}
    for row in rows:
        if row is None or not row.sha256 or not wanted - set(out):
            continue
        stored = dataset_store(home, row.tenant_id).get(row.sha256)
        if stored is None:
            continue
        for path, data in _members(stored.read(), wanted - set(out)):
            url = _thumbnail(data, size)
            if url:
                out[path] = url
    return out


def _match(name: str, wanted: set[str]) -> str | None:
    """The wanted path a member name is: itself, or it under one top folder."""
    name = name.replace("\\", "/").lstrip("./")
    if name in wanted:
        return name
    return next((w for w in wanted if name.endswith("/" + w)), None)


def _members(data: bytes, wanted: set[str]):
    import io
    import tarfile
    import zipfile

    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        with zipfile.ZipFile(buf) as zf:
            for info in zf.infolist():
                path = None if info.is_dir() or info.file_size > MAX_MEMBER_BYTES else _match(info.filename, wanted)
                if path:
                    with zf.open(info) as f:
                        yield path, f.read(MAX_MEMBER_BYTES)
        return
    buf.seek(0)
    try:
        with tarfile.open(fileobj=buf, mode="r:*") as tf:
            for member in tf:
                path = _match(member.name, wanted) if member.isreg() and member.size <= MAX_MEMBER_BYTES else None
                f = tf.extractfile(member) if path else None
                if f is not None:
                    yield path, f.read(MAX_MEMBER_BYTES)
    except tarfile.TarError:
        return


def _thumbnail(data: bytes, size: int) -> str | None:
    import base64
    import io

    from ..data.images import read_image_bytes

    try:
        image = read_image_bytes(data)
    except Exception:           # noqa: BLE001 - a member that is not an image: no thumbnail
        return None
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
