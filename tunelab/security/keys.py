"""API keys: `tl-<prefix>.<secret>`. Shown once; stored as a sha256 of the whole key; found by
the prefix (indexed, unique) and compared in constant time. Keys have 190 bits of entropy, so a
plain hash (no slow KDF) is the standard choice: there is nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
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


# Passwords: scrypt at N=2^17, r=8, p=1 (OWASP's recommendation). The cost is in the stored
# string, `scrypt$<log2 N>$<r>$<p>$<salt>$<digest>`, so a hash made with older parameters still
# verifies (`scrypt$<salt>$<digest>` was N=2^14) and is replaced at the next sign-in.
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
_LEGACY = (14, 8, 1)
_MAXMEM = 256 * 1024 * 1024          # N=2^17, r=8 needs 128 MiB; hashlib's default cap is 32 MiB
# Each check holds 128 MiB for ~0.5 s: a burst of sign-ins queues here instead of exhausting memory.
_KDF_SLOTS = threading.BoundedSemaphore(4)
_DUMMY_SALT = bytes(16)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    with _KDF_SLOTS:
        return hashlib.scrypt(password.encode(), salt=salt, n=2**log2_n, r=r, p=p, maxmem=_MAXMEM)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _parse(stored: str | None) -> tuple[tuple[int, int, int], bytes, bytes] | None:
    """(log2 N, r, p), salt, digest of a stored hash; None for anything else."""
    parts = (stored or "").split("$")
    try:
        if len(parts) == 3 and parts[0] == "scrypt":
            return _LEGACY, bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        if len(parts) == 6 and parts[0] == "scrypt":
            cost = (int(parts[1]), int(parts[2]), int(parts[3]))
            if 10 <= cost[0] <= 20 and 1 <= cost[1] <= 16 and cost[2] == 1:     # never what memory cannot hold
                return cost, bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        pass
    return None


def check_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches. A user without a password (None) or an unreadable hash costs the
    same scrypt as a real check: the answer's timing does not tell which accounts have one."""
    parsed = _parse(stored)
    if parsed is None:
        _scrypt(password, _DUMMY_SALT, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
        return False
    (log2_n, r, p), salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, log2_n, r, p), digest)


def needs_rehash(stored: str | None) -> bool:
    """A hash made with weaker parameters than today's (rehash it when the password is at hand)."""
    parsed = _parse(stored)
    return parsed is not None and parsed[0] != (SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
