"""Sealed models are encrypted in segments (STREAM): decrypting or downloading a 100 MB model
holds about one segment in memory, not the model; reordering, truncating, appending or editing
segments fails authentication; files sealed in the old single-blob format still open; and a
server decrypts only so many downloads at once (429 with Retry-After beyond)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tarfile
import threading
import time
import tracemalloc

import httpx
import pytest
from cryptography.exceptions import InvalidTag

from tunelab.security import storage
from tunelab.security.crypto import Cipher, TenantKeys, plaintext_size

from service.helpers import upload, wait_job
from service.server_proc import ServerProcess

SQLITE_ONLY = True   # the subject is files and memory, not the database
MB = 1 << 20


def _pattern(i: int) -> bytes:
    """1 MiB that differs from one index to the next (cheap, deterministic)."""
    return hashlib.sha256(i.to_bytes(8, "big")).digest() * (MB // 32)


def _write_sealed(cipher: Cipher, path, megabytes: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as raw, cipher.encryptor(raw) as enc:
        for i in range(megabytes):
            chunk = _pattern(i)
            digest.update(chunk)
            enc.write(chunk)
    return digest.hexdigest()


def test_decrypting_100_mb_holds_about_one_segment(tmp_path):
    cipher = Cipher(os.urandom(32), "ten_stream")
    path = tmp_path / "big.tar.enc"
    want = _write_sealed(cipher, path, 100)
    assert plaintext_size(path) == 100 * MB
    digest = hashlib.sha256()
    tracemalloc.start()
    with open(path, "rb") as src:
        for chunk in cipher.decrypt_stream(src):
            digest.update(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert digest.hexdigest() == want
    assert peak < 8 * MB, f"peak {peak / MB:.1f} MiB while decrypting 100 MiB"


def _segments(blob: bytes, segment: int) -> tuple[bytes, list[bytes]]:
    head, body, size = blob[:16], blob[16:], segment + 16
    return head, [body[i:i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("attack", ["reorder", "drop_last", "drop_first", "truncate_mid", "append",
                                    "duplicate", "flip_byte", "header_segment_size", "other_tenant"])
def test_tampered_segments_fail_authentication(attack):
    key = os.urandom(32)
    cipher, segment = Cipher(key, "ten_a"), 1024
    out = io.BytesIO()
    with cipher.encryptor(out, segment=segment) as enc:
        enc.write(os.urandom(5 * segment + 100))
    blob = out.getvalue()
    head, segs = _segments(blob, segment)
    assert len(segs) == 6
    forged = {
        "reorder": lambda: head + b"".join([segs[0], segs[2], segs[1], *segs[3:]]),
        "drop_last": lambda: head + b"".join(segs[:-1]),
        "drop_first": lambda: head + b"".join(segs[1:]),
        "truncate_mid": lambda: blob[:-50],
        "append": lambda: blob + segs[2],
        "duplicate": lambda: head + b"".join([segs[0], segs[0], *segs[1:]]),
        "flip_byte": lambda: blob[:100] + bytes([blob[100] ^ 1]) + blob[101:],
        "header_segment_size": lambda: head[:4] + struct.pack(">I", segment + 1) + head[8:] + b"".join(segs),
        "other_tenant": lambda: blob,
    }[attack]()
    reader = Cipher(key, "ten_b") if attack == "other_tenant" else cipher
    with pytest.raises(InvalidTag):
        b"".join(reader.decrypt_stream(io.BytesIO(forged)))


def test_files_sealed_in_the_old_single_blob_format_still_open(tmp_path):
    home, tid = tmp_path / "home", "ten_old"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"old": true}')
    (folder / "weights.bin").write_bytes(os.urandom(3 * MB))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:         # how seal_folder wrote them before
        tf.add(folder, arcname=".")
    sealed = tmp_path / "old.tar.enc"
    sealed.write_bytes(TenantKeys(home).cipher(tid).encrypt(buf.getvalue()))
    assert sealed.read_bytes()[:4] == b"TLE1" and plaintext_size(sealed) is None
    assert storage.read_sealed_file(home, tid, sealed, "manifest.json") == b'{"old": true}'
    assert b"".join(storage.decrypted_chunks(home, tid, sealed)) == buf.getvalue()
    opened = storage.open_sealed(home, tid, sealed, tmp_path / "out")
    assert (opened / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()


# ---- through the server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("streaming"), max_concurrent_downloads=1).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def big_model(server, client_a, tenant_a, banking_subset):
    """A tuned model whose sealed file is then replaced by a 100 MiB one (sealed with the
    tenant's own key, as the worker seals): what a large fine-tuned model's download costs."""
    ds = upload(client_a, banking_subset[0])
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe"}).json()
    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", done
    sealed = next((server.home / "jobs" / tenant_a["tenant_id"]).rglob("*.tar.enc"))
    tmp = sealed.with_name("big.tmp")
    want = _write_sealed(TenantKeys(server.home).cipher(tenant_a["tenant_id"]), tmp, 100)
    tmp.replace(sealed)
    return {"id": done["fine_tuned_model"], "sha256": want}


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.slow
def test_a_100_mb_download_is_streamed_not_held_in_memory(server, client_a, big_model):
    pid, peak, done = server.proc.pid, [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.01)
    base = _rss(pid)
    watcher = threading.Thread(target=sample)
    watcher.start()
    digest, size = hashlib.sha256(), 0
    try:
        with client_a.stream("GET", f"/api/v1/models/{big_model['id']}/download") as r:
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == 100 * MB
            for chunk in r.iter_bytes():
                digest.update(chunk)
                size += len(chunk)
    finally:
        done.set()
        watcher.join()
    assert size == 100 * MB and digest.hexdigest() == big_model["sha256"]
    grew = (peak[0] - base) / MB
    print(f"server RSS {base / MB:.0f} MiB before, peak {peak[0] / MB:.0f} MiB during a 100 MiB download")
    # Before: the ciphertext and the plaintext both whole in memory, about +200 MiB.
    assert grew < 50, f"the server grew by {grew:.0f} MiB serving a 100 MiB download"


@pytest.mark.slow
def test_downloads_beyond_the_limit_get_429_then_the_slot_comes_back(server, client_a, big_model):
    url = f"/api/v1/models/{big_model['id']}/download"
    with httpx.Client(base_url=server.url, headers=client_a.headers, timeout=60) as other:
        with client_a.stream("GET", url) as first:
            assert first.status_code == 200
            chunks = first.iter_bytes()                   # kept: a dropped iterator closes the connection
            next(chunks)                                  # the first is under way, then stalls
            busy = other.get(url)
            assert busy.status_code == 429, busy.text
            assert busy.json()["error"]["code"] == "too_many_downloads" and int(busy.headers["retry-after"]) > 0
            assert other.get(f"/api/v1/models/{big_model['id']}/artifact").status_code == 429
            del chunks
        deadline = time.time() + 30                       # the client went away: its slot is freed
        while time.time() < deadline:
            with other.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            time.sleep(0.5)
        assert again.status_code == 200
