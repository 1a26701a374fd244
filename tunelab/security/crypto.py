"""Encryption at rest: envelope encryption with AES-256-GCM (the `cryptography` package).

Each tenant has its own data key (DEK), stored only wrapped by the master key; the master key
comes from TUNELAB_MASTER_KEY (base64) or a 0600 file (TUNELAB_MASTER_KEY_FILE, default
TUNELAB_HOME/keys/master.key, created on first use: outside the home is better, see
`master_key_in_home`) through a small KeyProvider interface, so a
KMS can take its place. Deleting a tenant destroys its wrapped DEK first: whatever bytes of it
remain anywhere can no longer be decrypted (crypto-shredding). Rotating the master key rewraps
every DEK; the data itself is not re-encrypted.

Two blob formats. `TLE1` is one AES-GCM message (small values: dataset files, metadata,
secrets); it must be read whole before a byte of it can be trusted. `TLE2` is segmented (the
STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizar): 1 MiB segments, each its own
AES-GCM message whose nonce is a random prefix, the segment's counter and a last-segment flag,
so a sealed model is written and read a segment at a time (memory bounded by one segment),
every released segment is authenticated, and reordering, truncation or appending segments fails
authentication. Readers accept both: files sealed before the segmented format stay readable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import io
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"TLE1"            # one AES-GCM message
STREAM_MAGIC = b"TLE2"     # segmented (STREAM): see the module's docstring
SEGMENT = 1 << 20          # plaintext bytes per segment
_NONCE = 12
_PREFIX = 7                # random nonce prefix; + 4-byte counter + 1-byte last flag = 12
_TAG = 16
_HEADER = struct.Struct(">4sI7s")    # magic, segment size, nonce prefix


class KeyError_(RuntimeError):
    pass


class KeyProvider(Protocol):
    key_id: str

    def wrap(self, dek: bytes) -> bytes: ...
    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKeyProvider:
    """A master key in an environment variable or a file on this machine."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise KeyError_("the master key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    @classmethod
    def from_env_or_file(cls, home: Path) -> "LocalKeyProvider":
        if os.environ.get("TUNELAB_MASTER_KEY"):
            return cls(base64.b64decode(os.environ["TUNELAB_MASTER_KEY"]))
        path = master_key_path(home)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(secrets.token_bytes(32)).decode())
        return cls(base64.b64decode(path.read_text().strip()))

    def wrap(self, dek: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, dek, b"tunelab-dek")

    def unwrap(self, wrapped: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"tunelab-dek")


def master_key_path(home: Path) -> Path:
    from ..settings import Settings

    return Path(Settings().master_key_file or Path(home) / "keys" / "master.key")


def master_key_in_home(home: Path) -> bool:
    """True when the master key is a file inside TUNELAB_HOME: a backup of the home then holds
    the key next to the data it unlocks (the server warns at startup)."""
    if os.environ.get("TUNELAB_MASTER_KEY"):
        return False
    return master_key_path(home).resolve().is_relative_to(Path(home).resolve())


class Cipher:
    """AES-GCM with one tenant's data key; the tenant id is bound in as associated data, so a
    blob copied from one tenant's folder to another's does not decrypt."""

    def __init__(self, dek: bytes, tenant_id: str):
        self._aead, self._aad = AESGCM(dek), tenant_id.encode()

    def encrypt(self, data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, self._aad)

    def decrypt(self, blob: bytes) -> bytes:
        """A whole blob in memory, of either format (use `decrypt_stream` for large files)."""
        if blob.startswith(STREAM_MAGIC):
            return b"".join(self.decrypt_stream(io.BytesIO(blob)))
        if not blob.startswith(MAGIC):
            raise KeyError_("not a tunelab-encrypted blob")
        return self._aead.decrypt(blob[4:4 + _NONCE], blob[4 + _NONCE:], self._aad)

    def encrypt_text(self, text: str) -> str:
        return "enc:" + base64.b64encode(self.encrypt(text.encode())).decode()

    def decrypt_text(self, value: str) -> str:
        return self.decrypt(base64.b64decode(value[4:])).decode() if value.startswith("enc:") else value

    # ---- segmented (STREAM) -------------------------------------------------------------
    def encryptor(self, out: BinaryIO, segment: int = SEGMENT) -> "SegmentWriter":
        """A write-only file object: what is written to it lands in `out` as a TLE2 blob; closing
        it writes the last segment (a blob not closed is refused when read: truncated)."""
        return SegmentWriter(self._aead, self._aad, out, segment)

    def decrypt_stream(self, src: BinaryIO) -> Iterator[bytes]:
        """The plaintext of a blob read from `src`, a segment at a time. A TLE1 blob (sealed
        before segments existed) can only be authenticated whole, so it comes as one piece."""
        head = src.read(_HEADER.size)
        if head.startswith(MAGIC):
            yield self.decrypt(head + src.read())
            return
        if len(head) < _HEADER.size or not head.startswith(STREAM_MAGIC):
            raise KeyError_("not a tunelab-encrypted blob")
        _, segment, prefix = _HEADER.unpack(head)
        if not 0 < segment <= 64 * SEGMENT:
            raise KeyError_("corrupt segmented blob header")
        aad, size = self._aad + b"\x00" + head, segment + _TAG
        current, counter = src.read(size), 0
        while True:
            # A segment is the last one exactly when nothing follows it: read one ahead.
            following = src.read(size) if len(current) == size else b""
            last = not following
            yield self._aead.decrypt(_segment_nonce(prefix, counter, last), current, aad)
            if last:
                return
            current, counter = following, counter + 1

    def reader(self, src: BinaryIO) -> io.BufferedReader:
        """A read-only file object over `decrypt_stream` (for tarfile's stream mode)."""
        return io.BufferedReader(_IterReader(self.decrypt_stream(src)), buffer_size=SEGMENT)


def plaintext_size(path: Path) -> int | None:
    """The decrypted size of a TLE2 file, from its length alone (None for a TLE1 file)."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    if len(head) < _HEADER.size or not head.startswith(STREAM_MAGIC):
        return None
    segment = _HEADER.unpack(head)[1]
    body = Path(path).stat().st_size - _HEADER.size
    segments = max(1, -(-body // (segment + _TAG)))
    return body - segments * _TAG


def _segment_nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= 1 << 32:
        raise KeyError_("segmented blob too long")
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


class SegmentWriter(io.RawIOBase):
    """Buffers up to one segment; a full segment is only written once more data follows it,
    so that the segment written at close is the one flagged last."""

    def __init__(self, aead: AESGCM, aad: bytes, out: BinaryIO, segment: int):
        super().__init__()
        self._aead, self._out, self._segment = aead, out, segment
        prefix = secrets.token_bytes(_PREFIX)
        head = _HEADER.pack(STREAM_MAGIC, segment, prefix)
        self._prefix, self._aad, self._counter, self._buf = prefix, aad + b"\x00" + head, 0, bytearray()
        out.write(head)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buf += data
        while len(self._buf) > self._segment:
            self._emit(bytes(self._buf[:self._segment]), last=False)
            del self._buf[:self._segment]
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._emit(bytes(self._buf), last=True)
            self._buf = bytearray()
        super().close()

    def _emit(self, chunk: bytes, last: bool) -> None:
        self._out.write(self._aead.encrypt(_segment_nonce(self._prefix, self._counter, last), chunk, self._aad))
        self._counter += 1


class _IterReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]):
        super().__init__()
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        n = min(len(b), len(self._left))
        b[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class TenantKeys:
    """Per-tenant data keys, wrapped, in TUNELAB_HOME/tenants/<id>/dek.json."""

    _lock = threading.Lock()

    def __init__(self, home: Path, provider: KeyProvider | None = None):
        self.home = Path(home)
        self.provider = provider or LocalKeyProvider.from_env_or_file(self.home)

    def _path(self, tenant_id: str) -> Path:
        if not tenant_id.replace("_", "").isalnum():
            raise ValueError(f"bad tenant id {tenant_id!r}")
        return self.home / "tenants" / tenant_id / "dek.json"

    def cipher(self, tenant_id: str) -> Cipher:
        path = self._path(tenant_id)
        with self._lock:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                record = {"key_id": self.provider.key_id,
                          "wrapped": base64.b64encode(self.provider.wrap(secrets.token_bytes(32))).decode()}
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record))
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
        record = json.loads(path.read_text())
        if record["key_id"] != self.provider.key_id:
            raise KeyError_(f"tenant {tenant_id}'s key is wrapped by master key {record['key_id']}, "
                            f"not the current one ({self.provider.key_id}); finish the key rotation")
        return Cipher(self.provider.unwrap(base64.b64decode(record["wrapped"])), tenant_id)

    def destroy(self, tenant_id: str) -> None:
        """Crypto-shredding: without this wrapped key nothing of the tenant can be decrypted."""
        path = self._path(tenant_id)
        if path.exists():
            size = path.stat().st_size
            with open(path, "r+b") as f:        # overwrite before unlinking (best effort on SSDs)
                f.write(secrets.token_bytes(size))
                f.flush()
                os.fsync(f.fileno())
            path.unlink()

    def rotate(self, new: KeyProvider) -> int:
        """Rewrap every tenant's data key under `new`; returns how many."""
        count = 0
        for path in sorted((self.home / "tenants").glob("*/dek.json")):
            record = json.loads(path.read_text())
            if record["key_id"] == new.key_id:
                continue
            dek = self.provider.unwrap(base64.b64decode(record["wrapped"]))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key_id": new.key_id, "wrapped": base64.b64encode(new.wrap(dek)).decode()}))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            count += 1
        self.provider = new
        return count
