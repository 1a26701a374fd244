"""A `full` run killed with SIGKILL mid-epoch resumes from its last checkpoint, not step 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from cli_helpers import TUNELAB, run_cli


@pytest.mark.slow      # a durability run: `make test-slow`
def test_sigkill_mid_epoch_then_resume(banking_subset, tmp_path):
    train, test = banking_subset
    out = tmp_path / "full"
    # 400 rows -> 360 train -> 12 steps an epoch at batch 32; a checkpoint every 4 steps is mid-epoch.
    args = ["train", train, "--test", test, "--strategy", "full", "--out", out,
            "--set", "epochs=2", "--set", "min_steps=0", "--set", "checkpoint_every=4"]
    proc = subprocess.Popen([*TUNELAB, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ}, cwd=tmp_path)
    latest = out / "checkpoints" / "LATEST"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert latest.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest.read_text().strip()
    step = int(killed_at.split("-")[1])
    assert 0 < step < 12, "the kill must land inside the first epoch"
    assert not (out / "manifest.json").exists()

    r = run_cli("train", *args[1:])
    assert r.returncode == 0, r.stderr
    assert f"resumed from checkpoint at step {step}" in r.stderr or \
        "resumed from checkpoint at step" in r.stderr, r.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["notes"]["resumed_from_step"] >= step
    assert config["notes"]["steps"] == 24
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["macro_f1"] > 0.5
