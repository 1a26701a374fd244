"""Atomic checkpoints: a checkpoint is a folder written under a temporary name and renamed into
place, then named in LATEST (itself replaced atomically). A run killed at any instant leaves
either the previous checkpoint or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int = 0
    bad_epochs: int = 0
    fingerprint: str = ""
    running_loss: float | None = None     # the reported (smoothed) loss goes on where it was
    history: list[dict] = field(default_factory=list)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class CheckpointManager:
    def __init__(self, root: Path, keep: int = 1):
        self.root, self.keep = Path(root), keep
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def best_path(self) -> Path:
        return self.root / "best.safetensors"

    def save(self, tensors: dict[str, torch.Tensor], optimizer_state: dict, state: TrainerState) -> Path:
        """tensors: the trainable weights (trainable_state, or gathered from shards); optimizer_state:
        the optimizer's state dict. Only one process writes (rank 0 of a data-parallel run)."""
        name = f"step-{state.global_step}"
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{name}-"))
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "model.safetensors"))
        # Optimizer state is tensors and numbers only, so it reloads with weights_only=True.
        torch.save({"optimizer": optimizer_state, "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(self.root / "LATEST", name)
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        steps = sorted((p for p in self.root.glob("step-*") if p.name != keep_name),
                       key=lambda p: int(p.name.split("-")[1]))
        for old in steps[: max(len(steps) - (self.keep - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
        for junk in self.root.glob(".tmp-*"):
            shutil.rmtree(junk, ignore_errors=True)

    def latest(self) -> Path | None:
        pointer = self.root / "LATEST"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if (path / "state.json").is_file() else None

    def peek(self, path: Path) -> TrainerState:
        return TrainerState(**json.loads((path / "state.json").read_text()))

    def read(self, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
        """The checkpoint's weights and its optimizer blob (optimizer state, RNG state)."""
        return load_file(str(path / "model.safetensors")), torch.load(path / "optimizer.pt", weights_only=True)

    def load(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainerState:
        tensors, blob = self.read(path)
        model.load_state_dict(tensors, strict=False)
        optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["torch_rng"])
        return self.peek(path)

    def save_best(self, tensors: dict[str, torch.Tensor]) -> None:
        atomic_save_tensors(tensors, self.best_path)

    def load_best(self, model: torch.nn.Module) -> bool:
        if not self.best_path.is_file():
            return False
        model.load_state_dict(load_file(str(self.best_path)), strict=False)
        return True
