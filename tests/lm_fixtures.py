"""Fixtures for the tests of causal LMs (tests/generative, tests/serving import them into their
conftest): the real pretrained stories260K, converted once per session from the shared llama2.c
checkpoint, and torch on one thread.

One thread: on a busy 2-core machine two OpenMP threads of a tiny model spend most of a step
waiting for each other (a 260K-parameter step went from 0.09 s to 0.5-6 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets"
STORIES = SHARED / "models" / "stories260k-llama2c"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def stories260k(tmp_path_factory) -> Path:
    from tunelab.models.llama2c import import_llama2c

    out = tmp_path_factory.mktemp("models") / "stories260k"
    return import_llama2c(STORIES / "checkpoint_legacy.bin", STORIES / "tok512.model", out)
