"""The supervisor: real model server processes started through the job executors (plain
subprocesses in insecure mode; bubblewrap where the sandbox runs), killed with real signals,
restarted, unloaded when idle, and never left behind. Classification runs the real MiniLM
classifier; generation, where a test needs a slow answer to catch in flight, the stand-in LM of
test_process.py (the real server program, with the model swapped)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tunelab.jobs.executors import LocalExecutor, SandboxExecutor
from tunelab.security.storage import SEALED, seal_folder
from tunelab.serving.errors import ServerUnavailable
from tunelab.serving.supervisor import DeploymentPlan, Supervisor
from tunelab.settings import Settings

from sysdeps import require_sandbox

from .classifier_fixtures import LABELS, sequence_artifact
from .test_process import fake_model, write_standin

TENANT = "tenant_a"


class StandinExecutor:
    """An executor that runs the stand-in server program instead of the real one (the same
    server main, the LM swapped), its script made readable."""

    def __init__(self, inner, script: Path):
        self.inner, self.script, self.name = inner, script, f"standin-{inner.name}"

    def start(self, spec_path, job_dir, env, *, readable=(), writable=(), gpus=0, program=None):
        assert program[1:3] == ["-m", "tunelab.serving.process"], program
        return self.inner.start(spec_path, job_dir, env | {"OMP_NUM_THREADS": "1"},
                                readable=[*readable, self.script.parent], writable=writable,
                                program=[sys.executable, str(self.script), str(spec_path)])


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def standin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin-program")
    return write_standin(folder), fake_model(folder / "model-a"), fake_model(folder / "model-b")


@pytest.fixture
def supervisor(home, standin):
    made = []

    def make(executor=None, **kw):
        sup = Supervisor(Settings(home=home, insecure_mode=True),
                         executor=executor or StandinExecutor(LocalExecutor(), standin[0]), **kw)
        made.append(sup)
        return sup
    yield make
    for sup in made:
        sup.close()
    assert server_processes() == []


def server_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "tunelab.serving.process" in " ".join(p.cmdline()) or "standin_server.py" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def plan(standin, **kw) -> DeploymentPlan:
    return DeploymentPlan(**{"id": "dep_test", "tenant_id": TENANT, "kind": "generate",
                             "models": {"ft:a": str(standin[1]), "ft:b": str(standin[2])}, **kw})


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run(coro):
    return asyncio.run(coro)


async def generate(sup, p, payload, wait=60.0):
    client = await sup.client(p, wait=wait)
    return await client.generate(payload)


def test_a_generate_deployment_answers_through_the_supervisor(supervisor, standin):
    sup, p = supervisor(), plan(standin, replicas=2)
    sup.ensure(p)
    assert sup.state(p.id)["state"] == "loading"

    async def scenario():
        client = await sup.client(p, wait=60)
        health = await client.health()
        whole = await client.generate({"model": "ft:a", "prompt": "x", "max_tokens": 3})
        lines = [item async for item in (await sup.client(p)).stream({"model": "ft:b", "prompt": "x", "max_tokens": 3})]
        return health, whole, lines
    health, whole, lines = run(scenario())
    assert health["models"] == ["ft:a", "ft:b"]
    assert whole["text"] == "ft:a-0 ft:a-1 ft:a-2 "
    assert "".join(i.get("text", "") for i in lines) == "ft:b-0 ft:b-1 ft:b-2 " and lines[-1]["done"]
    wait_for(lambda: sup.state(p.id)["state"] == "ready"
             and all(r["state"] == "ready" for r in sup.state(p.id)["replicas"]), 60, "both replicas")
    state = sup.state(p.id)
    assert state["error"] is None and state["loaded_at"] > 0 and len({r["pid"] for r in state["replicas"]}) == 2
    folder = home_of(sup) / "serving" / p.id
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    sup.stop(p.id)
    assert sup.state(p.id)["state"] == "stopped" and server_processes() == []


def home_of(sup) -> Path:
    return Path(sup.settings.home)


def test_a_killed_server_fails_its_requests_fast_and_is_restarted(supervisor, standin):
    sup, p = supervisor(), plan(standin)

    async def in_flight_then_kill() -> float:
        client = await sup.client(p, wait=60)
        pieces = client.stream({"model": "ft:a", "prompt": "slow", "max_tokens": 300})
        assert "text" in await pieces.__anext__()
        waiting = asyncio.create_task(client.generate({"model": "ft:b", "prompt": "slow", "max_tokens": 300}))
        await asyncio.sleep(0.3)
        os.kill(sup.state(p.id)["replicas"][0]["pid"], signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            async for _ in pieces:
                pass
        with pytest.raises(ServerUnavailable):
            await waiting
        return time.monotonic() - started
    assert run(in_flight_then_kill()) < 5
    answer = run(generate(sup, p, {"model": "ft:a", "prompt": "x", "max_tokens": 2}))
    assert answer["text"] == "ft:a-0 ft:a-1 "
    state = sup.state(p.id)
    assert state["state"] == "ready" and state["restarts"] == 1 and state["replicas"][0]["restarts"] == 1


def test_idle_deployment_is_unloaded_and_reloaded_on_the_next_request(supervisor, standin):
    sup, p = supervisor(), plan(standin, idle_seconds=1.0)
    assert run(generate(sup, p, {"model": "ft:a", "prompt": "x", "max_tokens": 1}))["text"] == "ft:a-0 "
    wait_for(lambda: sup.state(p.id)["state"] == "idle-unloaded", 15, "the idle unload")
    assert server_processes() == [] and sup.state(p.id)["replicas"][0]["pid"] is None
    assert run(generate(sup, p, {"model": "ft:b", "prompt": "x", "max_tokens": 1}))["text"] == "ft:b-0 "
    assert sup.state(p.id)["state"] == "ready" and sup.state(p.id)["restarts"] == 0


def test_a_running_request_keeps_the_deployment_loaded(supervisor, standin):
    sup, p = supervisor(), plan(standin, idle_seconds=0.5)
    answer = run(generate(sup, p, {"model": "ft:a", "prompt": "slow", "max_tokens": 15}))   # 1.5 s > idle
    assert answer["usage"]["completion_tokens"] == 15


def test_a_missing_model_folder_fails_at_once_with_a_clear_error(supervisor, standin, tmp_path):
    sup = supervisor()
    p = plan(standin, models={"ft:gone": str(tmp_path / "deleted-model")})
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match="do not exist.*deleted-model"):
        run(sup.client(p, wait=30))
    assert time.monotonic() - started < 5
    state = sup.state(p.id)
    assert state["state"] == "failed" and "deleted-model" in state["error"] and server_processes() == []


def test_a_server_that_cannot_start_fails_after_five_tries_with_its_log(supervisor, standin, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    sup = supervisor(restart_backoff=0.01)
    p = plan(standin, models={"ft:bad": str(not_a_model)})
    sup.ensure(p)
    wait_for(lambda: sup.state(p.id)["state"] == "failed", 60, "the deployment to fail")
    state = sup.state(p.id)
    assert "5 times in a row" in state["error"] and "has no manifest.json" in state["error"]
    assert state["replicas"][0]["restarts"] == 5 and server_processes() == []


def test_sealed_models_are_decrypted_only_until_the_server_is_ready(supervisor, standin, home, tmp_path):
    sealed = seal_folder(home, TENANT, fake_model(tmp_path / "secret-model"))
    assert sealed.name.endswith(SEALED)
    sup = supervisor()
    p = plan(standin, models={"ft:sealed": str(sealed)})
    assert run(generate(sup, p, {"model": "ft:sealed", "prompt": "x", "max_tokens": 1}))["text"] == "ft:sealed-0 "
    wait_for(lambda: not (home / "serving" / p.id / "models").exists(), 10, "the plaintext to be deleted")


def test_close_leaves_no_process(supervisor, standin):
    sup = supervisor()
    plans = [plan(standin, id="dep_one"), plan(standin, id="dep_two", replicas=2)]
    for p in plans:
        sup.ensure(p)
    for p in plans:
        run(sup.client(p, wait=60))
    pids = [r["pid"] for p in plans for r in sup.state(p.id)["replicas"] if r["pid"]]
    sup.ensure(plan(standin, id="dep_three"))           # still loading when closed
    wait_for(lambda: len(server_processes()) == 4, 10, "the fourth server process")
    started = time.monotonic()
    sup.close()
    assert time.monotonic() - started < 4              # asked to stop together, not one grace after another
    assert server_processes() == [] and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                                                for pid in pids)
    with pytest.raises(ServerUnavailable):
        sup.ensure(plans[0])


def test_a_classify_deployment_runs_the_real_server(supervisor, tmp_path):
    artifact = sequence_artifact(tmp_path / "clf")
    sup = supervisor(executor=LocalExecutor(), threads=1)
    p = DeploymentPlan(id="dep_clf", tenant_id=TENANT, kind="classify", models={"ft:clf": str(artifact)},
                       batch_window_ms=10)

    async def scenario():
        client = await sup.client(p, wait=120)
        return await asyncio.gather(*(client.classify("ft:clf", texts=[t]) for t in ["lost card", "top up", "hi"]))
    answers = run(scenario())
    assert [a["labels"] for a in answers] == [LABELS] * 3
    assert all(abs(sum(a["probs"][0]) - 1) < 1e-4 for a in answers)


def test_a_sandboxed_server_answers_over_its_socket_and_has_no_network(supervisor, standin, home):
    require_sandbox()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    p = plan(standin, id="dep_sandboxed")
    replica_folder = home / "serving" / p.id / "r0"
    replica_folder.mkdir(parents=True)
    (replica_folder / "probe-port").write_text(str(listener.getsockname()[1]))
    sup = supervisor(executor=StandinExecutor(SandboxExecutor(), standin[0]))
    try:
        answer = run(generate(sup, p, {"model": "ft:b", "prompt": "x", "max_tokens": 2}, wait=90))
    finally:
        listener.close()
    assert answer["text"] == "ft:b-0 ft:b-1 "
    probe = json.loads((replica_folder / "probe.json").read_text())
    assert probe == {"host_port": probe["host_port"], "internet": probe["internet"], "dns": probe["dns"]}
    assert "ALLOWED" not in probe.values(), probe
    assert accepted == []
    server = psutil.Process(sup.state(p.id)["replicas"][0]["pid"])
    assert "standin_server.py" in " ".join(server.cmdline())
    assert os.readlink(f"/proc/{server.pid}/ns/net") != os.readlink("/proc/self/ns/net")


@pytest.mark.parametrize("sandboxed", [True], ids=["sandbox"])
def test_a_real_language_model_answers_as_in_process(supervisor, stories260k, sandboxed):
    """stories260K served bare from its catalog-style folder: greedy answers, streamed or not, are
    the in-process MultiAdapterLM's, token for token, with exact usage."""
    from tunelab.models.generation_settings import GenerationSettings
    from tunelab.serving.lm_backend import Completion, MultiAdapterLM

    if sandboxed:
        require_sandbox()
    sup = supervisor(executor=SandboxExecutor() if sandboxed else LocalExecutor(), threads=1)
    p = DeploymentPlan(id=f"dep_lm_{sandboxed}", tenant_id=TENANT, kind="generate", base=str(stories260k),
                       base_name="stories260k")
    payload = {"model": "stories260k", "prompt": "Once upon a time", "max_tokens": 24}

    async def scenario():
        client = await sup.client(p, wait=120)
        whole = await client.generate(payload)
        lines = [item async for item in client.stream(payload)]
        return whole, lines
    whole, lines = run(scenario())
    local = MultiAdapterLM(stories260k, "stories260k")
    generation = local.start(Completion(model="stories260k", prompt=payload["prompt"],
                                        settings=GenerationSettings(max_new_tokens=24)))
    expected = generation.text()
    assert whole["text"] == expected and len(expected) > 20
    assert whole["usage"] == {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
                              "total_tokens": generation.prompt_tokens + generation.completion_tokens}
    assert "".join(item.get("text", "") for item in lines) == expected
    assert lines[-1] == {"done": True, "usage": whole["usage"], "finish_reason": whole["finish_reason"]}
