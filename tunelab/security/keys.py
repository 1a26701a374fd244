"""API keys: `tl-<prefix>.<secret>`. Shown once; stored as a sha256 of the whole key; found by
the prefix (indexed, unique) and compared in constant time. Keys have 190 bits of entropy, so a
plain hash (no slow KDF) is the standard choice: there is nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_LEN = 10


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    hash: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> NewKey:
    prefix = secrets.token_hex(PREFIX_LEN // 2)
    key = f"tl-{prefix}.{secrets.token_urlsafe(24)}"
    return NewKey(key, prefix, hash_key(key))


def parse_prefix(key: str) -> str | None:
    if not key.startswith("tl-") or "." not in key:
        return None
    prefix = key[3:].split(".", 1)[0]
    return prefix if len(prefix) == PREFIX_LEN else None


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)
