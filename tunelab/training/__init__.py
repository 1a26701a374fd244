"""The training loop and what it needs (checkpoints, costs, progress).

Names are loaded on first use (PEP 562): `training.batching` is imported by the billing
estimator inside the API server and the admin CLI, which must not pay for torch and sklearn."""

from importlib import import_module

_HOME = {"CheckpointManager": "checkpoints", "TrainerState": "checkpoints",
         "CostRecord": "costs", "ResourceMeter": "costs", "count_params": "costs",
         "EncodedSplit": "loop", "LoopConfig": "loop", "LoopResult": "loop", "train_loop": "loop",
         "ProgressEvent": "progress", "ProgressFn": "progress", "TqdmProgress": "progress",
         "null_progress": "progress"}

__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
