"""Running the real `tunelab` console script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TUNELAB = [sys.executable, "-m", "tunelab.cli"]


def run_cli(*args, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*TUNELAB, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=Path(__file__).parent)
