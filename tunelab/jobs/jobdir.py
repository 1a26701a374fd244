"""A job's folder as the worker touches it.

The sandboxed job can write anything into its folder (symlinks, FIFOs, hard links), also between
two attempts of the same job, so the worker never trusts a name in it: it opens the folder once
(its parents, TUNELAB_HOME/jobs/<tenant>, are the worker's alone) and reaches every file through
that descriptor without following links (security/safe_fs.py). Each attempt gets a fresh
`inputs/` and a freshly created `spec.json`; `job.log` is appended to only while it is a plain
file. The artifact folders are named by the worker (`artifact/` for a training job,
`artifact/<strategy>/` for a comparison), never taken from what the job prints, and sealed with
their regular files only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..security import safe_fs
from ..security.storage import SEALED, seal_at

log = logging.getLogger("tunelab.worker")

SPEC, INPUTS, LOG, ARTIFACT, WORK = "spec.json", "inputs", "job.log", "artifact", "work"
CHECKPOINTS = "checkpoints"       # under WORK: training.checkpoints.CheckpointManager's root


class JobFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _open(self) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        return safe_fs.open_dir(self.path)

    def prepare_attempt(self, inputs: dict[str, bytes], spec_json: str) -> dict[str, Path]:
        """A fresh `inputs/` holding `inputs` (file name -> bytes) and a new `spec.json`, whatever
        an earlier attempt left under those names. Returns each input's path."""
        fd = self._open()
        try:
            safe_fs.fresh_dir_at(fd, INPUTS)
            with safe_fs.walk_to(fd, [INPUTS]) as inputs_fd:
                for name, data in inputs.items():
                    safe_fs.write_new_at(inputs_fd, name, data)
            safe_fs.write_new_at(fd, SPEC, spec_json.encode())
        finally:
            os.close(fd)
        return {name: self.path / INPUTS / name for name in inputs}

    def remove_inputs(self) -> None:
        """The decrypted inputs go when the job ends."""
        try:
            fd = safe_fs.open_dir(self.path)
        except FileNotFoundError:
            return
        try:
            safe_fs.remove_at(fd, INPUTS)
        finally:
            os.close(fd)

    def discard_partial(self) -> None:
        """After a write found the disk full: what this attempt half-wrote goes (the decrypted
        inputs, spec.json, the unsealed artifact and anything sealed from it, the checkpoint
        writer's temporaries); the last complete checkpoint stays."""
        try:
            fd = safe_fs.open_dir(self.path)
        except FileNotFoundError:
            return
        try:
            for name in os.listdir(fd):
                # `.artifact.tar.enc.<hex>.tmp`: safe_fs.atomic_writer_at's, if a crash left one
                if name in (INPUTS, SPEC, ARTIFACT, ARTIFACT + SEALED) or name.startswith(f".{ARTIFACT}"):
                    safe_fs.remove_at(fd, name)
            # A checkpoint is written under a dot-name and renamed into place (`.tmp-step-N-*`,
            # `.LATEST.*`, `.best.safetensors.*`): a dot-name is always an unfinished one.
            with contextlib.suppress(OSError), safe_fs.walk_to(fd, [WORK, CHECKPOINTS]) as ckpts:
                for name in os.listdir(ckpts):
                    if name.startswith("."):
                        safe_fs.remove_at(ckpts, name)
        finally:
            os.close(fd)

    def seal(self, home: Path, tenant_id: str, parts: list[str]) -> tuple[Path, list[str]]:
        """Seal the folder <job>/<parts...> into `<last part>.tar.enc` beside it. Raises
        safe_fs.UnsafeEntry (an OSError) when any part is a link or not a folder."""
        with safe_fs.opened_dir(self.path) as root, safe_fs.walk_to(root, parts[:-1]) as parent:
            sealed, skipped = seal_at(home, tenant_id, parent, parts[-1])
        for item in skipped:
            log.warning("left out of a sealed artifact", extra={"path": str(self.path), "entry": item})
        return self.path.joinpath(*parts[:-1], sealed), skipped


def artifact_parts(kind: str, strategy: str) -> list[str]:
    """Where the job process writes a strategy's artifact (tunelab.jobs.child): fixed here."""
    return [ARTIFACT] if kind == "train" else [ARTIFACT, strategy]
