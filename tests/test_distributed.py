"""Data-parallel and sharded training on CPU (gloo), through the real launcher (torch's elastic
agent) on 2 ranks, against one process at the same global batch.

The ranks run this file as a script (`python tests/test_distributed.py CONFIG.json`): a tiny
random BERT classifier or Llama (dropout 0) trained by the shared loop on seeded synthetic
data; rank 0 writes its losses and final weights. Each 2-rank launch costs ~10 s here, so the
launches are module fixtures shared by the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli
from lm_fixtures import SHARED, one_thread, stories260k  # noqa: F401  (fixtures; one_thread is autouse: torch on one thread)

ROWS, LABELS, VOCAB = 44, 3, 64
STEPS = 6               # optimizer steps in a run (44 rows / batch 16 = 3 batches an epoch, 2 epochs)
STOP_AT = 3             # the 2-rank run of the resume test stops (with a checkpoint) at this step
TOL = 1e-5


# ---- what a rank (or the one process) runs ---------------------------------------------------

def tiny_model(kind: str):
    torch.manual_seed(0)
    if kind == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, num_labels=LABELS,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return BertForSequenceClassification(config)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def tiny_split(kind: str, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = [[int(t) for t in rng.integers(3, VOCAB, size=n)] for n in rng.integers(4, 24, size=rows)]
    if kind == "bert":
        from tunelab.training.loop import EncodedSplit

        return EncodedSplit(ids, rng.integers(0, LABELS, size=rows))
    from tunelab.training.causal_lm import LMSplit

    # the loss on the second half of each row: rows differ in trained tokens
    return LMSplit([{"input_ids": x, "labels": [-100] * (len(x) // 2) + x[len(x) // 2:]} for x in ids])


def tiny_data(kind: str):
    """Training rows, validation rows (enough to select the best evaluation on), the task."""
    from tunelab.training.causal_lm import CausalLMTask

    return tiny_split(kind, ROWS, 1), tiny_split(kind, 3 * LABELS * 10, 2), \
        None if kind == "bert" else CausalLMTask(pad_id=0)


def run_loop(config: dict) -> dict:
    """Train as `config` says; returns (on rank 0) the losses by step and the final weights."""
    from tunelab.training.control import clear, request_stop
    from tunelab.training.loop import LoopConfig, train_loop

    clear()         # a stop asked of an earlier run in this process

    model = tiny_model(config["model"])
    train, validation, task = tiny_data(config["model"])
    losses = {}

    def progress(event):
        if event.phase == "train" and event.samples_per_s is not None:      # a step's event, not an evaluation's
            losses[event.step] = event.loss
            if event.step == config.get("stop_at"):
                request_stop("test stop")

    cfg = LoopConfig(epochs=2, min_steps=0, batch_size=16, learning_rate=2e-3, warmup_ratio=0.0,
                     weight_decay=0.0, checkpoint_every=100, seed=3, sharding=config.get("sharding", "none"))
    from tunelab.training.control import TrainingStopped

    try:
        result = train_loop(model, train, validation, cfg, Path(config["checkpoints"]), 0, fingerprint="t",
                            progress=progress, task=task)
        resumed = result.resumed_from_step
    except TrainingStopped as exc:
        resumed = None if exc.step else 0
    return {"losses": losses, "resumed_from": resumed,
            "weights": {n: p.detach().clone() for n, p in model.named_parameters()}}


def rank_main(config_path: str) -> int:
    from safetensors.torch import save_file

    from tunelab.training import launch
    from tunelab.training.distributed import RankDone, World

    launch.join_as_rank()
    torch.set_num_threads(1)
    config = json.loads(Path(config_path).read_text())
    if config.get("mode") == "die":             # rank 1 crashes at once, on every attempt
        if World.from_env().rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
        return launch.rank_exit(0)
    if config.get("mode") == "wait_stop":       # as a job's rank: SIGTERM asks for a stop
        from tunelab.training.control import request_stop, stop_requested

        signal.signal(signal.SIGTERM, lambda *_: request_stop("cancelled"))
        Path(config["out"]).mkdir(parents=True, exist_ok=True)
        (Path(config["out"]) / f"rank{World.from_env().rank}").write_text(str(os.getpid()))
        while not stop_requested():
            time.sleep(0.05)
        return launch.rank_exit(5)
    try:
        out = run_loop(config)
    except RankDone:
        return 0
    if World.from_env().is_main:
        folder = Path(config["out"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "losses.json").write_text(json.dumps({"losses": out["losses"], "resumed_from": out["resumed_from"],
                                                        "world": World.from_env().world_size}))
        save_file({k: v.contiguous() for k, v in out["weights"].items()}, str(folder / "weights.safetensors"))
    return 0


# ---- the tests ---------------------------------------------------------------------------------

def launch_ranks(tmp: Path, name: str, **config) -> dict:
    from safetensors.torch import load_file

    from tunelab.training.launch import launch

    config = {"checkpoints": str(tmp / name / "checkpoints"), "out": str(tmp / name / "out"), **config}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    code = launch([__file__, str(path)], 2, max_restarts=0, cpus=2)
    assert code == 0
    out = json.loads((tmp / name / "out" / "losses.json").read_text())
    assert out["world"] == 2
    out["weights"] = load_file(str(tmp / name / "out" / "weights.safetensors"))
    out["losses"] = {int(k): v for k, v in out["losses"].items()}
    out["checkpoints"] = Path(config["checkpoints"])
    return out


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def bert_one(tmp_path_factory):
    """One process, the whole run, with the weights at STOP_AT kept."""
    tmp = tmp_path_factory.mktemp("one")
    stopped = run_loop({"model": "bert", "checkpoints": str(tmp / "a"), "stop_at": STOP_AT})
    whole = run_loop({"model": "bert", "checkpoints": str(tmp / "b")})
    return stopped, whole


@pytest.fixture(scope="module")
def bert_two_stopped(tmp_path_factory):
    """2 ranks, stopped by a request on rank 0 after STOP_AT steps (a checkpoint there)."""
    return launch_ranks(tmp_path_factory.mktemp("two"), "ddp", model="bert", stop_at=STOP_AT)


def test_two_ranks_train_as_one_process_at_the_same_global_batch(bert_one, bert_two_stopped):
    stopped, whole = bert_one
    two = bert_two_stopped
    assert sorted(two["losses"]) == list(range(1, STOP_AT + 1)), "both ranks stopped at the same step"
    for step in range(1, STOP_AT + 1):
        assert two["losses"][step] == pytest.approx(whole["losses"][step], abs=TOL)
    diff = max_diff(two["weights"], stopped["weights"])
    assert diff < TOL, f"weights differ by {diff} after {STOP_AT} steps"
    initial = dict(tiny_model("bert").named_parameters())
    assert max(float((two["weights"][k] - initial[k].detach()).abs().max()) for k in initial) > 1e-3


def test_a_two_rank_checkpoint_resumes_in_one_process_with_the_same_next_losses(bert_one, bert_two_stopped):
    _, whole = bert_one
    latest = bert_two_stopped["checkpoints"] / "LATEST"
    assert latest.read_text().strip() == f"step-{STOP_AT}"
    resumed = run_loop({"model": "bert", "checkpoints": str(bert_two_stopped["checkpoints"])})
    assert resumed["resumed_from"] == STOP_AT
    assert sorted(resumed["losses"]) == list(range(STOP_AT + 1, STEPS + 1))
    for step in range(STOP_AT + 1, STEPS + 1):
        assert resumed["losses"][step] == pytest.approx(whole["losses"][step], abs=TOL)
    assert max_diff(resumed["weights"], whole["weights"]) < 1e-4


def test_fsdp_on_two_ranks_trains_a_causal_lm_as_one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    one = run_loop({"model": "llama", "checkpoints": str(tmp / "one")})
    two = launch_ranks(tmp, "fsdp", model="llama", sharding="fsdp")
    assert sorted(two["losses"]) == sorted(one["losses"]) == list(range(1, STEPS + 1))
    for step in one["losses"]:
        assert two["losses"][step] == pytest.approx(one["losses"][step], abs=TOL)
    diff = max_diff(two["weights"], one["weights"])
    assert diff < TOL, f"FSDP weights differ from one process's by {diff}"
    # rank 0 wrote whole tensors: the checkpoint a sharded run leaves loads into a plain model
    from safetensors.torch import load_file

    saved = load_file(str(two["checkpoints"] / (two["checkpoints"] / "LATEST").read_text().strip() / "model.safetensors"))
    assert saved["model.embed_tokens.weight"].shape == (VOCAB, 32)


def chat_file(folder: Path) -> Path:
    records = json.loads((SHARED / "instruction" / "identity.json").read_text(encoding="utf-8"))
    path = folder / "identity.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            fill = {k: v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab") for k, v in r.items()}
            f.write(json.dumps({"messages": [{"role": "user", "content": fill["instruction"]},
                                             {"role": "assistant", "content": fill["output"]}]}) + "\n")
    return path


CLI_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_sft_trains_on_two_ranks_through_the_cli(stories260k, tmp_path):  # noqa: F811
    out = tmp_path / "bot"
    r = run_cli("train", chat_file(tmp_path), "--model", stories260k, "--strategy", "sft-full", "--out", out,
                "--processes", "2", "--set", "epochs=1", "--set", "min_steps=6", "--set", "batch_size=8",
                "--set", "eval_answers=2", "--set", "max_new_tokens=8", "--json",
                env={**CLI_ENV, "TUNELAB_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(r.stdout)          # printed once: by rank 0
    assert metrics["strategy"] == "sft-full" and metrics["test_loss"] < metrics["base_test_loss"]
    assert (out / "manifest.json").is_file() and not (out / "checkpoints").exists()
    assert sorted(p.name for p in out.iterdir() if "rank" in p.name) == []


def test_a_strategy_without_a_training_loop_is_refused_processes(tmp_path):
    r = run_cli("train", chat_file(tmp_path), "--model", "/nonexistent", "--strategy", "zero-shot", "--out",
                tmp_path / "x", "--processes", "2", env=CLI_ENV)
    assert r.returncode == 2 and "no training loop" in r.stderr, r.stderr[-2000:]


@pytest.mark.slow       # TRL's DPOTrainer under torchrun: ~30 s here
def test_dpo_trains_on_two_ranks_through_the_cli(stories260k, tmp_path):  # noqa: F811
    out = tmp_path / "dpo"
    r = run_cli("train", SHARED / "instruction" / "dpo_en_demo.json", "--limit", "40", "--model", stories260k,
                "--strategy", "dpo", "--out", out, "--processes", "2", "--set", "epochs=1", "--set", "batch_size=4",
                "--json", env={**CLI_ENV, "TUNELAB_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["strategy"] == "dpo" and (out / "manifest.json").is_file()


def test_a_rank_that_keeps_dying_fails_the_run_naming_it(tmp_path):
    from tunelab.training.launch import launch

    config = tmp_path / "die.json"
    config.write_text(json.dumps({"mode": "die"}))
    told = []
    t0 = time.monotonic()
    assert launch([__file__, str(config)], 2, max_restarts=1, cpus=2, report=told.append) == 1
    assert len(told) == 1 and "after 1 restart(s)" in told[0] and "rank 1 was killed by SIGKILL" in told[0], told
    assert time.monotonic() - t0 < 60


def test_sigterm_to_the_launcher_stops_every_rank_with_rank_0s_status(tmp_path):
    """As a cancelled job: the agent passes SIGTERM on, the ranks stop (status 5 here), none is left."""
    import psutil

    out = tmp_path / "out"
    config = tmp_path / "wait.json"
    config.write_text(json.dumps({"mode": "wait_stop", "out": str(out)}))
    agent = subprocess.Popen([sys.executable, __file__, "--launch", str(config)], env={**os.environ, **CLI_ENV})
    deadline = time.monotonic() + 60
    while not (out.is_dir() and len(list(out.iterdir())) == 2):
        assert time.monotonic() < deadline and agent.poll() is None, "the ranks did not start"
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in out.iterdir()]
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 5
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


if __name__ == "__main__":
    if sys.argv[1] == "--launch":        # the agent, in a process of its own (a test signals it)
        from tunelab.training.launch import launch

        sys.exit(launch([__file__, sys.argv[2]], 2, max_restarts=0, cpus=2))
    sys.exit(rank_main(sys.argv[1]))
