"""What the training loop needs to run on N data-parallel processes (torchrun's ranks).

`LoopConfig.batch_size` stays the global batch: every rank forms the same epoch batches
(training/batching.py is seeded) and takes its slice of each, weighted so that the gradient the
ranks average equals the one a single process computes over the whole batch. The process group is
torch.distributed's (gloo on CPU, NCCL on GPUs), started by accelerate or here; nothing of our own
is a collective. FSDP2 (`fully_shard`) shards the parameters, gradients and optimizer state of a
causal LM across the ranks when one device cannot hold them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


class RankDone(BaseException):
    """Raised on a rank other than 0 when its share of training is over: rank 0 alone evaluates the
    model and writes it. A BaseException, so that no `except Exception` on the way mistakes it for
    a failure; the job process (and the CLI) end such a rank quietly with status 0."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        """torchrun's variables; one process when they are absent."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def local_gpu() -> int:
    """The GPU of this rank among the job's (CUDA_VISIBLE_DEVICES): one each, by local rank."""
    return World.from_env().local_rank


def init_process_group(device: str) -> None:
    """Join torchrun's process group (accelerate does the same when it is first)."""
    import torch.distributed as dist

    if World.from_env().distributed and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(World.from_env().local_rank)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_batch_share(index: np.ndarray, world: World, sizes: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """This rank's rows of a global batch and the weight of its mean loss.

    Rows are dealt out in turn (the batch is sorted by length, so every rank gets a similar mix);
    together the ranks take each row once. `sizes`: what the task's loss is a mean over, per row
    (1 a row for a classifier's mean over rows, trained tokens for a causal LM's mean over tokens).
    Weight = (this rank's share of the batch's sizes) x W, because DDP and FSDP average the ranks'
    gradients. A rank left without rows (a short last batch) still runs one row at weight 0: every
    rank must take part in each gradient reduction."""
    if not world.distributed:
        return index, 1.0
    local = index[world.rank::world.world_size]
    if len(local) == 0:
        return index[:1], 0.0
    if sizes is None:
        share = len(local) / len(index)
    else:
        total = float(sizes[index].sum())
        share = float(sizes[local].sum()) / total if total else len(local) / len(index)
    return local, share * world.world_size


def agree_stop(reason: str | None) -> str | None:
    """A stop requested on any rank (a signal reaches only one of them) stops them all at the same
    optimizer step: a max over the ranks, once a step."""
    if not active():
        return reason
    import torch.distributed as dist

    flag = torch.tensor([1 if reason else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not flag.item():
        return None
    return reason or "stop requested on another rank"


def losses_over_ranks(losses: list[float]) -> list[float]:
    """The global batches' losses from the ranks' weighted parts (a sum over the ranks)."""
    if not active():
        return losses
    import torch.distributed as dist

    t = torch.tensor(losses, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def sum_over_ranks(value: int) -> int:
    if not active():
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t)
    return int(t.item())


def broadcast(obj):
    """Rank 0's value on every rank (a decision all ranks must take the same way)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def _comm_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---- FSDP2 ----------------------------------------------------------------------------------

def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks: the ModuleList that holds most of the parameters."""
    best, size = [], 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            n = sum(p.numel() for p in module.parameters())
            if n > size:
                best, size = list(module), n
    return best


def shard_model(model: torch.nn.Module, device: str = "cpu") -> torch.nn.Module:
    """fully_shard each transformer block, then the root (embeddings, head, what is left): a
    block's parameters are gathered only while it runs."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    world = World.from_env()
    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (world.world_size,))
    for block in _blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters as whole tensors on the CPU of rank 0 (a collective: every rank
    calls it; the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    full = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    out, seen = {}, set()
    for k, v in full.items():
        if k in trainable:        # tied weights come back as one tensor twice: safetensors wants copies
            out[k] = v.clone() if v.data_ptr() in seen else v
            seen.add(v.data_ptr())
    return out


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, whole, on rank 0 (a collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    tensors: dict[str, torch.Tensor], optimizer_state: dict | None) -> None:
    """Whole tensors (read from a checkpoint by every rank) into the sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, tensors, options=_full_options(strict=False))
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=_full_options())
