"""Encryption at rest: envelope encryption with AES-256-GCM (the `cryptography` package).

Each tenant has its own data key (DEK), stored only wrapped by the master key; the master key
comes from TUNELAB_MASTER_KEY (base64) or a 0600 file (TUNELAB_MASTER_KEY_FILE, default
TUNELAB_HOME/keys/master.key, created on first use) through a small KeyProvider interface, so a
KMS can take its place. Deleting a tenant destroys its wrapped DEK first: whatever bytes of it
remain anywhere can no longer be decrypted (crypto-shredding). Rotating the master key rewraps
every DEK; the data itself is not re-encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"TLE1"
_NONCE = 12


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
    return Path(os.environ.get("TUNELAB_MASTER_KEY_FILE") or home / "keys" / "master.key")


class Cipher:
    """AES-GCM with one tenant's data key; the tenant id is bound in as associated data, so a
    blob copied from one tenant's folder to another's does not decrypt."""

    def __init__(self, dek: bytes, tenant_id: str):
        self._aead, self._aad = AESGCM(dek), tenant_id.encode()

    def encrypt(self, data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, self._aad)

    def decrypt(self, blob: bytes) -> bytes:
        if not blob.startswith(MAGIC):
            raise KeyError_("not a tunelab-encrypted blob")
        return self._aead.decrypt(blob[4:4 + _NONCE], blob[4 + _NONCE:], self._aad)

    def encrypt_text(self, text: str) -> str:
        return "enc:" + base64.b64encode(self.encrypt(text.encode())).decode()

    def decrypt_text(self, value: str) -> str:
        return self.decrypt(base64.b64decode(value[4:])).decode() if value.startswith("enc:") else value


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
