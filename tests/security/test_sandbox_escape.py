"""A job that gained code execution inside its sandbox attacks the worker: it plants links in its
own folder (its spec, its log, its inputs, its artifact) towards canaries outside it, prints a
host folder as its artifact, and tries the kernel's escape hatches (ptrace, mount, namespaces,
the keyring, capabilities). A real worker runs it, in the real sandbox, against a real server's
database; every canary must stay unread, unwritten and undeleted, and every hatch shut."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from tunelab.db import Database
from tunelab.db.models import Job, JobEvent, TunedModel
from tunelab.jobs.executors import Limits, SandboxExecutor
from tunelab.jobs.executors import gpus as gpu_nodes
from tunelab.jobs.worker import Worker, child_env
from tunelab.security.storage import cipher
from tunelab.settings import Settings

from service.helpers import upload
from service.server_proc import ServerProcess

SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py

# The hostile "job": attempt 1 replaces spec.json, job.log and inputs/ by links to canaries and
# fails (so the worker retries and writes them again); attempt 2 makes its artifact folder a link
# to a host folder and prints that folder as its artifact.
RETRY_ATTACK = r'''
import json, os, shutil, sys
c = json.loads(sys.argv[1])
if not os.path.exists("stage1"):
    open("stage1", "w").close()
    for name, target in (("spec.json", c["spec_file"]), ("job.log", c["log_file"])):
        os.unlink(name); os.symlink(target, name)
    shutil.rmtree("inputs"); os.symlink(c["inputs_dir"], "inputs")
    print(json.dumps({"type": "error", "code": "internal_error", "message": "planted"}), flush=True)
    sys.exit(1)
print("attempt 2 writes to its log", file=sys.stderr, flush=True)
os.symlink(c["secret_dir"], "artifact")
print(json.dumps({"type": "phase", "phase": "running", "train_rows": 1, "validation_rows": 1, "test_rows": 1}),
      flush=True)
print(json.dumps({"type": "result", "kind": "train", "strategy": "linear-probe", "metrics": {},
                  "artifacts": {"linear-probe": c["secret_dir"]}}), flush=True)
'''

# A real artifact folder with links, a FIFO and a hard link planted in it, and a host folder
# printed as the artifact's path.
PLANTED_ARTIFACT = r'''
import json, os, sys
c = json.loads(sys.argv[1])
os.makedirs("artifact/sub")
open("artifact/model.txt", "w").write("MODEL-BYTES")
os.symlink(c["secret_file"], "artifact/secret_link")
os.symlink(c["secret_dir"], "artifact/sub/dir_link")
os.mkfifo("artifact/fifo")
open("own.txt", "w").write("own"); os.link("own.txt", "artifact/hard_link")
print(json.dumps({"type": "phase", "phase": "running", "train_rows": 1, "validation_rows": 1, "test_rows": 1}),
      flush=True)
print(json.dumps({"type": "result", "kind": "train", "strategy": "linear-probe", "metrics": {},
                  "artifacts": {"linear-probe": c["secret_dir"]}}), flush=True)
'''


class HostileExecutor(SandboxExecutor):
    """The worker's own sandbox, running a hostile program in place of the job process."""

    def __init__(self, program: list[str]):
        super().__init__()
        self.program = program

    def start(self, spec_path, job_dir, env, **kw):
        return super().start(spec_path, job_dir, env, program=self.program, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """No worker in the server: the test's worker is the only one claiming jobs."""
    srv = ServerProcess(tmp_path_factory.mktemp("srv-escape"), worker=False).start()
    yield srv
    srv.stop()


@pytest.fixture
def canaries(tmp_path) -> dict:
    """Host files and folders outside TUNELAB_HOME, with what they hold now."""
    secret = f"CANARY-SECRET-{uuid.uuid4().hex}"
    (tmp_path / "secret_dir").mkdir()
    (tmp_path / "secret_dir" / "secret.txt").write_text(secret)
    (tmp_path / "inputs_dir").mkdir()
    (tmp_path / "inputs_dir" / "keep.txt").write_text("keep")
    (tmp_path / "spec_file.txt").write_text("CANARY-SPEC")
    (tmp_path / "log_file.txt").write_text("CANARY-LOG")
    (tmp_path / "secret_file.txt").write_text(secret)
    return {"secret": secret, "secret_dir": str(tmp_path / "secret_dir"), "inputs_dir": str(tmp_path / "inputs_dir"),
            "spec_file": str(tmp_path / "spec_file.txt"), "log_file": str(tmp_path / "log_file.txt"),
            "secret_file": str(tmp_path / "secret_file.txt")}


def _snapshot(c: dict) -> dict:
    """Every canary's bytes ("deleted" for one gone), every canary folder's files."""
    folders = {c[k]: sorted(p.name for p in Path(c[k]).iterdir()) if Path(c[k]).is_dir() else "deleted"
               for k in ("secret_dir", "inputs_dir")}
    files = [c[k] for k in ("spec_file", "log_file", "secret_file")] + \
        [str(Path(c["secret_dir"]) / "secret.txt"), str(Path(c["inputs_dir"]) / "keep.txt")]
    return folders | {f: Path(f).read_bytes()[:200] if Path(f).is_file() else "deleted" for f in files}


def _run_job(server, client, dataset_path: Path, code: str, c: dict) -> str:
    """A job created through the API, claimed and run by a real worker until it ends."""
    ds = upload(client, dataset_path)
    job = client.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe"}).json()
    settings = Settings(home=server.home)
    worker = Worker(settings, Database(settings.db_url),
                    HostileExecutor([sys.executable, "-c", code, json.dumps(c)]))
    deadline = time.time() + 300
    while time.time() < deadline:
        worker.run_once()
        if client.get(f"/api/v1/jobs/{job['id']}").json()["status"] in ("succeeded", "failed", "cancelled"):
            return job["id"]
    raise AssertionError(f"job {job['id']} did not end")


def _sealed_members(home: Path, tenant_id: str, sealed: Path) -> dict[str, bytes]:
    data = cipher(home, tenant_id).decrypt(sealed.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isfile() else m.type) for m in tf.getmembers()}


def _models_and_events(home: Path, job_id: str):
    db = Database(Settings(home=home).db_url)
    with db.session() as s:
        job = s.get(Job, job_id)
        models = [(m.artifact_path, m.tenant_id) for m in s.query(TunedModel).filter(TunedModel.job_id == job_id)]
        events = [e.message for e in s.query(JobEvent).filter(JobEvent.job_id == job_id)]
        return job.status, job.error_code, job.result, models, events


def test_links_planted_between_attempts_and_a_printed_host_path_reach_nothing(server, client_a, tenant_a,
                                                                              banking_subset, canaries):
    before = _snapshot(canaries)
    job_id = _run_job(server, client_a, banking_subset[0], RETRY_ATTACK, canaries)
    status, code, _, models, events = _models_and_events(server.home, job_id)
    assert _snapshot(canaries) == before                   # nothing overwritten, appended, added or deleted
    for artifact_path, tenant in models:                    # and nothing of it sealed into the tenant's model
        assert canaries["secret"].encode() not in b"".join(
            v for v in _sealed_members(server.home, tenant, Path(artifact_path)).values() if isinstance(v, bytes))
    assert (status, code, models) == ("failed", "invalid_artifact", []), events
    job_dir = server.home / "jobs" / tenant_a["tenant_id"] / job_id
    assert not (job_dir / "inputs").exists() and not (job_dir / "inputs").is_symlink()   # removed, not followed


def test_an_artifact_keeps_its_regular_files_only(server, client_a, tenant_a, banking_subset, canaries):
    before = _snapshot(canaries)
    job_id = _run_job(server, client_a, banking_subset[0], PLANTED_ARTIFACT, canaries)
    status, code, result, models, events = _models_and_events(server.home, job_id)
    assert _snapshot(canaries) == before
    assert status == "succeeded", events
    ((artifact_path, tenant),) = models
    job_dir = server.home / "jobs" / tenant_a["tenant_id"] / job_id
    assert Path(artifact_path) == job_dir / "artifact.tar.enc"           # where the worker put it
    assert result["artifacts"] == {"linear-probe": artifact_path}      # not the path the job printed
    members = _sealed_members(server.home, tenant, Path(artifact_path))
    assert members == {".": tarfile.DIRTYPE, "./sub": tarfile.DIRTYPE, "./model.txt": b"MODEL-BYTES"}, members
    assert any("secret_link: a symbolic link" in e and "fifo: a FIFO" in e and "hard_link" in e for e in events), events


# ---- item 17: the kernel's escape hatches, the limits ------------------------------------------
HATCHES = r'''
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def call(name, fn):
    rc = fn(); out[name] = "ALLOWED" if rc == 0 or (name == "ptrace_attach" and rc >= 0) else errno.errorcode.get(ctypes.get_errno(), "?")
child = os.fork()
if child == 0:
    import time; time.sleep(30); os._exit(0)
call("ptrace_attach", lambda: libc.ptrace(16, child, 0, 0))             # PTRACE_ATTACH
call("ptrace_traceme", lambda: libc.ptrace(0, 0, 0, 0))                # PTRACE_TRACEME
call("unshare_user", lambda: libc.unshare(0x10000000))
call("unshare_mount", lambda: libc.unshare(0x00020000))
call("mount_tmpfs", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
call("keyctl", lambda: libc.syscall(250, 1, 0, 0, 0, 0))              # keyctl(KEYCTL_JOIN_SESSION_KEYRING)
call("bpf", lambda: libc.syscall(321, 0, 0, 0))
call("userfaultfd", lambda: libc.syscall(323, 0))
os.kill(child, 9); os.waitpid(child, 0)
out["cap_eff"] = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff"))
out["nvidia"] = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
import threading; t = threading.Thread(target=lambda: None); t.start(); t.join(); out["threads"] = "ok"
print(json.dumps(out), flush=True)
'''


def _run_probe(tmp_path: Path, code: str, limits: Limits | None = None, args: list[str] = (), timeout: float = 120):
    job_dir = tmp_path / "job"
    job_dir.mkdir(exist_ok=True)
    runtime = tmp_path / "runtime"
    runtime.mkdir(exist_ok=True)
    execution = SandboxExecutor(limits).start(job_dir / "spec.json", job_dir, child_env() | {"TUNELAB_HOME": str(runtime)},
                                              writable=[runtime], program=[sys.executable, "-c", code, *args])
    deadline = time.time() + timeout
    while execution.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    return execution, execution.lines(), job_dir


@pytest.mark.parametrize("hatch", ["ptrace_attach", "ptrace_traceme", "unshare_user", "unshare_mount", "mount_tmpfs",
                                   "keyctl", "bpf", "userfaultfd"])
def test_kernel_escape_hatches_are_shut(tmp_path, hatch):
    execution, lines, job_dir = _run_probe(tmp_path, HATCHES)
    assert execution.poll() == 0, (job_dir / "job.log").read_text()[-2000:]
    out = json.loads(lines[-1])
    assert out[hatch] != "ALLOWED", out
    assert out["cap_eff"] == "0000000000000000" and out["threads"] == "ok", out


def test_a_job_without_a_gpu_sees_no_nvidia_device(tmp_path):
    execution, lines, _ = _run_probe(tmp_path, HATCHES)
    assert json.loads(lines[-1])["nvidia"] == []


def test_only_the_reserved_gpus_are_passed(tmp_path):
    """Four boards as the NVIDIA driver lists them; the worker pinned to GPUs 2,3; a job holding one."""
    proc, dev = tmp_path / "gpus", tmp_path / "dev"
    dev.mkdir()
    for i, bus in enumerate(["0000:1a:00.0", "0000:3b:00.0", "0000:5e:00.0", "0000:86:00.0"]):
        (proc / bus).mkdir(parents=True)
        (proc / bus / "information").write_text(f"Model: H200\nGPU UUID: GPU-{i}{i}aa\nDevice Minor: {3 - i}\n")
        (dev / f"nvidia{i}").touch()
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (dev / name).touch()
    picked = gpu_nodes.reserved(1, "2,3", str(proc), str(dev))
    assert picked.devices == [f"{dev}/nvidia1", f"{dev}/nvidiactl", f"{dev}/nvidia-uvm"]
    assert picked.proc_boards == [f"{proc}/0000:5e:00.0"]
    assert gpu_nodes.reserved(2, "GPU-33", str(proc), str(dev)).devices[0] == f"{dev}/nvidia0"
    assert gpu_nodes.reserved(0, None, str(proc), str(dev)).devices == []


DISK_HOG = r'''
import os, time
for i in range(400):                       # 400 files of 1 MB, each under the per-file limit
    with open(f"hog-{i}.bin", "wb") as f:
        f.write(os.urandom(1 << 20))
    time.sleep(0.02)
print("wrote everything", flush=True)
'''

MEMORY_HOG = r'''
import os, time
for _ in range(3):                         # four processes of 150 MB each, each under RLIMIT_AS
    if os.fork() == 0:
        break
block = bytearray(150 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(60)
print("still here", flush=True)
'''


def test_disk_taken_by_many_files_stops_the_job(tmp_path):
    limits = Limits(disk_mb=50, watch_seconds=0.5)
    execution, lines, job_dir = _run_probe(tmp_path, DISK_HOG, limits)
    assert execution.poll() != 0 and "wrote everything" not in lines
    assert execution.violation and "disk" in execution.violation, execution.violation
    assert sum(p.stat().st_size for p in job_dir.glob("hog-*")) < 200 << 20


def test_memory_of_many_processes_together_stops_the_job(tmp_path):
    limits = Limits(memory_total_mb=400, watch_seconds=0.5)
    execution, lines, _ = _run_probe(tmp_path, MEMORY_HOG, limits, timeout=90)
    assert execution.poll() != 0 and "still here" not in lines
    assert execution.violation and "memory" in execution.violation, execution.violation


def test_tmp_is_bounded(tmp_path):
    code = "import os\ntry:\n    open('/tmp/big', 'wb').write(os.urandom(64 << 20)); print('ALLOWED')\nexcept OSError as e:\n    print(e.errno)"
    execution, lines, _ = _run_probe(tmp_path, code, Limits(tmp_mb=16))
    assert execution.poll() == 0 and lines[-1] != "ALLOWED", lines
