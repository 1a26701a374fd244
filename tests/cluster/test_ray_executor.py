"""Jobs on a Ray cluster: a real two-node cluster on this machine (a head that runs nothing and a
node with one CPU), token authentication on, no dashboard. A job submitted through the real
service runs on the node, inside the sandbox, and succeeds; the sandbox still has no network
there; a client without the cluster's token is refused; a job larger than any node is refused
with a message that says why; nothing of a job stays on the node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab.jobs.executors import ray_setup
from tunelab.jobs.executors.ray_node import STREAM_IN, extract_regular, rewrite, stream_cipher

from service.helpers import events, upload, wait_job
from service.server_proc import TUNELAB, ServerProcess

ray = pytest.importorskip("ray")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (0 CPUs: it runs no job) + one node (1 CPU), ~80 MB object stores, no dashboard."""
    from ray.cluster_utils import Cluster

    from sysdeps import require_sandbox

    require_sandbox()
    home = tmp_path_factory.mktemp("ray-home")
    node_dir = tmp_path_factory.mktemp("ray-node-jobs")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
                                            "TUNELAB_RAY_NODE_DIR", "RAY_USAGE_STATS_ENABLED")}
    env = ray_setup.auth_env(home, {"RAY_AUTH_TOKEN_PATH": str(ray_setup.ensure_token(home))})
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(TUNELAB_RAY_NODE_DIR=str(node_dir), RAY_USAGE_STATS_ENABLED="0")
    ray_setup.use_token(env)              # the nodes started here inherit it
    ip = ray_setup.node_address()
    args = dict(object_store_memory=80 * MB, include_dashboard=False, node_ip_address=ip)
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, **args))
    node = c.add_node(num_cpus=1, **args)
    c.wait_for_nodes()
    ray_setup.connect(c.address, home)
    try:
        yield {"cluster": c, "address": c.address, "node_id": node.node_id, "ip": ip, "home": home,
               "token": Path(env["RAY_AUTH_TOKEN_PATH"]), "node_dir": node_dir}
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from ray._raylet import Config

        Config.initialize("")


def leftovers(node_dir: Path) -> list[str]:
    return sorted(p.name for p in node_dir.iterdir())


# ---- the service, its worker on the cluster ------------------------------------------------
@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("srv-ray"), worker=False).start()
    log = open(srv.home / "worker.log", "ab")
    env = {**srv.env, "RAY_AUTH_TOKEN_PATH": str(cluster["token"]), "RAY_AUTH_MODE": "token"}
    worker = subprocess.Popen([*TUNELAB, "worker", "--executor", "ray", "--ray-address", cluster["address"]],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    srv.workers.append(worker)
    yield srv
    srv.stop()


def test_job_through_the_service_runs_on_the_node_and_succeeds(service, cluster, banking_subset):
    tenant = service.create_tenant("ray-tenant", "r@r.test")
    with service.client(tenant["api_key"]) as client:
        ds = upload(client, banking_subset[1])
        job = client.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot"}).json()
        done = wait_job(client, job["id"], timeout=300)
        assert done["status"] == "succeeded", (done, service.home.joinpath("worker.log").read_text()[-3000:])
        assert done["fine_tuned_model"]          # its artifact came back from the node and was sealed
        placed = [e["message"] for e in events(client, job["id"]) if "Ray node" in e["message"]]
        assert placed and cluster["node_id"][:12] in placed[0], placed
        placement = done["placement"]           # the API's field, as the worker recorded it
        assert placement["node_id"] == cluster["node_id"] and placement["executor"] == "ray", placement
        assert placement["node_ip"] == cluster["ip"] and placement["cpus"] == 1, placement
    assert leftovers(cluster["node_dir"]) == []  # inputs, outputs and home gone from the node


# ---- the sandbox on the node ---------------------------------------------------------------
PROBE = r'''
import json, os, socket, sys
gcs_host, gcs_port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"cwd": os.getcwd()}
def attempt(name, fn):
    try:
        fn(); out[name] = "ALLOWED"
    except Exception as exc:
        out[name] = type(exc).__name__
def connect(host, p):
    s = socket.create_connection((host, p), timeout=3); s.close()
attempt("connect_ray_gcs", lambda: connect(gcs_host, gcs_port))
attempt("connect_internet", lambda: connect("1.1.1.1", 443))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
attempt("read_cluster_token", lambda: open(token).read(1))
attempt("own_input", lambda: open(os.path.join(os.getcwd(), "inputs", "probe.py")).read(1))
out["env_ray"] = sorted(k for k in os.environ if k.startswith("RAY_") or "TOKEN" in k)
print(json.dumps(out))
'''


def run_on_node(job_dir: Path, program: list[str], processes: int = 1, timeout: float = 120):
    from tunelab.jobs.executors.ray_cluster import RayExecutor

    (job_dir / "spec.json").write_text(json.dumps({"job": {"processes": processes}}))
    execution = RayExecutor().start(job_dir / "spec.json", job_dir, dict(os.environ), program=program)
    deadline = time.time() + timeout
    while execution.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    return execution, execution.poll(), execution.lines()


def test_sandbox_has_no_network_on_the_node(cluster, tmp_path):
    job_dir = tmp_path / "ftjob-probe"
    (job_dir / "inputs").mkdir(parents=True)
    (job_dir / "inputs" / "probe.py").write_text(PROBE)
    host, port = cluster["address"].rsplit(":", 1)
    execution, code, lines = run_on_node(job_dir, [sys.executable, str(job_dir / "inputs" / "probe.py"), host, port,
                                                   str(cluster["token"])])
    assert code == 0, (lines, (job_dir / "job.log").read_text()[-2000:] if (job_dir / "job.log").exists() else "")
    out = json.loads(lines[-1])
    for attempt in ("connect_ray_gcs", "connect_internet", "dns", "read_cluster_token"):
        assert out[attempt] != "ALLOWED", out
    assert out["own_input"] == "ALLOWED" and out["env_ray"] == [], out
    assert out["cwd"].startswith(str(cluster["node_dir"])), out     # its node-local copy, not the worker's folder
    assert execution.placement["node_id"] == cluster["node_id"] and execution.placement["executor"] == "ray"
    assert leftovers(cluster["node_dir"]) == []


def test_a_job_larger_than_any_node_is_refused_with_the_reason(cluster, tmp_path):
    execution, code, lines = run_on_node(tmp_path, [sys.executable, "-c", "print(1)"], processes=2, timeout=10)
    error = json.loads(lines[-1])
    assert code == 4 and error["type"] == "error" and execution.placement is None
    assert "largest node has 1 CPU" in error["message"] and "cannot be spread over nodes" in error["message"]


def test_a_gpu_job_gets_a_gpu_node_and_only_its_gpu(cluster, tmp_path):
    """A node declaring one (fake) GPU: a job asking for one lands there and sees the GPU Ray gave
    it (CUDA_VISIBLE_DEVICES inside the sandbox); one asking for two is refused with the reason."""
    from tunelab.jobs.executors.ray_cluster import RayExecutor

    c = cluster["cluster"]
    gpu_node = c.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 * MB, node_ip_address=cluster["ip"])
    c.wait_for_nodes()
    try:
        (tmp_path / "spec.json").write_text(json.dumps({"job": {"processes": 1}}))
        show = [sys.executable, "-c", "import json, os; print(json.dumps({'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}))"]
        execution = RayExecutor().start(tmp_path / "spec.json", tmp_path, dict(os.environ), program=show, gpus=1)
        deadline = time.time() + 60
        while execution.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        lines = execution.lines()
        assert execution.poll() == 0, lines
        assert json.loads(lines[-1]) == {"cuda": "0"}
        assert execution.placement["node_id"] == gpu_node.node_id and execution.placement["gpu_ids"] == ["0"]
        assert execution.placement["devices"] == ["gpu:0"]
        refused = RayExecutor().start(tmp_path / "spec.json", tmp_path, dict(os.environ), program=show, gpus=2)
        message = json.loads(refused.lines()[-1])["message"]
        assert refused.poll() == 4 and "1 CPU(s) and 1 GPU(s)" in message, message
    finally:
        c.remove_node(gpu_node)
    assert leftovers(cluster["node_dir"]) == []


def test_a_stop_reaches_the_process_on_the_node(cluster, tmp_path):
    """terminate() (a cancel, credit out) goes to the job on the node; its folder still goes."""
    from tunelab.jobs.executors.ray_cluster import RayExecutor

    job_dir = tmp_path / "ftjob-stop"
    job_dir.mkdir()
    (job_dir / "spec.json").write_text(json.dumps({"job": {"processes": 1}}))
    program = [sys.executable, "-c", "import json, time; print(json.dumps({'type': 'log', 'message': 'up'}), "
               "flush=True); time.sleep(120)"]
    execution = RayExecutor().start(job_dir / "spec.json", job_dir, dict(os.environ), program=program)
    seen, deadline = [], time.time() + 60
    while not any("up" in line for line in seen) and time.time() < deadline:
        seen += execution.lines()
        time.sleep(0.1)
    assert any("up" in line for line in seen), seen
    t0 = time.time()
    execution.terminate()
    while execution.poll() is None and time.time() - t0 < 30:
        time.sleep(0.1)
    assert execution.poll() not in (None, 0) and time.time() - t0 < 30
    assert leftovers(cluster["node_dir"]) == []


def test_a_job_waits_for_a_free_node_and_a_cancel_stops_the_wait(cluster, tmp_path, monkeypatch):
    """The node's one CPU is taken: the next job waits (and says so); a stop while it waits ends it."""
    from tunelab.jobs.executors import ray_cluster

    monkeypatch.setattr(ray_cluster, "WAITING_NOTE_AFTER_S", 0.5)
    busy, waiting = tmp_path / "ftjob-busy", tmp_path / "ftjob-waits"
    for d in (busy, waiting):
        d.mkdir()
        (d / "spec.json").write_text(json.dumps({"job": {"processes": 1}}))
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    first = ray_cluster.RayExecutor().start(busy / "spec.json", busy, dict(os.environ), program=sleeper)
    try:
        while first.placement is None and first.poll() is None:
            time.sleep(0.1)
        second = ray_cluster.RayExecutor().start(waiting / "spec.json", waiting, dict(os.environ), program=sleeper)
        seen, deadline = [], time.time() + 30
        while not any("Waiting for a Ray node" in line for line in seen) and time.time() < deadline:
            seen += second.lines()
            time.sleep(0.1)
        assert any("Waiting for a Ray node with 1 free CPU" in line for line in seen), seen
        assert second.placement is None and second.poll() is None
        second.terminate()
        deadline = time.time() + 15
        while second.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert second.poll() == 5 and second.placement is None      # EXIT_STOPPED; it never ran
    finally:
        first.kill()
        deadline = time.time() + 30
        while first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
    assert first.poll() not in (None, 0)
    assert leftovers(cluster["node_dir"]) == []


DRIVER = r"""
import json, os, sys, time
from pathlib import Path
from tunelab.jobs.executors import ray_setup
from tunelab.jobs.executors.ray_cluster import RayExecutor
ray_setup.connect(sys.argv[1], Path(sys.argv[2]))
job_dir = Path(sys.argv[3])
execution = RayExecutor().start(job_dir / "spec.json", job_dir, dict(os.environ),
                                program=[sys.executable, "-c", "import time; time.sleep(300)", sys.argv[4]])
while execution.placement is None:
    time.sleep(0.1)
print("PLACED", flush=True)
time.sleep(300)
"""


def test_a_worker_killed_leaves_no_job_running_on_the_node(cluster, tmp_path):
    """SIGKILL of the worker (the Ray driver): Ray ends its actors, the sandboxed job dies with its
    runner, and the next job on the node removes the folder left behind."""
    import psutil

    marker = f"tunelab-orphan-check-{os.getpid()}"
    job_dir = tmp_path / "ftjob-orphan"
    job_dir.mkdir()
    (job_dir / "spec.json").write_text(json.dumps({"job": {"processes": 1}}))
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(cluster["token"]), "RAY_AUTH_MODE": "token"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster["address"], str(cluster["home"]), str(job_dir),
                               marker], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "PLACED"

        def running() -> list:
            return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
        deadline = time.time() + 30
        while not running() and time.time() < deadline:
            time.sleep(0.1)
        assert running() and leftovers(cluster["node_dir"])
    finally:
        driver.kill()
        driver.wait()
    deadline = time.time() + 60
    while running() and time.time() < deadline:
        time.sleep(0.2)
    assert running() == []
    run_on_node(tmp_path, [sys.executable, "-c", "print(1)"])          # the next job on that node sweeps
    assert leftovers(cluster["node_dir"]) == []


def test_folders_of_dead_runners_are_swept(tmp_path):
    from tunelab.jobs.executors.ray_node import sweep_orphans

    dead = subprocess.Popen(["true"])      # a pid that is gone
    dead.wait()
    (tmp_path / f"ftjob-x.{dead.pid}.abcd").mkdir()
    (tmp_path / f"ftjob-y.{os.getpid()}.abcd").mkdir()
    assert sweep_orphans(tmp_path) == [f"ftjob-x.{dead.pid}.abcd"]
    assert leftovers(tmp_path) == [f"ftjob-y.{os.getpid()}.abcd"]


# ---- who may talk to the cluster -------------------------------------------------------------
UNAUTHENTICATED = r"""
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=5)
    print("CALL-OK")
except Exception as exc:
    print("CALL-FAILED", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("who", ["no token (auth off)", "wrong token", "the cluster's token"])
def test_only_a_client_with_the_token_is_served(cluster, who, tmp_path):
    """A raw GCS client (what every Ray client and node speaks first), with and without the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path),
                                                                              "RAY_gcs_rpc_server_connect_timeout_s": "3"}
    env |= {"no token (auth off)": {"RAY_AUTH_MODE": "disabled"},
            "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
            "the cluster's token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster["token"])}}[who]
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", UNAUTHENTICATED, cluster["address"]], env=env, capture_output=True,
                       text=True, timeout=120)
    print(who, round(time.time() - t0, 1), r.stdout[-300:], r.stderr[-300:])
    if who == "the cluster's token":
        assert "CALL-OK" in r.stdout, (r.stdout[-1000:], r.stderr[-2000:])
    else:
        assert "CALL-OK" not in r.stdout and "Authentication token is missing or incorrect" in r.stdout + r.stderr, \
            (r.stdout[-1000:], r.stderr[-2000:])


def test_no_dashboard_nor_jobs_api(cluster):
    """With include_dashboard False Ray still starts its dashboard process, but with only its usage
    statistics module loaded (no job module: no Jobs API) and no web server: port 8265 is closed."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if any(part.endswith("dashboard/dashboard.py") for part in cmdline):
            assert "--modules-to-load=UsageStatsHead" in cmdline and "--disable-frontend" in cmdline, cmdline
    listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
    assert ":8265 " not in listening


# ---- set-up helpers, encryption ---------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["worker", "--executor", "ray"], "--executor ray needs --ray-address"),
    (["ray", "start-head", "--address", "0.0.0.0"], "would listen on every network"),
    (["ray", "join", "10.0.0.1:6379", "--address", "203.0.113.300"], "is not an IP address"),
    (["ray", "join", "10.0.0.1:6379", "--address", "10.0.0.2"], "no Ray cluster token"),
    (["ray", "start-head", "--address", "10.0.0.2", "--ray-option=--dashboard-host=0.0.0.0"],
     "tunelab sets this `ray start` option itself"),
])
def test_cli_refuses_an_insecure_or_incomplete_setup(argv, message, capsys, tmp_path, monkeypatch):
    from tunelab.cli.commands import main

    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path))
    monkeypatch.delenv("TUNELAB_RAY_ADDRESS", raising=False)
    for key in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err



@pytest.mark.parametrize("address, ok", [("0.0.0.0", False), ("::", False), ("8.8.8.8", False), ("not-an-ip", False),
                                         ("10.1.2.3", True), ("192.168.0.7", True), ("127.0.0.1", True)])
def test_node_address_is_private_never_unspecified(address, ok):
    if ok:
        assert ray_setup.node_address(address) == address
    else:
        with pytest.raises(ray_setup.RaySetupError):
            ray_setup.node_address(address)


def test_head_command_is_secure_by_default(tmp_path):
    argv = ray_setup.head_argv(ray_setup.NodeOptions("10.0.0.2", num_cpus=0))
    assert "--include-dashboard=false" in argv and "--node-ip-address=10.0.0.2" in argv and "--head" in argv
    path = ray_setup.ensure_token(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    assert path.read_text() not in " ".join(argv)
    env = ray_setup.auth_env(tmp_path, {})
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(path)
    with pytest.raises(ray_setup.RaySetupError):
        ray_setup.auth_env(tmp_path, {"RAY_AUTH_MODE": "disabled"})
    path.chmod(0o644)
    with pytest.raises(ray_setup.RaySetupError, match="chmod 600"):
        ray_setup.auth_env(tmp_path, {})


def test_payload_is_encrypted_and_bound_to_its_job(tmp_path):
    import io
    import tarfile

    raw = io.BytesIO()
    key = os.urandom(32)
    writer = stream_cipher(key, "ftjob-a", STREAM_IN).encryptor(raw)
    secret = b"tenant text: my card was stolen"
    with tarfile.open(fileobj=writer, mode="w|") as tf:
        info = tarfile.TarInfo("job/inputs/train.csv")
        info.size = len(secret)
        tf.addfile(info, io.BytesIO(secret))
    writer.close()
    assert secret not in raw.getvalue()
    extract_regular(stream_cipher(key, "ftjob-a", STREAM_IN).reader(io.BytesIO(raw.getvalue())), tmp_path / "ok")
    assert (tmp_path / "ok" / "job" / "inputs" / "train.csv").read_bytes() == secret
    with pytest.raises(Exception):       # another job's stream (or another key) does not decrypt
        extract_regular(stream_cipher(key, "ftjob-b", STREAM_IN).reader(io.BytesIO(raw.getvalue())), tmp_path / "no")


def test_spec_paths_move_to_the_node_folder():
    spec = {"job": {"model": "/h/tenants/t/models/abc"}, "train_file": "/h/jobs/t/j/inputs/train.csv",
            "work_dir": "/h/jobs/t/j/work", "other": "/h/jobs/t/jx/not-ours", "n": 3}
    moved = rewrite(spec, [("/h/jobs/t/j", "/n/job"), ("/h/tenants/t/models/abc", "/n/readable/0")])
    assert moved == {"job": {"model": "/n/readable/0"}, "train_file": "/n/job/inputs/train.csv",
                     "work_dir": "/n/job/work", "other": "/h/jobs/t/jx/not-ours", "n": 3}
