"""A job is sandboxed: run a hostile program exactly where and how the worker runs a tenant's job
(same bubblewrap binds, environment and limits) and watch every attack fail."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tunelab.jobs.executors import SandboxExecutor, sandbox_problem
from tunelab.jobs.worker import child_env, tenant_runtime
from tunelab.settings import Settings

from service.helpers import upload

SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py

PROBE = r'''
import json, os, socket, sys
port, paths, job_dir = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ALLOWED"
    except Exception as exc:
        out[name] = type(exc).__name__
def connect(host, p):
    s = socket.create_connection((host, p), timeout=3); s.close()
attempt("connect_server_port", lambda: connect("127.0.0.1", port))
attempt("connect_internet", lambda: connect("1.1.1.1", 443))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
for name, path in paths.items():
    attempt("read_" + name, lambda path=path: open(path, "rb").read(1))
out["visible_under_home"] = sorted(os.path.join(d, f) for d, _, fs in os.walk(paths["home"]) for f in fs)
attempt("write_system", lambda: open("/usr/pwned", "w").write("x"))
attempt("write_code", lambda: open(os.path.join(os.path.dirname(json.__file__), "pwned.py"), "w").write("x"))
attempt("own_input", lambda: open(paths["own_dataset_ok"], "rb").read(1))
attempt("write_own_job_dir", lambda: open(os.path.join(job_dir, "ok.txt"), "w").write("x"))
out["env_secrets"] = sorted(k for k in os.environ if any(m in k.upper() for m in ("DATABASE", "SECRET", "KEY", "TOKEN", "PASSWORD")))
print(json.dumps(out))
'''


def test_sandbox_is_available_here():
    assert sandbox_problem() is None, f"jobs must run sandboxed in CI: {sandbox_problem()}"


@pytest.fixture(scope="module")
def attack(server, client_a, client_b, tenant_a, banking_subset, tmp_path_factory):
    home = server.home

    def stored_files() -> set:
        return {p for p in (home / "tenants").glob("*/datasets/objects/*/*/*") if p.name != "meta.json"}
    before = stored_files()
    upload(client_a, banking_subset[0])
    (own,) = stored_files() - before
    before = stored_files()
    upload(client_b, banking_subset[1])
    (other,) = stored_files() - before
    settings = Settings(home=home)
    job_dir = home / "jobs" / tenant_a["tenant_id"] / "ftjob-probe"
    job_dir.mkdir(parents=True)
    runtime = tenant_runtime(settings, tenant_a["tenant_id"])
    probe = job_dir / "probe.py"
    probe.write_text(PROBE)
    (home / "master.key").write_text("not-a-real-key")       # where a key file would sit
    paths = {"other_tenant_dataset": str(other), "database": str(home / "tunelab.db"),
             "master_key": str(home / "master.key"), "home": str(home), "etc_shadow": "/etc/shadow",
             "root_home": os.path.expanduser("~/.bash_history"), "own_dataset_ok": str(own)}
    env = child_env() | {"TUNELAB_HOME": str(runtime), "TUNELAB_DATABASE_URL": "postgresql://leak", "OPENAI_API_KEY": "sk-leak"}
    execution = SandboxExecutor().start(job_dir / "spec.json", job_dir, env, readable=[own],
                                        writable=[runtime],
                                        program=[sys.executable, str(probe), str(server.port), json.dumps(paths), str(job_dir)])
    deadline = time.time() + 120
    while execution.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    lines = execution.lines()
    assert execution.poll() == 0, (job_dir / "job.log").read_text()[-2000:]
    return json.loads(lines[-1])


@pytest.mark.parametrize("attempt", ["connect_server_port", "connect_internet", "dns", "read_other_tenant_dataset",
                                     "read_database", "read_master_key", "read_etc_shadow",
                                     "read_root_home", "write_system", "write_code"])
def test_job_attack_fails(attack, attempt):
    assert attack[attempt] != "ALLOWED", attack


def test_job_sees_nothing_of_home_but_its_own(attack, server, tenant_a):
    """Only the job's own folder, its tenant's runtime folder and its own input are mounted."""
    own = [str(server.home / "jobs" / tenant_a["tenant_id"] / "ftjob-probe"),
           str(server.home / "tenants" / tenant_a["tenant_id"] / "runtime"),
           attack_inputs[0] if (attack_inputs := [p for p in attack["visible_under_home"] if "/objects/" in p]) else ""]
    strays = [p for p in attack["visible_under_home"] if not any(o and p.startswith(o) for o in own)]
    assert strays == [], strays
    assert len([p for p in attack["visible_under_home"] if "/objects/" in p]) == 1     # its own dataset only


def test_job_can_do_its_own_work(attack):
    assert attack["own_input"] == "ALLOWED" and attack["write_own_job_dir"] == "ALLOWED", attack


def test_no_secret_in_a_jobs_environment(attack):
    assert attack["env_secrets"] == [], attack


def test_no_secret_in_server_logs(server, tenant_a, tenant_b, client_a):
    client_a.get("/api/v1/tenants/me")
    log = Path(server.home / f"server-{server.port}.log").read_text(errors="replace")
    for key in (tenant_a["api_key"], tenant_b["api_key"]):
        assert key not in log and key.split(".")[1] not in log
