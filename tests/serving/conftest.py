"""Generative fixtures shared by the serving tests: the real pretrained stories260K (converted once
per session from the shared llama2.c checkpoint), two LoRA adapters of it trained through the engine
on different data (so their greedy answers differ), and a full fine-tune.

Torch runs on one thread: on a busy 2-core machine two OpenMP threads of a tiny model spend most
of a step waiting for each other (see tests/generative/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_fixtures import SHARED, STORIES, one_thread, stories260k  # noqa: F401  (fixtures used by this folder's tests)

IDENTITY = SHARED / "instruction" / "identity.json"
# Who the assistant says it is, per adapter: the same questions, different answers.
PERSONAS = {"tuna": ("Tuna", "Tunelab"), "marlin": ("Marlin", "Reefworks")}


def _persona_file(out: Path, name: str, author: str) -> Path:
    records = json.loads(IDENTITY.read_text(encoding="utf-8"))
    records = [{k: v.replace("{{name}}", name).replace("{{author}}", author) for k, v in r.items()}
               for r in records]
    out.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return out


def train_artifact(base: Path, data_file: Path, out: Path, strategy: str, params: dict) -> Path:
    """A tuned artifact written as a run writes it (the engine's strategy, then write_artifact)."""
    from tunelab.artifacts import write_artifact
    from tunelab.engine import DataSpec, make_context, prepare_data
    from tunelab.models import resolve_model

    model = resolve_model(str(base))
    strategy_obj, ctx = make_context(model, prepare_data(DataSpec(data_file), model), strategy,
                                     {"eval_answers": 0, **params}, work_dir=out.parent / f"{out.name}-work")
    lm = strategy_obj.fit(ctx)
    return write_artifact(out, lm, config={"strategy": strategy}, metrics={}, data_report={}, card="test\n")


@pytest.fixture(scope="session")
def two_adapters(stories260k, tmp_path_factory) -> dict[str, Path]:
    """{"tuna": folder, "marlin": folder}: sft-lora adapters (with a merged export) trained on the
    identity set with different names filled in; 24 steps (a second or two each on an idle machine) make them answer
    "Who are you?" differently."""
    d = tmp_path_factory.mktemp("adapters")
    return {tag: train_artifact(stories260k, _persona_file(d / f"{tag}.json", *who), d / tag, "sft-lora",
                                {"min_steps": 24, "export_merged": True})
            for tag, who in PERSONAS.items()}


@pytest.fixture(scope="session")
def full_sft(stories260k, tmp_path_factory) -> Path:
    """A full fine-tune of stories260K (weights of its own, no adapter)."""
    d = tmp_path_factory.mktemp("full-sft")
    return train_artifact(stories260k, _persona_file(d / "tuna.json", *PERSONAS["tuna"]), d / "full", "sft-full",
                          {"min_steps": 8})
