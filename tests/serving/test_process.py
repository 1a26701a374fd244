"""The model server process and its client: a real `python -m tunelab.serving.process` on a Unix
socket, real signals. Classification runs the real MiniLM classifier; generation runs a stand-in
language model (STANDIN below: a program that installs it, then runs the real server's main) where
a test needs a generation slow enough to be caught in flight, or a server that is not a model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab.serving.client import ServerClient
from tunelab.serving.config import ServedModel, ServerConfig
from tunelab.serving.errors import BadServingRequest, ServerBusy, ServerUnavailable, UnknownModel

from .classifier_fixtures import LABELS, TEXTS, sequence_artifact

# A stand-in for serving/lm_backend.py (same interface; each model "generates" "<name>-<i> " pieces,
# 0.1 s apart when the prompt starts with "slow"), then the real server. Optionally, first, a
# network probe whose findings go to probe.json in the server's folder (the sandbox test).
STANDIN = r'''
import json, os, socket, sys, time, types
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.models.generation_settings import GenerationSettings
from tunelab.serving.errors import BadServingRequest, UnknownModel

if os.environ.get("STANDIN_PROBE_PORT") or Path("probe-port").exists():
    port = int(os.environ.get("STANDIN_PROBE_PORT") or Path("probe-port").read_text())
    found = {}
    for name, addr in {"host_port": ("127.0.0.1", port), "internet": ("1.1.1.1", 443)}.items():
        try:
            socket.create_connection(addr, timeout=3).close(); found[name] = "ALLOWED"
        except Exception as exc:
            found[name] = type(exc).__name__
    try:
        socket.getaddrinfo("pypi.org", 443); found["dns"] = "ALLOWED"
    except Exception as exc:
        found["dns"] = type(exc).__name__
    Path("probe.json").write_text(json.dumps(found))

@dataclass
class Completion:
    model: str
    messages: list | None = None
    prompt: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)

class Generation:
    def __init__(self, model, n, delay):
        self.model, self.n, self.delay = model, n, delay
        self.prompt_tokens, self.completion_tokens, self.finish_reason = 3, 0, "length"
    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.delay)
            self.completion_tokens += 1
            yield f"{self.model}-{i} "
    def text(self):
        return "".join(self)

class MultiAdapterLM:
    def __init__(self, base, base_name=None, *, max_adapters=8):
        self.models = {base_name: base} if base_name else {}
    def add(self, name, folder, *, preload=False):
        if not (Path(folder) / "manifest.json").is_file():
            raise BadServingRequest(f"{folder} has no manifest.json")
        self.models[name] = folder
        return 0.01
    def remove(self, name):
        self.models.pop(name)
    def names(self):
        return list(self.models)
    def loaded(self):
        return list(self.models)
    def start(self, c):
        if c.model not in self.models:
            raise UnknownModel(f"no model {c.model}")
        slow = (c.prompt or "").startswith("slow")
        return Generation(c.model, c.settings.max_new_tokens, 0.1 if slow else 0.0)

module = types.ModuleType("tunelab.serving.lm_backend")
module.Completion, module.Generation, module.MultiAdapterLM = Completion, Generation, MultiAdapterLM
sys.modules["tunelab.serving.lm_backend"] = module

from tunelab.serving.process import main
main(sys.argv[1:])
'''


def write_standin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "standin_server.py"
    path.write_text(STANDIN)
    return path


def fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"kind": "standin"}))
    return folder


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


class Running:
    def __init__(self, proc: subprocess.Popen, client: ServerClient, log: Path):
        self.proc, self.client, self.log = proc, client, log

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start(config: ServerConfig, folder: Path, program: list[str], wait: float = 60) -> Running:
    config_path = folder / "server.json"
    config_path.write_text(config.to_json())
    log = folder / "server.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen([*program, str(config_path)], stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env=env(), cwd=folder, start_new_session=True)
    client = ServerClient(config.socket, timeout=30)
    deadline = time.monotonic() + wait
    while client.health_sync(0.5) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    return Running(proc, client, log)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin")
    script = write_standin(folder)
    models = [ServedModel("ft:a", str(fake_model(folder / "a"))), ServedModel("ft:b", str(fake_model(folder / "b")))]
    config = ServerConfig(socket=str(folder / "s.sock"), kind="generate", models=models, max_concurrent=2,
                          max_body_bytes=20_000)
    server = start(config, folder, [sys.executable, str(script)])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify")
    artifact = sequence_artifact(folder / "model")
    config = ServerConfig(socket=str(folder / "c.sock"), kind="classify", models=[ServedModel("ft:clf", str(artifact))],
                          batch_window_ms=20, threads=1, work=str(folder / "work"))
    server = start(config, folder, [sys.executable, "-m", "tunelab.serving.process"], wait=120)
    yield server, artifact
    server.stop()


def run(coro):
    return asyncio.run(coro)


async def collect(client: ServerClient, payload: dict) -> list[dict]:
    return [item async for item in client.stream(payload)]


def test_ready_line_and_health(standin):
    health = standin.client.health_sync()
    assert health["status"] == "ready" and health["kind"] == "generate"
    assert health["models"] == ["ft:a", "ft:b"] and health["pid"] == standin.proc.pid
    assert "tunelab model server ready" in standin.log.read_text()
    assert oct(os.stat(standin.client.socket).st_mode & 0o777) == "0o600"


def test_generate_streamed_equals_not_streamed(standin):
    payload = {"model": "ft:b", "prompt": "hello", "max_tokens": 5}
    whole = run(standin.client.generate(payload))
    lines = run(collect(standin.client, payload))
    assert whole["text"] == "ft:b-0 ft:b-1 ft:b-2 ft:b-3 ft:b-4 "
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert whole["finish_reason"] == "length"
    assert "".join(item.get("text", "") for item in lines) == whole["text"]
    assert lines[-1] == {"done": True, "usage": whole["usage"], "finish_reason": "length"}
    chat = run(standin.client.generate({"model": "ft:a", "messages": [{"role": "user", "content": "hi"}],
                                        "max_tokens": 2}))
    assert chat["text"] == "ft:a-0 ft:a-1 "


@pytest.mark.parametrize("payload, error", [
    ({"model": "ft:nope", "prompt": "x"}, UnknownModel),
    ({"model": "ft:a", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}, BadServingRequest),
    ({"model": "ft:a"}, BadServingRequest),
    ({"model": "ft:a", "prompt": "x", "max_tokens": 0}, BadServingRequest),
    ({"model": "ft:a", "prompt": "x", "temperature": -1}, BadServingRequest),
    ({"model": "ft:a", "prompt": "x", "unknown_field": 1}, BadServingRequest),
    ({"model": "ft:a", "prompt": "x" * 30_000}, BadServingRequest),          # over the body cap
])
def test_generate_errors_come_back_as_serving_errors(standin, payload, error):
    with pytest.raises(error):
        run(standin.client.generate(payload))
    with pytest.raises(error):
        run(collect(standin.client, payload))


def test_classify_on_a_generate_server_is_refused(standin):
    with pytest.raises(BadServingRequest, match="no classify route"):
        run(standin.client.classify("ft:a", texts=["x"]))


def test_busy_beyond_max_concurrent_and_health_answers_meanwhile(standin):
    async def scenario():
        slow = {"model": "ft:a", "prompt": "slow", "max_tokens": 10}
        running = [asyncio.create_task(standin.client.generate(slow)) for _ in range(2)]
        await asyncio.sleep(0.4)
        started = time.monotonic()
        health = await standin.client.health()          # the loop is free while generations run
        assert time.monotonic() - started < 0.5 and health["status"] == "ready"
        with pytest.raises(ServerBusy):
            await standin.client.generate(slow)
        return await asyncio.gather(*running)
    answers = run(scenario())
    assert all(a["usage"]["completion_tokens"] == 10 for a in answers)
    assert run(standin.client.generate({"model": "ft:a", "prompt": "x", "max_tokens": 1}))["text"] == "ft:a-0 "


def test_a_client_that_leaves_mid_stream_frees_its_slot(standin):
    async def leave():
        for _ in range(3):          # more than max_concurrent (2), one after the other
            pieces = standin.client.stream({"model": "ft:a", "prompt": "slow", "max_tokens": 100})
            assert "text" in await pieces.__anext__()
            await pieces.aclose()
        await asyncio.sleep(0.5)
        return await standin.client.generate({"model": "ft:b", "prompt": "x", "max_tokens": 1})
    assert run(leave())["text"] == "ft:b-0 "


def test_hot_load_and_remove_an_adapter(standin, tmp_path):
    added = run(standin.client.load_adapter("ft:c", str(fake_model(tmp_path / "c"))))
    assert added["name"] == "ft:c" and added["seconds"] >= 0
    assert run(standin.client.generate({"model": "ft:c", "prompt": "x", "max_tokens": 1}))["text"] == "ft:c-0 "
    with pytest.raises(BadServingRequest, match="does not exist"):
        run(standin.client.load_adapter("ft:d", str(tmp_path / "missing")))
    run(standin.client.remove_adapter("ft:c"))
    with pytest.raises(UnknownModel):
        run(standin.client.generate({"model": "ft:c", "prompt": "x"}))


def test_classify_micro_batches_concurrent_requests(classifier):
    server, artifact = classifier
    from tunelab.artifacts import load_artifact

    expected = load_artifact(artifact).predict_proba(TEXTS)

    async def concurrently():
        return await asyncio.gather(*(server.client.classify("ft:clf", texts=[t]) for t in TEXTS))
    answers = run(concurrently())
    assert all(a["labels"] == LABELS for a in answers)
    for got, want in zip(answers, expected):
        assert got["probs"][0] == pytest.approx(list(want), abs=1e-4)
    with pytest.raises(UnknownModel):
        run(server.client.classify("ft:other", texts=["x"]))
    with pytest.raises(BadServingRequest, match="texts"):
        run(server.client.classify("ft:clf", images_b64=["aGVsbG8="]))
    with pytest.raises(BadServingRequest, match="no generate route"):
        run(server.client.generate({"model": "ft:clf", "prompt": "x"}))


def test_an_image_classifier_takes_base64_images(tmp_path):
    import base64
    import io

    from .classifier_fixtures import image_head_artifact, images

    artifact = image_head_artifact(tmp_path / "img")
    config = ServerConfig(socket=str(tmp_path / "i.sock"), kind="classify", models=[ServedModel("ft:img", str(artifact))],
                          threads=1)
    server = start(config, tmp_path, [sys.executable, "-m", "tunelab.serving.process"], wait=120)
    try:
        encoded = []
        for image in images(3):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        encoded[1] = "data:image/png;base64," + encoded[1]
        answer = run(server.client.classify("ft:img", images_b64=encoded))
        assert answer["labels"] == LABELS and len(answer["probs"]) == 3
        with pytest.raises(BadServingRequest, match=r"images_b64\[0\] is not"):
            run(server.client.classify("ft:img", images_b64=["bm90IGFuIGltYWdl"]))
        with pytest.raises(BadServingRequest, match="images_b64"):
            run(server.client.classify("ft:img", texts=["a text"]))
    finally:
        server.stop()


def test_long_socket_paths_work(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    script = write_standin(deep)
    config = ServerConfig(socket=str(deep / "server.sock"), kind="generate",
                          models=[ServedModel("ft:a", str(fake_model(deep / "a")))])
    assert len(config.socket) > 108
    server = start(config, deep, [sys.executable, str(script)])
    try:
        assert run(server.client.generate({"model": "ft:a", "prompt": "x", "max_tokens": 1}))["text"] == "ft:a-0 "
    finally:
        server.stop()


def test_a_stream_cut_by_a_killed_server_is_unavailable_and_sigterm_exits_cleanly(tmp_path):
    script = write_standin(tmp_path)
    config = ServerConfig(socket=str(tmp_path / "k.sock"), kind="generate",
                          models=[ServedModel("ft:a", str(fake_model(tmp_path / "a")))])
    server = start(config, tmp_path, [sys.executable, str(script)])

    async def cut() -> float:
        pieces = server.client.stream({"model": "ft:a", "prompt": "slow", "max_tokens": 200})
        assert "text" in await pieces.__anext__()
        os.kill(server.proc.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            async for _ in pieces:
                pass
        return time.monotonic() - started
    assert run(cut()) < 5
    with pytest.raises(ServerUnavailable):
        run(server.client.health())
    assert server.client.health_sync() is None

    again = start(config, tmp_path, [sys.executable, str(script)])
    os.kill(again.proc.pid, signal.SIGTERM)
    assert again.proc.wait(15) == 0
    assert not os.path.exists(config.socket)


def test_a_config_with_a_missing_folder_exits_with_a_clear_message(tmp_path):
    config = ServerConfig(socket=str(tmp_path / "m.sock"), kind="classify",
                          models=[ServedModel("ft:x", str(tmp_path / "nowhere"))])
    (tmp_path / "server.json").write_text(config.to_json())
    done = subprocess.run([sys.executable, "-m", "tunelab.serving.process", str(tmp_path / "server.json")],
                          capture_output=True, text=True, env=env(), timeout=120)
    assert done.returncode == 3 and "does not exist" in done.stderr


@pytest.mark.parametrize("change, problem", [
    ({"kind": "translate"}, "kind must be"),
    ({"engine": "tensorrt"}, "engine must be"),
    ({"models": []}, "exactly one model"),
    ({"batch_window_ms": -1}, "batch_window_ms"),
])
def test_config_is_validated(change, problem):
    base = {"socket": "/tmp/x.sock", "kind": "classify", "models": [{"name": "m", "folder": "/x"}]}
    with pytest.raises(ValueError, match=problem):
        ServerConfig.from_json(json.dumps(base | change))
    assert ServerConfig.from_json(ServerConfig.from_json(json.dumps(base)).to_json()).models == [ServedModel("m", "/x")]
