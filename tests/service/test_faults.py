"""Faults (issue 22, item 19): the database goes away and comes back, the disk under TUNELAB_HOME
fills up. The server says what is wrong (503 `database_unavailable` with Retry-After, 507
`insufficient_storage`), /healthz stays a liveness check while /readyz names the failing part,
the log holds a repeated error once with a count, and nothing half-written is kept.

Each test brings its own fault: a private PostgreSQL cluster it stops and starts again, a small
tmpfs mounted as TUNELAB_HOME."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from sysdeps import missing_dependency

from .server_proc import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


# ---- a private PostgreSQL cluster: scripts/pg-test-server starts it, pg_ctl stops it -------------
class Cluster:
    def __init__(self, folder: Path):
        self.dir = folder
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or ([shutil.which("pg_ctl")] if shutil.which("pg_ctl") else [])
        if not bins:
            missing_dependency("PostgreSQL (pg_ctl)", "Run `scripts/system-deps test`.")
        self.pg_ctl, self.port = bins[-1], None

    def start(self) -> str:
        args = [str(ROOT / "scripts/pg-test-server"), "start", "--dir", str(self.dir)]
        if self.port:
            args += ["--port", str(self.port)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
        self.port = int((self.dir / "port").read_text())
        return out.split("TUNELAB_TEST_POSTGRES_URL=", 1)[1].split()[0].strip("'\"")

    def stop(self) -> None:           # keeps the data: `start` brings the same cluster back
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_owner, self.pg_ctl, "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"],
                       cwd=self.dir, capture_output=True, timeout=60, check=True)

    def remove(self) -> None:
        subprocess.run([str(ROOT / "scripts/pg-test-server"), "stop", "--dir", str(self.dir)], capture_output=True,
                       timeout=60)


@pytest.fixture
def cluster():
    # Not under pytest's tmp folder: its parents are private to root, and the cluster runs as postgres.
    c = Cluster(Path(tempfile.mkdtemp(prefix="tunelab-faults-pg.")))
    base = c.start()
    import psycopg

    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "tl_faults"')
    c.url = base.rsplit("/", 1)[0] + "/tl_faults"
    yield c
    c.remove()


def _log_lines(server: ServerProcess) -> list[dict]:
    out = []
    for line in (server.home / f"server-{server.port}.log").read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({"raw": line})
    return out


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_database_outage_answers_503_and_the_server_recovers(cluster, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("faults-srv"), cluster.url, log_repeat_window_seconds=3).start()
    try:
        tenant = srv.create_tenant("outage")
        with srv.client(tenant["api_key"]) as c:
            assert c.get("/api/v1/datasets").status_code == 200
            assert httpx.get(srv.url + "/readyz").status_code == 200

            cluster.stop()
            answers = [c.get("/api/v1/datasets") for _ in range(25)]
            answers += [c.post("/api/v1/jobs", json={"dataset_id": "file-x", "strategy": "zero-shot"})
                        for _ in range(10)]
            for r in answers:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "database_unavailable"
                assert int(r.headers["Retry-After"]) > 0
            live = httpx.get(srv.url + "/healthz")
            assert live.status_code == 200                     # alive: do not restart it
            ready = httpx.get(srv.url + "/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["failing"], ready.text
            assert ready.json()["database"]["ok"] is False and ready.headers.get("Retry-After")
            time.sleep(3.5)              # the repeat window (3 s) ends: the next record carries the count

            cluster.start()
            _wait(lambda: httpx.get(srv.url + "/readyz").status_code == 200, 60, "/readyz 200 after the restart")
            assert c.get("/api/v1/datasets").status_code == 200
            assert c.post("/api/v1/api-keys", json={"name": "after"}).status_code in (200, 201)
    finally:
        srv.stop()
    lines = _log_lines(srv)
    firsts = [e for e in lines if e.get("msg") == "database unavailable"]
    counts = [e for e in lines if e.get("msg") == "database unavailable (repeated)"]
    assert firsts and len(firsts) <= 4, [e for e in firsts]        # once a window, not once a request
    assert counts and sum(e["repeated"] for e in counts) + len(firsts) >= len(answers), counts
    assert not any("exc" in e for e in firsts), "an outage is one line, not a traceback"
    errors = [e for e in lines if e.get("level") in ("error", "critical")]
    assert len(errors) <= 20, f"{len(errors)} error lines for one outage: {errors[:5]}"


# ---- a full disk under TUNELAB_HOME ---------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True,
                   capture_output=True, timeout=30)


def _umount(where: Path) -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "umount", str(where)], capture_output=True, timeout=30)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _csv(rows: int) -> bytes:
    return ("text,label\n" + "".join(f"message number {i} about topic {i % 3} padded,t{i % 3}\n"
                                     for i in range(rows))).encode()


def test_a_full_disk_refuses_uploads_cleanly_and_keeps_nothing(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults-disk")
    home, logs = base / "home", base / "logs"
    home.mkdir()
    _mount_tmpfs(home, "8m")
    try:
        # The database lives elsewhere: this test is about the home's files, not SQLite's.
        srv = ServerProcess(logs, f"sqlite:///{base / 'tunelab.db'}", worker=False)
        srv.env["TUNELAB_HOME"] = str(home)
        srv.start()
        try:
            tenant = srv.create_tenant("full")
            with srv.client(tenant["api_key"]) as c:
                assert c.post("/api/v1/datasets", files={"file": ("small.csv", _csv(200))}).status_code == 201
                free = shutil.disk_usage(home).free
                (home / "filler").write_bytes(b"\0" * max(0, free - 256 * 1024))
                before = _files(home)
                for name in ("big.csv", "big.jsonl"):
                    r = c.post("/api/v1/datasets", files={"file": (name, _csv(40_000))})   # ~2 MB
                    assert r.status_code == 507, r.text
                    assert r.json()["error"]["code"] == "insufficient_storage"
                    assert "storage is full" in r.json()["error"]["message"]
                assert _files(home) == before, _files(home) ^ before        # nothing half-written kept
                assert len(c.get("/api/v1/datasets").json()["data"]) == 1
                (home / "filler").unlink()                                 # space again: uploads work
                assert c.post("/api/v1/datasets", files={"file": ("big.csv", _csv(40_000))}).status_code == 201
        finally:
            srv.stop()
    finally:
        _umount(home)
