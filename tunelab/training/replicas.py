"""Where the weights being trained live, for the training loop: one model (one process, or DDP's
identical replicas: rank 0 reads and writes them) or FSDP2 shards (reading them is a collective
every rank joins; rank 0 gets whole tensors). The loop asks the same questions either way."""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext

import torch

from . import distributed
from .checkpoints import CheckpointManager, TrainerState, trainable_state
from .distributed import World


class Replicas:
    def __init__(self, model: torch.nn.Module, accelerator, world: World, sharded: bool, device: str):
        """model: the caller's; under FSDP it stays whole (on the CPU) and a sharded copy trains,
        so that the caller gets back a plain module it can evaluate, save and serve."""
        self.original, self.accelerator, self.world, self.sharded = model, accelerator, world, sharded
        if sharded:
            self.model = distributed.shard_model(copy.deepcopy(model), device)
        else:
            if not getattr(model, "hf_device_map", None):      # a quantised model is already placed
                model.to(accelerator.device)
            self.model = model

    def prepare(self, optimizer):
        """DDP (through accelerate) for replicas; FSDP has already wrapped the shards."""
        if not self.sharded:
            self.model, optimizer = self.accelerator.prepare(self.model, optimizer)
        return optimizer

    @property
    def evaluates_here(self) -> bool:
        """Sharded: every rank evaluates (each forward gathers the layers from all of them); replicas:
        rank 0 alone, and tells the others what it found."""
        return self.sharded or self.world.is_main

    def for_eval(self) -> torch.nn.Module:
        return self.model if self.sharded else self.accelerator.unwrap_model(self.model)

    def sync(self, last: bool):
        """Gradients are reduced across ranks only on the step's last backward."""
        if last or not self.world.distributed:
            return nullcontext()
        if self.sharded:
            return _no_gradient_sync(self.model)
        return self.accelerator.no_sync(self.model)

    def clip(self, max_norm: float) -> None:
        if self.sharded:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], max_norm)
        else:
            self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)

    def weights(self) -> dict[str, torch.Tensor]:
        """The trainable weights, whole, on rank 0 (under FSDP every rank must call this)."""
        if self.sharded:
            return distributed.full_trainable_state(self.model)
        return trainable_state(self.accelerator.unwrap_model(self.model)) if self.world.is_main else {}

    def optimizer_state(self, optimizer) -> dict:
        if self.sharded:
            return distributed.full_optimizer_state(self.model, optimizer)
        return optimizer.state_dict() if self.world.is_main else {}

    def save(self, ckpt: CheckpointManager, optimizer, state: TrainerState) -> bool:
        """A checkpoint written by rank 0; True on the rank that wrote it."""
        tensors, opt = self.weights(), self.optimizer_state(optimizer)
        if self.world.is_main:
            ckpt.save(tensors, opt, state)
        return self.world.is_main

    def save_best(self, ckpt: CheckpointManager) -> None:
        tensors = self.weights()
        if self.world.is_main:
            ckpt.save_best(tensors)

    def load(self, ckpt: CheckpointManager, path, optimizer) -> TrainerState:
        """Every rank reads the checkpoint rank 0 wrote (whichever number of ranks wrote it)."""
        if not self.sharded:
            return ckpt.load(path, self.accelerator.unwrap_model(self.model), optimizer)
        tensors, blob = ckpt.read(path)
        distributed.load_full_state(self.model, optimizer, tensors, blob["optimizer"])
        torch.set_rng_state(blob["torch_rng"])
        return ckpt.peek(path)

    def finish(self, best: bool, ckpt: CheckpointManager) -> torch.nn.Module:
        """The caller's model with the trained weights (the best evaluation's where `best`), on
        rank 0. The other ranks' part ends here (distributed.RankDone)."""
        if self.sharded:
            tensors = self.weights()
            if self.world.is_main:
                self.original.load_state_dict(tensors, strict=False)
                self.original.to(self.accelerator.device)
            model = self.original
        else:
            # Drop the autocast wrapper accelerate puts on forward when a caller (a Trainer) left a
            # mixed-precision state behind: the model must predict as it will after being reloaded.
            model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        if not self.world.is_main:
            raise distributed.RankDone()
        if best:
            ckpt.load_best(model)
        return model


@contextmanager
def _no_gradient_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
