"""What keeps the audit log honest from outside the database: its key and its anchors.

The key: 32 random bytes, wrapped by the master key (the KeyProvider, as tenants' data keys
are) in TUNELAB_HOME/keys/audit.key. Someone who can write the database but does not hold the
master key cannot compute an entry's MAC, so an edited entry, or an edited and re-chained tail,
shows. Rotating the master key rewraps it (`rewrap_key`); the entries are not re-keyed.

The anchors: after each commit that appended audit entries, one line a chain (chain, seq, MAC of
that entry, time), signed with the key, appended and fsynced to a file outside the database
(TUNELAB_AUDIT_ANCHOR_FILE, default TUNELAB_HOME/audit/anchors.jsonl; an append-only file on
another volume is better). A chain shorter than its newest anchor was truncated; a chain whose
entry at an anchored seq has another MAC was rewritten.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .crypto import KeyProvider, KeyError_, LocalKeyProvider


@dataclass(frozen=True)
class AuditKeys:
    """Two keys derived from the audit key: one MACs entries, the other signs anchors."""
    entry: bytes
    anchor: bytes

    @classmethod
    def derive(cls, key: bytes) -> "AuditKeys":
        def kdf(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)
        return cls(kdf(b"tunelab audit entry v1"), kdf(b"tunelab audit anchor v1"))

    def mac(self, body: bytes) -> str:
        return hmac.new(self.entry, body, hashlib.sha256).hexdigest()

    def sign(self, record: dict) -> str:
        return hmac.new(self.anchor, _canonical(record), hashlib.sha256).hexdigest()


def _canonical(record: dict) -> bytes:
    return json.dumps({k: v for k, v in record.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":")).encode()


def key_path(home: Path) -> Path:
    return Path(home) / "keys" / "audit.key"


def provider_for(home: Path) -> KeyProvider:
    """The master key's provider, found as the tenants' data keys find it."""
    return LocalKeyProvider.from_env_or_file(Path(home))


def load_key(home: Path, provider: KeyProvider | None = None) -> bytes | None:
    """The audit key, or None before the first one is made (see `create_key`)."""
    path = key_path(home)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    provider = provider or provider_for(home)
    if record["key_id"] != provider.key_id:
        raise KeyError_(f"the audit key is wrapped by master key {record['key_id']}, not the current one "
                        f"({provider.key_id}); finish the key rotation (tunelab admin rotate-master-key)")
    return provider.unwrap(base64.b64decode(record["wrapped"]))


@contextmanager
def key_lock(home: Path) -> Iterator[None]:
    """One process at a time makes the key (the server, its workers and the CLI share the home)."""
    path = key_path(home).with_name("audit.lock")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def staged_key(home: Path, provider: KeyProvider | None = None) -> bytes:
    """A new key, written next to its final place (reused if a crash left one): the upgrade
    anchors are signed with it before it is published, so a crash in between changes nothing."""
    provider = provider or provider_for(home)
    staged = key_path(home).with_name("audit.key.new")
    if staged.exists():
        record = json.loads(staged.read_text())
        return provider.unwrap(base64.b64decode(record["wrapped"]))
    key = secrets.token_bytes(32)
    _write_key(staged, provider, key)
    return key


def publish_key(home: Path) -> None:
    path = key_path(home)
    os.replace(path.with_name("audit.key.new"), path)


def rewrap_key(home: Path, new: KeyProvider) -> bool:
    """Master-key rotation: the audit key wrapped by `new`. False if it already was (a rotation
    run again) or there is no audit key yet."""
    path = key_path(home)
    if not path.exists() or json.loads(path.read_text())["key_id"] == new.key_id:
        return False
    key = load_key(home)
    tmp = path.with_name("audit.key.tmp")
    _write_key(tmp, new, key)
    os.replace(tmp, path)
    return True


def _write_key(path: Path, provider: KeyProvider, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"key_id": provider.key_id, "wrapped": base64.b64encode(provider.wrap(key)).decode()}))
        f.flush()
        os.fsync(f.fileno())


# ---- anchors ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anchor:
    chain: str
    seq: int
    mac: str
    at: str
    kind: str          # "head" (after a commit), "legacy" (the unkeyed entries' head at the upgrade)
    line: int


def append_anchors(path: Path, keys: AuditKeys, heads: list[tuple[str, int, str]], at: str,
                   kind: str = "head") -> None:
    """One signed line a (chain, seq, mac), in one write to a file opened for appending, then
    fsync: concurrent writers (server, workers, CLI) never interleave within a line."""
    lines = []
    for chain, seq, mac in heads:
        record = {"chain": chain, "seq": seq, "mac": mac, "at": at, "kind": kind}
        lines.append(json.dumps({**record, "sig": keys.sign(record)}, sort_keys=True) + "\n")
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: Path, keys: AuditKeys) -> tuple[list[Anchor], list[tuple[int, str]]]:
    """(anchors whose signature holds, [(line, why)] for lines that are not valid anchors).
    A last line without its newline is a write cut short by a crash: skipped."""
    good, bad = [], []
    if not path.exists():
        return good, bad
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
                anchor = Anchor(str(record["chain"]), int(record["seq"]), str(record["mac"]), str(record["at"]),
                                str(record["kind"]), number)
            except (ValueError, KeyError, TypeError):
                bad.append((number, "is not an anchor"))
                continue
            if not hmac.compare_digest(str(record.get("sig", "")), keys.sign(record)):
                bad.append((number, "has a bad signature (forged, or signed with another key)"))
                continue
            good.append(anchor)
    return good, bad
