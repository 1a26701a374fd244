"""Pre-flight for a run on N ranks: each rank's peak, unsharded (DDP: the whole parameter state on
every rank) and sharded (FSDP: a 1/N share plus what is gathered at once); a causal LM that does not
fit unsharded lists "N processes, sharded" among the ways that fit, and --auto-fit on N ranks
chooses it.

The ranks are torchrun's environment (WORLD_SIZE, LOCAL_WORLD_SIZE) on this one process: pre-flight
runs before any collective, so nothing here starts a process group. LOCAL_WORLD_SIZE=1 stands for
ranks on separate nodes (or GPUs): each has a budget of its own (TUNELAB_MEMORY_LIMIT_MB). The
model is a random 4-layer Llama of 13M parameters; the process's own baseline (what it held before
the estimate: the allocator keeps what a first probe step took, so it drifts by ~150 MB from one
estimate to the next) is fixed, so that what separates the peaks is the parameter state.
"""

from __future__ import annotations

import json
import shutil

import pytest

from cli_helpers import run_cli
from lm_fixtures import SHARED, one_thread, stories260k  # noqa: F401  (fixtures)
from tunelab.engine import DataSpec, make_context, prepare_data
from tunelab.engine.planning import DoesNotFit, preflight, shard_candidates
from tunelab.strategies import ConfigError
from tunelab.strategies.estimates import HEADROOM
from tunelab.training.preflight import Ranks, per_rank_memory

BREAKDOWN = {"process": 500.0, "weights": 400.0, "autocast_copies": 200.0, "gradients": 400.0,
             "optimizer": 800.0, "activations": 100.0, "logits": 50.0}


@pytest.mark.parametrize("sharded, changed", [
    (False, {"ddp_buckets": 400.0}),                                  # a flat copy of the gradients
    (True, {"weights": 200.0, "gradients": 200.0, "optimizer": 400.0, "fsdp_gathered": 30.0}),
])
def test_per_rank_memory_at_two_ranks(sharded, changed):
    out = per_rank_memory(BREAKDOWN, 2, sharded, gathered_mb=30.0)
    assert out == {**BREAKDOWN, **changed}
    assert per_rank_memory(BREAKDOWN, 1, sharded, gathered_mb=30.0) == BREAKDOWN


@pytest.mark.parametrize("env, device, ranks", [
    ({}, "cpu", Ranks(1, 1)),
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, "cpu", Ranks(4, 4)),     # one node's RAM, 4 ranks on it
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, "cpu", Ranks(4, 2)),     # two nodes
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, "cuda", Ranks(4, 1)),    # a GPU each
])
def test_ranks_from_torchrun_environment(monkeypatch, env, device, ranks):
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Ranks.from_env(device) == ranks


@pytest.mark.parametrize("ranks, gpus, candidates", [
    (Ranks(1, 1), 0, []),             # one CPU node: its ranks would share its RAM, sharding saves nothing
    (Ranks(1, 1), 4, [2, 3, 4]),      # one process seeing 4 GPUs: relaunch on 2..4
    (Ranks(2, 1), 8, [2]),            # already on 2 ranks: those
])
def test_shard_candidates(ranks, gpus, candidates):
    assert shard_candidates(ranks, gpus) == candidates


@pytest.fixture(scope="module")
def wide_llama(stories260k, tmp_path_factory):
    """A random Llama of stories260K's vocabulary and tokenizer, 13M parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("models") / "wide-llama"
    shutil.copytree(stories260k, out)
    for f in out.glob("*.safetensors"):
        f.unlink()
    base = json.loads((out / "config.json").read_text())
    config = LlamaConfig(vocab_size=base["vocab_size"], hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                         bos_token_id=base.get("bos_token_id"), eos_token_id=base.get("eos_token_id"),
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def identity_data(wide_llama, tmp_path_factory):
    from tunelab.models import resolve_model

    records = json.loads((SHARED / "instruction" / "identity.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("data") / "identity.json"
    path.write_text(json.dumps([{k: v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab")
                                 for k, v in r.items()} for r in records]), encoding="utf-8")
    model = resolve_model(str(wide_llama))
    return model, prepare_data(DataSpec(path), model), path


BASELINE_MB = 600.0


@pytest.fixture(autouse=True)
def fixed_baseline(monkeypatch):
    from tunelab.strategies import lm_estimate

    monkeypatch.setattr(lm_estimate, "current_rss_mb", lambda: BASELINE_MB)


def _ranks_env(monkeypatch, world: int, local: int, limit_mb: float | None = None):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    if limit_mb is None:
        monkeypatch.delenv("TUNELAB_MEMORY_LIMIT_MB", raising=False)
    else:
        monkeypatch.setenv("TUNELAB_MEMORY_LIMIT_MB", str(round(limit_mb)))


PARAMS = {"batch_size": 8, "max_length": 128, "min_steps": 0, "epochs": 1}


def _plan(identity_data, tmp_path, params=None, auto_fit=False):
    model, data, _ = identity_data
    strategy, ctx = make_context(model, data, "sft-full", {**PARAMS, **(params or {})}, work_dir=tmp_path)
    return preflight(ctx, strategy, auto_fit=auto_fit)


@pytest.fixture(scope="module")
def peaks(identity_data, tmp_path_factory):
    """Per-rank peaks on 2 ranks on separate nodes, unsharded and sharded, with room to spare."""
    from tunelab.strategies import lm_estimate

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm_estimate, "current_rss_mb", lambda: BASELINE_MB)
        _ranks_env(mp, 2, 1, limit_mb=10**6)
        work = tmp_path_factory.mktemp("work")
        ddp, _, _ = _plan(identity_data, work)
        fsdp, _, _ = _plan(identity_data, work, {"sharding": "fsdp"})
    return ddp.estimate, fsdp.estimate


def test_sharded_rank_holds_half_the_parameter_state_at_two_ranks(peaks):
    ddp, fsdp = peaks
    for part in ("weights", "gradients", "optimizer"):
        assert fsdp.breakdown_mb[part] == pytest.approx(ddp.breakdown_mb[part] / 2)
    assert ddp.breakdown_mb["ddp_buckets"] == pytest.approx(ddp.breakdown_mb["gradients"])
    assert fsdp.breakdown_mb["fsdp_gathered"] > 0 and "ddp_buckets" not in fsdp.breakdown_mb
    assert ddp.breakdown_mb["weights"] == pytest.approx(13.2e6 * 4 / 2**20, rel=0.05)     # 13M parameters
    # DDP: 4 + 4 + 8 + 4 (buckets) bytes a parameter; FSDP: half of the first three, a whole host copy
    # of the weights and two blocks gathered
    assert ddp.peak_mb - fsdp.peak_mb > 40


def test_unsharded_run_that_does_not_fit_lists_sharding_and_auto_fit_chooses_it(identity_data, peaks, monkeypatch,
                                                                               tmp_path):
    ddp, fsdp = peaks
    between = (ddp.peak_mb + fsdp.peak_mb) / 2 / HEADROOM       # fits sharded, not unsharded
    _ranks_env(monkeypatch, 2, 1, between)
    with pytest.raises(DoesNotFit) as refused:
        _plan(identity_data, tmp_path)
    first = refused.value.options[0]
    assert (first.params, first.processes) == ({"sharding": "fsdp"}, 2)
    assert "2 processes, sharded: ~" in str(refused.value) and "GB per rank" in str(refused.value)
    assert "--set sharding=fsdp --processes 2" in str(refused.value)

    plan, ctx, strategy = _plan(identity_data, tmp_path, auto_fit=True)
    assert plan.applied.startswith("2 processes, sharded") and ctx.params.sharding == "fsdp"
    assert strategy.name == "sft-full" and plan.estimate.peak_mb <= between * HEADROOM


def test_ranks_on_one_cpu_node_share_its_memory(identity_data, peaks, monkeypatch, tmp_path):
    """Two ranks on this one node: each has half the node's budget. The budget that let one
    sharded rank fit on a node of its own fits none here; twice that fits both."""
    ddp, fsdp = peaks
    between = (ddp.peak_mb + fsdp.peak_mb) / 2 / HEADROOM
    _ranks_env(monkeypatch, 2, 2, between)
    with pytest.raises(DoesNotFit, match="per rank"):
        _plan(identity_data, tmp_path, auto_fit=True)
    _ranks_env(monkeypatch, 2, 2, 2 * between)
    plan, ctx, _ = _plan(identity_data, tmp_path, auto_fit=True)
    assert ctx.params.sharding == "fsdp" and plan.budget_mb == pytest.approx(between, abs=1)


def test_run_that_fits_is_left_alone_on_two_ranks(identity_data, peaks, monkeypatch, tmp_path):
    ddp, _ = peaks
    _ranks_env(monkeypatch, 2, 1, ddp.peak_mb * 1.5 / HEADROOM)
    plan, ctx, _ = _plan(identity_data, tmp_path, auto_fit=True)
    assert plan.applied is None and ctx.params.sharding == "none"
    assert "per rank of 2, data parallel" in plan.estimate.detail


def test_cli_refusal_on_two_ranks_names_the_sharded_way(identity_data, tmp_path):
    """The refusal as a user sees it, before any process group or training (exit 2): with a budget
    nothing fits in, the sharded way is still named (the closest there is)."""
    _, _, data_file = identity_data
    model_dir = identity_data[0].path
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "OMP_NUM_THREADS": "1",
           "TUNELAB_MEMORY_LIMIT_MB": "200"}
    args = ["train", data_file, "--model", model_dir, "--strategy", "sft-full", "--out", tmp_path / "m",
            *[a for k, v in PARAMS.items() for a in ("--set", f"{k}={v}")]]
    r = run_cli(*args, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "per rank (2 ranks)" in r.stderr and "2 processes, sharded" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "m" / "checkpoints").exists()


def test_qlora_refuses_sharding_sft_lora_takes_it(identity_data, tmp_path):
    model, data, _ = identity_data
    _, ctx = make_context(model, data, "sft-lora", {**PARAMS, "sharding": "fsdp"}, work_dir=tmp_path)
    assert ctx.params.sharding == "fsdp"
    qlora, qctx = make_context(model, data, "sft-qlora", {**PARAMS, "sharding": "fsdp"}, work_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot be sharded"):
        qlora.check(qctx)
