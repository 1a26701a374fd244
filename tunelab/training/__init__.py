from .checkpoints import CheckpointManager, TrainerState
from .costs import CostRecord, ResourceMeter, count_params
from .loop import EncodedSplit, LoopConfig, LoopResult, train_loop
from .progress import ProgressEvent, ProgressFn, TqdmProgress, null_progress

__all__ = ["CheckpointManager", "TrainerState", "CostRecord", "ResourceMeter", "count_params",
           "EncodedSplit", "LoopConfig", "LoopResult", "train_loop", "ProgressEvent", "ProgressFn",
           "TqdmProgress", "null_progress"]
