"""Content-addressed storage of uploaded datasets.

Layout: root/objects/<sha256[:2]>/<sha256>/<original file name> + meta.json, both
read-only. An entry appears all at once or not at all: the file is parsed first (a bad
file raises DataError before anything is written), then the entry is assembled in a
staging folder under root/staging and renamed into place, so a crash or a concurrent
import never leaves a half-written entry. The same bytes imported twice (under any
name) give the same entry; the first import's column choice is the one recorded.

With a `codec` (the service passes its tenant's cipher: encryption at rest), both files are
stored encrypted and only ever decrypted in memory, or into a caller's folder (`export_to`).

Generative files (chat conversations, plain text, preference pairs: `import_generative`) are
stored the same way; their meta says `kind` (chat | plain | preference) instead of columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .dataset import TextDataset
from .errors import error
from .generative import GenerativeDataset, read_generative
from .readers import DataLimits, parse_data, parse_file, read_bytes

PLAIN_SUFFIXES = (".txt", ".md", ".text")


class Codec(Protocol):
    def encrypt(self, data: bytes) -> bytes: ...
    def decrypt(self, data: bytes) -> bytes: ...


class _Plain:
    def encrypt(self, data: bytes) -> bytes:
        return data

    def decrypt(self, data: bytes) -> bytes:
        return data

META = "meta.json"
_READ_ONLY = 0o444


@dataclass
class StoredDataset:
    sha256: str
    path: Path          # the stored copy of the original file
    meta: dict

    @property
    def name(self) -> str:
        return self.meta["name"]

    codec: Codec = _Plain()

    def read(self) -> bytes:
        """The original file's bytes (decrypted in memory when stored encrypted)."""
        return self.codec.decrypt(self.path.read_bytes())

    def export_to(self, dest: Path) -> Path:
        dest.write_bytes(self.read())
        return dest

    @property
    def kind(self) -> str | None:
        """chat | plain | preference for a generative entry; None for a text+label table."""
        return self.meta.get("kind")

    def load_generative(self) -> GenerativeDataset:
        """Re-read a generative entry. The reader takes a file: the bytes are decrypted into a
        private temporary folder under the store's root for the read, and removed at once."""
        if self.kind is None:
            raise ValueError(f"{self.name} is a text+label table, not a generative dataset")
        data = self.read()
        staging_root = self.path.parents[3] / "staging"    # root/objects/ab/<sha>/file -> root/staging
        staging_root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=staging_root, prefix="read-"))      # owner-only
        try:
            copy = folder / _stored_name(self.meta["name"])
            copy.write_bytes(data)
            ds = read_generative(copy, limits=DataLimits(max_bytes=max(len(data), 1)),
                                 plain=self.kind == "plain")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ds.source = self.meta["name"]
        return ds

    def load(self, *, text_column: str | None = None, label_column: str | None = None) -> TextDataset:
        """Re-read the stored file with the columns chosen at import (or those given: a column
        choice made later is kept with the tenant's row, not here)."""
        if self.kind is not None:
            raise ValueError(f"{self.name} is a generative dataset ({self.kind}): use load_generative()")
        data = self.read()
        # Accepted once already: the limits only need to let it through again
        # (rows as counted at import leave out blank and header lines).
        ds = parse_data(data, self.meta["name"], text_column=text_column or self.meta["text_column"],
                        label_column=label_column or self.meta["label_column"],
                        limits=DataLimits(max_bytes=max(len(data), 1), max_rows=2 * self.meta["rows"] + 1000)).dataset
        ds.source = self.meta["name"]
        return ds


class DatasetStore:
    def __init__(self, root: str | Path, codec: Codec | None = None):
        self.root, self.codec = Path(root), codec or _Plain()

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    def import_file(self, path: str | Path, *, text_column: str | None = None,
                    label_column: str | None = None, limits: DataLimits | None = None,
                    sheet: str | None = None) -> StoredDataset:
        """Parse `path` (DataError on a bad file, nothing stored) and store it. `sheet`: an Excel
        workbook's sheet, stored as a workbook of that sheet alone (see readers.parse_data)."""
        path = Path(path)
        parsed = parse_file(path, text_column=text_column, label_column=label_column, limits=limits, sheet=sheet)
        ds = parsed.dataset
        return self._store(parsed.data, {
            "sha256": ds.sha256,
            "name": path.name,
            "format": ds.format,
            "encoding": ds.encoding,
            "columns": parsed.columns,
            "text_column": ds.text_column,
            "label_column": ds.label_column,
            "rows": len(ds),
            "labels": len(ds.label_names),
            "read_as": parsed.detail,
        })

    def import_generative(self, path: str | Path, *, limits: DataLimits | None = None) -> StoredDataset:
        """Parse `path` as a generative dataset (`read_generative`: DataError with the lines of
        every unusable record, nothing stored) and store it. A .txt/.md file is plain text."""
        path = Path(path)
        limits = limits or DataLimits.from_env()
        data = read_bytes(path, limits)
        ds = read_generative(path, limits=limits, plain=path.suffix.lower() in PLAIN_SUFFIXES)
        if ds.sha256 != hashlib.sha256(data).hexdigest():
            # Store exactly the bytes that were parsed: a file changing under us is refused.
            raise error("changed_while_reading", f"{path.name} changed while it was being read.",
                        "Upload it again.")
        return self._store(data, {"sha256": ds.sha256, "name": path.name, "format": ds.format, "kind": ds.kind,
                                  "encoding": ds.encoding, "rows": len(ds)})

    def import_bytes(self, data: bytes, name: str, kind: str) -> StoredDataset:
        """Store bytes the platform made itself (a job's metrics CSV), never parsed as data."""
        return self._store(data, {"sha256": hashlib.sha256(data).hexdigest(), "name": Path(name).name, "kind": kind,
                                  "rows": data.count(b"\n")})

    def _store(self, data: bytes, meta: dict) -> StoredDataset:
        """The entry of these bytes: the existing one (content-addressed), or a new one with `meta`."""
        existing = self.get(meta["sha256"])
        if existing is not None:
            return existing
        return self._write_entry(data, {**meta, "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def get(self, sha256: str) -> StoredDataset | None:
        folder = self._folder(sha256)
        meta_path = folder / META
        if not meta_path.is_file():
            return None
        meta = json.loads(self.codec.decrypt(meta_path.read_bytes()).decode("utf-8"))
        return StoredDataset(meta["sha256"], folder / self._data_name(meta), meta, self.codec)

    def list(self) -> list[StoredDataset]:
        """Every complete entry, oldest import first."""
        if not self.objects.is_dir():
            return []
        entries = [self.get(p.parent.name) for p in self.objects.glob(f"*/*/{META}")]
        return sorted((e for e in entries if e), key=lambda e: (e.meta.get("imported_at", ""), e.sha256))

    def _data_name(self, meta: dict) -> str:
        # Encrypted entries do not show the user's file name either.
        return _stored_name(meta["name"]) if isinstance(self.codec, _Plain) else "data.enc"

    def _folder(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")   # no path tricks via ids
        return self.objects / sha256[:2] / sha256

    def _write_entry(self, data: bytes, meta: dict) -> StoredDataset:
        final = self._folder(meta["sha256"])
        staging_root = self.root / "staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=staging_root, prefix=meta["sha256"][:12] + "-"))
        try:
            data_path = staging / self._data_name(meta)
            # The bytes that were parsed and hashed, not a re-read that could have changed.
            data_path.write_bytes(self.codec.encrypt(data))
            (staging / META).write_bytes(self.codec.encrypt(json.dumps(meta, indent=2, ensure_ascii=False).encode()))
            for f in (data_path, staging / META):
                os.chmod(f, _READ_ONLY)
            os.chmod(staging, 0o755)            # mkdtemp makes it owner-only
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)       # atomic: the entry appears complete
            except OSError:
                if self.get(meta["sha256"]) is None:   # not a lost race with a twin import
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return self.get(meta["sha256"])


def _stored_name(name: str) -> str:
    """The original name, never clashing with meta.json nor leaving the folder."""
    name = Path(name).name or "data"
    return "original_" + name if name == META else name
