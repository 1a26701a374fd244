"""The one training loop for gradient-based strategies (full, LoRA, QLoRA).

Built on accelerate rather than the transformers Trainer: we need batches formed from
length-sorted windows (the main speed lever on short texts), checkpoints that are atomic and
resumable mid-epoch, and progress events in our own shape. accelerate still gives device
placement, mixed precision and, under torchrun (training/launch.py), data-parallel training:
`batch_size` is the global batch, each rank takes its slice of every batch
(training/distributed.py), and with `sharding="fsdp"` FSDP2 shards the model across the ranks
(training/replicas.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from ..evaluation.intervals import macro_f1_accuracy_intervals
from ..models.batch_shapes import split_batch
from ..models.device import autocast
from ..models.inference import collate, lengths_of, predict_logits
from .batching import epoch_batches
from .checkpoints import CheckpointManager, TrainerState
from .control import TrainingStopped, stop_requested
from .distributed import World, agree_stop, broadcast, global_batch_share, losses_over_ranks, sum_over_ranks
from .progress import ProgressEvent, ProgressFn, Throughput, null_progress
from .replicas import Replicas
from .stopping import StoppingRule
from .work import WorkCounter

# At most about this many validation evaluations in a run (at epoch ends): a run of 200 one-step
# epochs on tiny data should not spend its time evaluating.
MAX_EVALUATIONS = 20
VAL_RESAMPLES = 400          # the validation metric's bootstrap interval: enough for a pruning bound


@dataclass
class LoopConfig:
    epochs: int = 3
    # Small datasets get more epochs, up to this many optimizer steps in all: 3 epochs of 300
    # rows is ~30 steps, far too few for a new head to learn. Early stopping never fires before
    # them (training/stopping.py).
    min_steps: int = 0
    max_epochs: int | None = None     # a cap on the epochs min_steps may add (None: none)
    learning_rate: float = 2e-4
    batch_size: int = 32
    gradient_accumulation: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    precision: str = "no"             # "bf16" | "fp16" | "no"
    device: str = "cpu"
    gradient_checkpointing: bool = False
    # The new head's learning rate over the base one: a head initialised at random learns too
    # slowly at a rate gentle enough for pretrained layers (77 labels from 10 examples each).
    head_lr_scale: float = 1.0
    early_stopping_patience: int = 2  # evaluations without improvement (at least a fifth of the run)
    checkpoint_every: int = 200       # optimizer steps
    seed: int = 0
    # On N ranks: "none" (DDP: each rank holds the whole model) or "fsdp" (FSDP2: parameters,
    # gradients and optimizer state sharded across the ranks; chosen by pre-flight)
    sharding: str = "none"


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    labels: np.ndarray

    @cached_property
    def lengths(self) -> np.ndarray:
        return lengths_of(self.input_ids)


@dataclass
class LoopResult:
    state: TrainerState
    resumed_from_step: int = 0
    tokens_processed: int = 0
    history: list[dict] = field(default_factory=list)
    stopping: str = ""
    work: WorkCounter = field(default_factory=WorkCounter)   # this process's steps: rows, tokens, step times


class StopTraining(Exception):
    """Raised by a progress callback to stop cleanly after a checkpoint (e.g. cancel)."""


def _new_parameters(model: torch.nn.Module) -> set[str]:
    """Names, not the parameters: FSDP trains a sharded copy whose parameters are other objects."""
    new = getattr(model, "tunelab_new_parameters", set())
    return {name for name, p in model.named_parameters() if id(p) in new}


def _optimizer(model: torch.nn.Module, cfg: LoopConfig, new: set[str], fused: bool = True) -> torch.optim.Optimizer:
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decays = not (p.ndim < 2 or "norm" in name.lower())
            scale = cfg.head_lr_scale if name in new else 1.0
            groups.setdefault((decays, scale), []).append(p)
    groups = [{"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0, "lr_scale": scale}
              for (decays, scale), ps in groups.items()]
    # The fused kernel does the whole update in one pass over memory: measurably faster on CPU
    # (not for FSDP's sharded parameters).
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=fused)


def _set_lr(optimizer, base_lr: float, step: int, warmup: int, total: int) -> None:
    """Linear warm-up then linear decay, a pure function of the step so a resumed run needs no
    scheduler state."""
    factor = (step + 1) / max(warmup, 1) if step < warmup else max(0.0, (total - step) / max(total - warmup, 1))
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_scale", 1.0)


def _mixed_precision_arg() -> str | None:
    """accelerate keeps one process-wide state; asking for a different precision than the one a
    caller (a Trainer, a notebook) already set raises. We do our own autocast, so "no" when we are
    first, and otherwise None: reuse whatever is there rather than fail."""
    from accelerate.state import AcceleratorState

    return None if AcceleratorState._shared_state.get("_mixed_precision") else "no"


class ClassificationTask:
    """What the loop needs to know about a task: a batch's loss and the validation metric (higher
    is better). This one: a sequence classifier, cross-entropy, macro-F1. Causal LMs bring
    their own (training/causal_lm.py); batching, checkpoints and early stopping are shared."""

    metric_name = "val_macro_f1"

    def __init__(self, pad_id: int, labels: int | None = None):
        self.pad_id, self.labels = pad_id, labels

    def size(self, split) -> int:
        return len(split.labels)

    def micro_batches(self, split: EncodedSplit, index: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """The batch as runs of similar length (models.batch_shapes), each with its share of the
        rows: the weighted sum of the runs' mean losses is the batch's mean loss."""
        runs = split_batch(index, split.lengths)
        return [(run, len(run) / len(index)) for run in runs]

    def loss(self, model, split: EncodedSplit, index: np.ndarray, device, cfg: LoopConfig) -> tuple[torch.Tensor, int]:
        batch = {k: v.to(device) for k, v in collate(split.input_ids, index, self.pad_id).items()}
        with autocast(cfg.device, cfg.precision):
            logits = model(**batch).logits
        labels = torch.as_tensor(split.labels[index], dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits.float(), labels), int(batch["attention_mask"].sum())

    def evaluate(self, model, split: EncodedSplit, cfg: LoopConfig) -> tuple[float, dict]:
        logits = predict_logits(model, split.input_ids, self.pad_id, cfg.device, cfg.precision)
        metric = float(f1_score(split.labels, logits.argmax(1), average="macro", zero_division=0))
        loss = float(torch.nn.functional.cross_entropy(torch.as_tensor(logits, dtype=torch.float32),
                                                       torch.as_tensor(split.labels, dtype=torch.long)))
        # The interval lets a comparison stop a candidate whose curve cannot reach the best (engine/pruning.py).
        interval = macro_f1_accuracy_intervals(split.labels, logits.argmax(1), logits.shape[1],
                                               resamples=VAL_RESAMPLES)["macro_f1_interval"]
        return metric, {self.metric_name: metric, "val_loss": loss, f"{self.metric_name}_interval": interval}


def train_loop(model: torch.nn.Module, train: EncodedSplit, validation: EncodedSplit | None,
               cfg: LoopConfig, checkpoint_dir: Path, pad_id: int, fingerprint: str = "",
               progress: ProgressFn = null_progress, task=None) -> LoopResult:
    """`task`: the loss and validation metric (default: sequence classification).

    Under torchrun every rank calls this with the same data; rank 0 reports progress, writes the
    checkpoints and gets the trained model back; the other ranks end with distributed.RankDone."""
    from accelerate import Accelerator

    task = task or ClassificationTask(pad_id, getattr(getattr(model, "config", None), "num_labels", None))
    world = World.from_env()
    if not world.is_main:
        progress = null_progress

    torch.manual_seed(cfg.seed)
    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=_mixed_precision_arg())
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    new = _new_parameters(model)
    replicas = Replicas(model, accelerator, world, sharded=cfg.sharding == "fsdp" and world.distributed,
                        device=cfg.device)
    optimizer = _optimizer(replicas.model, cfg, new, fused=not replicas.sharded)
    lengths = train.lengths
    sizes = task.row_sizes(train) if hasattr(task, "row_sizes") else None
    batches_per_epoch = math.ceil(len(lengths) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    if cfg.max_epochs is not None:
        epochs = min(epochs, max(cfg.max_epochs, cfg.epochs))
    total_steps = steps_per_epoch * epochs
    warmup = int(cfg.warmup_ratio * total_steps)
    eval_every = max(steps_per_epoch, math.ceil(total_steps / MAX_EVALUATIONS))
    rule = StoppingRule.for_run(metric_name=task.metric_name,
                                val_rows=task.size(validation) if validation is not None else 0,
                                labels=getattr(task, "labels", None), min_steps=cfg.min_steps,
                                total_steps=total_steps,
                                patience_evals=cfg.early_stopping_patience, eval_every=eval_every)
    optimizer = replicas.prepare(optimizer)

    ckpt = CheckpointManager(checkpoint_dir)
    state, resumed_from = TrainerState(fingerprint=fingerprint), 0
    latest = ckpt.latest()
    if latest is not None and ckpt.peek(latest).fingerprint == fingerprint:
        try:
            state = replicas.load(ckpt, latest, optimizer)
            resumed_from = state.global_step
            progress(ProgressEvent("train", state.global_step, total_steps, epoch=state.epoch,
                                   message=f"resuming from checkpoint at step {state.global_step}"))
        except (ValueError, RuntimeError, KeyError) as exc:   # written by another tunelab version
            progress(ProgressEvent("train", 0, total_steps, message=f"checkpoint unusable ({exc}); starting over"))
            state = TrainerState(fingerprint=fingerprint)

    meter = Throughput(total_steps, state.global_step)
    tokens, running, work, step_t0 = 0, state.running_loss, WorkCounter().begin(), None
    step_losses: list[float] = []
    replicas.model.train()
    for epoch in range(state.epoch, epochs):
        # Every rank forms the same global batches and takes its slice of each.
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        start = state.step_in_epoch * cfg.gradient_accumulation if epoch == state.epoch else 0
        for b in range(start, len(batches)):
            index = batches[b]
            last_in_step = not (b + 1) % cfg.gradient_accumulation or b + 1 == len(batches)
            step_t0 = step_t0 or time.perf_counter()
            work.add(lengths[index])        # the whole batch: the job's work, whichever rank did it
            local, weight = global_batch_share(index, world, sizes)
            # On CPU a batch with a long tail runs as several forwards of similar length: same
            # gradient, less padding, smaller attention matrices (models/batch_shapes.py).
            parts = (task.micro_batches(train, local)
                     if cfg.device == "cpu" and hasattr(task, "micro_batches") else [(local, 1.0)])
            batch_loss = 0.0
            for i, (part, share) in enumerate(parts):
                with replicas.sync(last_in_step and i == len(parts) - 1):
                    loss, batch_tokens = task.loss(replicas.model, train, part, accelerator.device, cfg)
                    accelerator.backward(loss * (share * weight / cfg.gradient_accumulation))
                tokens += batch_tokens if weight else 0
                batch_loss += loss.item() * share * weight / world.world_size
            step_losses.append(batch_loss)
            if not last_in_step:
                continue
            replicas.clip(1.0)
            _set_lr(optimizer, cfg.learning_rate, state.global_step, warmup, total_steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for batch_loss in losses_over_ranks(step_losses):     # the global batches' losses
                running = batch_loss if running is None else 0.9 * running + 0.1 * batch_loss
            step_losses, state.running_loss = [], running
            work.step(time.perf_counter() - step_t0)
            step_t0 = None
            state.global_step += 1
            state.step_in_epoch = (b + 1 + cfg.gradient_accumulation - 1) // cfg.gradient_accumulation
            sps, eta = meter.update(state.global_step, len(index) * cfg.gradient_accumulation)
            progress(ProgressEvent("train", state.global_step, total_steps,
                                   epoch=epoch + state.step_in_epoch / steps_per_epoch,
                                   loss=running, samples_per_s=sps, eta_s=eta))
            reason = agree_stop(stop_requested())      # a stop asked of any rank stops them all here
            if state.global_step % cfg.checkpoint_every == 0 or reason:
                _checkpoint(replicas, ckpt, optimizer, state, running, total_steps, progress)
            if reason:
                raise TrainingStopped(state.global_step, reason)
        state.epoch, state.step_in_epoch = epoch + 1, 0
        last = state.history[-1]["step"] if state.history and "step" in state.history[-1] else 0
        stop = evaluated = False
        if state.global_step - last >= eval_every or epoch + 1 == epochs:
            stop = _evaluate(replicas, validation, cfg, state, ckpt, task, rule, running, progress, total_steps)
            evaluated = True
        # A checkpoint with each evaluation (its early-stopping state must survive a restart), not
        # each epoch: tiny data runs hundreds of one-step epochs.
        if evaluated:
            _checkpoint(replicas, ckpt, optimizer, state, running, total_steps, progress)
        replicas.model.train()
        if stop:
            break
    tokens = sum_over_ranks(tokens)
    replicas.finish(rule.select and state.best_metric is not None, ckpt)     # the caller's model, trained
    return LoopResult(state=state, resumed_from_step=resumed_from, tokens_processed=tokens,
                      history=state.history, stopping=rule.describe(), work=work)


def _checkpoint(replicas: Replicas, ckpt, optimizer, state, running, total_steps, progress) -> None:
    if replicas.save(ckpt, optimizer, state):
        progress(ProgressEvent("checkpoint", state.global_step, total_steps, epoch=state.epoch, loss=running))


def _evaluate(replicas: Replicas, validation, cfg, state, ckpt, task, rule: StoppingRule, running, progress,
              total_steps) -> bool:
    """Evaluate on validation, keep the best weights (when the rule selects), and say whether to
    stop early. Every rank takes rank 0's findings: they must all stop at the same step."""
    if validation is None or task.size(validation) == 0:
        state.history.append({"epoch": state.epoch, "step": state.global_step, "train_loss": running})
        return False
    t0 = time.perf_counter()
    found = task.evaluate(replicas.for_eval(), validation, cfg) if replicas.evaluates_here else None
    metric, values = broadcast(found)
    state.history.append({"epoch": state.epoch, "step": state.global_step, "train_loss": running, **values,
                          "eval_seconds": time.perf_counter() - t0})
    progress(ProgressEvent("train", state.global_step, total_steps, epoch=state.epoch,
                           loss=running, eval_metric=metric, eval_loss=values.get("val_loss"),
                           # an interval lets a comparison stop this run (engine/pruning.py): only
                           # where the split is big enough to select on by the metric itself; the
                           # bootstrap of macro-F1 on 2 rows "bounds" it at 0.5
                           eval_interval=values.get(f"{task.metric_name}_interval") if rule.trusts_metric else None))
    if not rule.select:
        return False
    score = rule.score(metric, values)
    if rule.improved(score, state.best_metric):
        state.best_metric, state.best_step, state.bad_epochs = score, state.global_step, 0
        replicas.save_best(ckpt)
        return False
    state.bad_epochs += 1
    return rule.should_stop(state.global_step, state.best_step)
