"""Uploads: refused with 413 as soon as they pass the size limit (by Content-Length up front, or
while streaming when it is absent or lies), spooled to disk in chunks, never whole in memory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import UploadFile

from .errors import APIError, error_body

CHUNK = 1024 * 1024
_MULTIPART_SLACK = 64 * 1024   # boundaries and part headers around the file


def too_large(limit: int) -> APIError:
    return APIError(413, "file_too_large", f"The upload is larger than the limit of {limit / 1e6:.1f} MB "
                                           "(TUNELAB_MAX_UPLOAD_MB).", "file")


class BodyLimit:
    """ASGI middleware: caps the request body of upload routes."""

    def __init__(self, app, limit_of, paths: tuple[str, ...]):
        self.app, self.limit_of, self.paths = app, limit_of, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith(self.paths):
            return await self.app(scope, receive, send)
        limit = self.limit_of() + _MULTIPART_SLACK
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _reject(send, self.limit_of())
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(self.limit_of())
            return message
        return await self.app(scope, counted, send)


async def _reject(send, limit: int) -> None:
    import json

    err = too_large(limit)
    body = json.dumps(error_body(413, err.code, err.message, err.param)).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


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
