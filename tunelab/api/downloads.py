"""Decrypted downloads of sealed files (a tuned model's tar, an export): streamed a segment at a
time, so a download holds about one segment of plaintext in memory, not the whole model; and
only `max_concurrent_downloads` at once per server process (each costs a core decrypting), the
next ones answered 429 with Retry-After rather than queued behind them."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

from fastapi.responses import StreamingResponse

from ..security.crypto import plaintext_size
from ..security.storage import decrypted_chunks
from .errors import APIError

RETRY_AFTER = 5           # seconds: a model download of a few hundred MB takes about that long
_semaphores: dict[int, threading.BoundedSemaphore] = {}
_guard = threading.Lock()


class Slot:
    """One held download slot, released exactly once (by the stream's end, or by the garbage
    collector when a response is dropped before it was ever read)."""

    def __init__(self, semaphore: threading.BoundedSemaphore | None):
        self._semaphore, self._lock = semaphore, threading.Lock()

    def release(self) -> None:
        with self._lock:
            semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()


def take_slot(limit: int) -> Slot:
    """A slot, or 429 when `limit` downloads are already running here (0: no limit)."""
    if limit <= 0:
        return Slot(None)
    with _guard:
        semaphore = _semaphores.setdefault(limit, threading.BoundedSemaphore(limit))
    if not semaphore.acquire(blocking=False):
        raise APIError(429, "too_many_downloads", f"{limit} downloads are already being decrypted on this server; "
                       f"retry in {RETRY_AFTER} s.", None, retry_after=RETRY_AFTER - 1)
    return Slot(semaphore)


def release_with(iterator, slot: Slot):
    """Yield from `iterator`, then free `slot`, however the stream ends."""
    def body():
        try:
            yield from iterator
        finally:
            slot.release()
    gen = body()
    weakref.finalize(gen, slot.release)      # never started (client gone before the body): no finally runs
    return gen


def sealed_response(home: Path, tenant_id: str, sealed: Path, filename: str, media_type: str,
                    slot: Slot) -> StreamingResponse:
    """The decrypted file as a stream. Its length is known from the ciphertext's, so a stream cut
    short (a segment failing authentication ends it) is a visible error to the client."""
    size = plaintext_size(sealed)
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if size is not None:
        headers["Content-Length"] = str(size)
    return StreamingResponse(release_with(decrypted_chunks(home, tenant_id, sealed), slot),
                             media_type=media_type, headers=headers)
