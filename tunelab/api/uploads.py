"""Uploads: refused with 413 as soon as they pass the size limit (by Content-Length up front, or
while streaming when it is absent or lies: `upload_rule`, applied by `bodies.BodyGate`), spooled
to disk in chunks, never whole in memory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import UploadFile

from .bodies import BodyRule, authenticated
from .errors import APIError

CHUNK = 1024 * 1024
MULTIPART_SLACK = 64 * 1024   # boundaries and part headers around the file
API_UPLOAD_PATHS = ("/api/v1/datasets", "/v1/files", "/api/v1/models/import", "/api/v1/batch-predictions")


def too_large(limit: int) -> APIError:
    return APIError(413, "file_too_large", f"The upload is larger than the limit of {limit / 1e6:.1f} MB "
                                           "(TUNELAB_MAX_UPLOAD_MB).", "file")


def upload_rule(limit_of, paths: tuple[str, ...] = API_UPLOAD_PATHS, gate=authenticated) -> BodyRule:
    """The body rule of upload routes: up to TUNELAB_MAX_UPLOAD_MB, from an authenticated client."""
    return BodyRule(paths, limit_of, gate, error=too_large, slack=MULTIPART_SLACK)


def save_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Copy the spooled upload into `folder` in chunks; 413 (and nothing left) past the limit."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix="upload-")
    path, total = Path(name), 0
    try:
        with open(fd, "wb") as out:
            while chunk := upload.file.read(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if total == 0:
        path.unlink(missing_ok=True)
        raise APIError(400, "empty_file", "The uploaded file is empty.", "file")
    return path


def cleanup(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
