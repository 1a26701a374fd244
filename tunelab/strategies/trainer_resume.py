"""Checkpoints, resume and stop for strategies a transformers Trainer trains (TRL's DPO), on the
shared loop's terms: a checkpoint every `checkpoint_every` steps and at a stop request (cancel,
pause for credit, a worker's SIGTERM), progress events for each, and a rerun of the same run (same
fingerprint) resuming mid-epoch from the last one; another run's checkpoints are never resumed."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..training.control import TrainingStopped, stop_requested
from ..training.distributed import agree_stop
from ..training.progress import ProgressEvent
from .base import RunContext

FINGERPRINT = "FINGERPRINT"


def checkpoint_folder(ctx: RunContext, name: str, fingerprint: str) -> Path:
    """The run's checkpoint folder (under the work dir's checkpoints/, which the engine removes once
    the model folder is written); emptied when it holds another run's checkpoints."""
    folder = ctx.work_dir / "checkpoints" / name
    mark = folder / FINGERPRINT
    if folder.exists() and (not mark.is_file() or mark.read_text() != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark.write_text(fingerprint)
    return folder


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


def stop_callback(ctx: RunContext):
    """Save and end the Trainer at a stop request; report each checkpoint as the loop does."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            # on torchrun's ranks a stop reaches one of them: all stop at the same step, or hang
            if agree_stop(stop_requested()):
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            ctx.progress(ProgressEvent("checkpoint", state.global_step, state.max_steps, epoch=state.epoch or 0.0))
    return Stop()


def raise_if_stopped(step: int) -> None:
    reason = stop_requested()
    if reason:
        raise TrainingStopped(step, reason)
