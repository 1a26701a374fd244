"""What a worker has to run jobs on, what each job needs of it, and what each job is handed.

The inventory: the CPUs this process may run on and each GPU (index, uuid, memory), read from
`nvidia-smi` (no CUDA context in the worker), within the worker's own CUDA_VISIBLE_DEVICES;
`settings.worker_gpus` (TUNELAB_WORKER_GPUS) declares them instead: "2", or memory MBs
"24000,80000" (tests, or a dry run of a GPU set-up on a CPU machine); "0": none.

A job needs one GPU per process on a GPU worker (none on a CPU-only one: a CUDA-only strategy then
fails in its own words, as before), and at least one CPU per process. It is given its share of
the CPUs (all of them on a CPU-only worker running one job at a time; on a GPU worker the CPUs
that go with its GPUs), never more than are free: reservations never oversubscribe. Its env
names exactly its GPUs (CUDA_VISIBLE_DEVICES, by uuid where known), its CPUs (TUNELAB_JOB_CPUS)
and the threads of each of its processes (OMP_NUM_THREADS = CPUs // processes, at most the
operator's own OMP_NUM_THREADS when the worker was started with one).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from glob import glob

from ..billing.devices import cpu_cores
from ..contract.resources import placement_line  # noqa: F401  (the worker says it as the API does)

THREAD_VARS = ("OMP_NUM_THREADS",)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str = ""            # "GPU-…" as nvidia-smi prints it; "" for a declared one
    memory_mb: int = 0

    @property
    def visible_id(self) -> str:
        """How CUDA_VISIBLE_DEVICES names it: the uuid is the same whatever the device order."""
        return self.uuid or str(self.index)

    def to_dict(self) -> dict:
        return {"index": self.index, "uuid": self.uuid or None, "memory_mb": self.memory_mb or None}


@dataclass(frozen=True)
class Inventory:
    node: str
    cpus: int
    gpus: tuple[Gpu, ...] = ()
    declared: bool = False       # GPUs from settings.worker_gpus, not from the machine

    def default_max_jobs(self) -> int:
        return max(1, len(self.gpus))


def declared_gpus(text: str) -> tuple[Gpu, ...]:
    """settings.worker_gpus: a count ("2") or memory MBs ("24000,80000")."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not all(t.isdigit() for t in items):
        raise ValueError(f"TUNELAB_WORKER_GPUS={text!r}: write a count of GPUs (\"2\") or their memory "
                         "in MB, comma-separated (\"24000,80000\")")
    if len(items) == 1 and int(items[0]) <= 64:        # a count (64+ MB of memory is no GPU's)
        return tuple(Gpu(i) for i in range(int(items[0])))
    return tuple(Gpu(i, "", int(mb)) for i, mb in enumerate(items))


def _visible(all_gpus: list[Gpu], visible: str | None) -> tuple[Gpu, ...]:
    """The GPUs the worker's own CUDA_VISIBLE_DEVICES leaves it (indices or uuid prefixes)."""
    if visible is None:
        return tuple(all_gpus)
    picked = []
    for item in (v.strip() for v in visible.split(",")):
        match = [g for g in all_gpus if (item.isdigit() and g.index == int(item))
                 or (item.startswith("GPU-") and g.uuid.startswith(item))]
        if not match:          # CUDA stops at the first entry it cannot use; so do we
            break
        picked.append(match[0])
    return tuple(dict.fromkeys(picked))


def nvidia_smi_gpus() -> list[Gpu]:
    """The machine's NVIDIA GPUs as nvidia-smi lists them; [] without the tool or a driver."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        out = subprocess.run([tool, "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],  # safe: fixed argv
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], int(parts[2]) if parts[2].isdigit() else 0))
    return gpus


def _torch_gpus() -> list[Gpu]:
    """Only where device nodes exist but nvidia-smi does not (a slim image): torch's view, which
    already applies CUDA_VISIBLE_DEVICES, so the uuids name them."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            uuid = str(getattr(props, "uuid", "") or "")
            out.append(Gpu(i, f"GPU-{uuid}" if uuid and not uuid.startswith("GPU-") else uuid,
                           int(props.total_memory // 2**20)))
        return out
    except Exception:       # a broken driver: no GPUs, the worker still runs CPU jobs
        return []


def inventory(settings) -> Inventory:
    node = socket.gethostname()
    declared = getattr(settings, "worker_gpus", None)
    if declared is not None and str(declared).strip():
        return Inventory(node, cpu_cores(), declared_gpus(declared), declared=True)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return Inventory(node, cpu_cores())
    gpus = nvidia_smi_gpus()
    if gpus:
        return Inventory(node, cpu_cores(), _visible(gpus, visible))
    if glob("/dev/nvidia[0-9]*"):
        return Inventory(node, cpu_cores(), tuple(_torch_gpus()))
    return Inventory(node, cpu_cores())


@dataclass(frozen=True)
class Need:
    processes: int
    gpus: int
    cpus: int          # at least one a process


def need_of(spec: dict, inv: Inventory) -> Need:
    processes = max(1, int((spec or {}).get("processes") or 1))
    return Need(processes, processes if inv.gpus else 0, processes)


@dataclass(frozen=True)
class Reservation:
    job_id: str
    processes: int
    cpus: int
    gpus: tuple[Gpu, ...] = ()
    remote: bool = False         # on another machine: its GPUs are counted here, named there

    def threads_per_process(self, cap: int | None = None) -> int:
        threads = max(1, self.cpus // self.processes)
        return min(threads, cap) if cap else threads

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with this job's devices: its GPUs only, its CPUs, its threads a process."""
        out = dict(base)
        cap = _thread_cap(base)
        threads = str(self.threads_per_process(cap))
        out.update(TUNELAB_JOB_CPUS=str(self.cpus), **{v: threads for v in THREAD_VARS})
        if self.gpus and not self.remote:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(g.visible_id for g in self.gpus)
        else:        # a CPU job sees no GPU, even on a GPU worker
            out.pop("CUDA_VISIBLE_DEVICES", None)
        return out

    def placement(self, inv: Inventory, executor: str, worker: str, base_env: dict[str, str]) -> dict:
        """Where the job runs, as the API and the job page show it."""
        devices = ([f"gpu x{len(self.gpus)}"] if self.remote else [f"gpu:{g.index}" for g in self.gpus]) \
            if self.gpus else [f"cpu x{self.cpus}"]
        return {"node": inv.node, "worker": worker, "executor": executor, "devices": devices,
                "gpus": [g.to_dict() for g in self.gpus], "cpus": self.cpus, "processes": self.processes,
                "threads_per_process": self.threads_per_process(_thread_cap(base_env))}


def _thread_cap(env: dict[str, str]) -> int | None:
    value = str(env.get("OMP_NUM_THREADS", "")).strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass
class Devices:
    """One worker's devices and who holds what (thread-safe: jobs end in their own threads).

    `elsewhere`: its executor places jobs on other machines (a cluster: the executor's
    `places_jobs`), which hold the devices and queue for them; here only the jobs at once
    (worker_max_jobs, default 1) are counted, and a job asks for its GPUs as before (one a process
    where this machine has GPUs or the strategy needs CUDA: billing.quotas.gpus_of)."""
    inv: Inventory
    max_jobs: int
    elsewhere: bool = False
    _held: dict[str, Reservation] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, settings, elsewhere: bool = False) -> "Devices":
        if elsewhere:
            return cls(Inventory(socket.gethostname(), cpu_cores()), settings.worker_max_jobs or 1, elsewhere=True)
        inv = inventory(settings)
        return cls(inv, settings.worker_max_jobs or inv.default_max_jobs())

    def need_of(self, spec: dict) -> Need:
        if not self.elsewhere:
            return need_of(spec, self.inv)
        from ..billing.quotas import gpus_of

        processes = max(1, int((spec or {}).get("processes") or 1))
        return Need(processes, gpus_of(spec or {}), processes)

    def running(self) -> int:
        with self._lock:
            return len(self._held)

    def has_room(self) -> bool:
        return self.running() < self.max_jobs

    def _free(self) -> tuple[int, list[Gpu]]:
        used_gpus = {g for r in self._held.values() for g in r.gpus}
        return (self.inv.cpus - sum(r.cpus for r in self._held.values()),
                [g for g in self.inv.gpus if g not in used_gpus])

    def _share(self, need: Need) -> int:
        """CPUs the job gets: those that go with its GPUs, or its slot's part of the machine."""
        if self.inv.gpus:
            share = self.inv.cpus * need.gpus // len(self.inv.gpus)
        else:
            share = self.inv.cpus // self.max_jobs
        return max(need.cpus, share)

    def never_fits(self, need: Need) -> str | None:
        if self.elsewhere:          # the cluster's executor says so, if no node is large enough
            return None
        if need.gpus > len(self.inv.gpus):
            return (f"it needs {need.gpus} GPUs ({need.processes} processes, one GPU each) and this worker "
                    f"has {len(self.inv.gpus)}: it waits for a worker with more, or run it on fewer processes")
        if need.cpus > self.inv.cpus:
            return (f"it needs {need.cpus} CPUs ({need.processes} processes, one CPU each at least) and this "
                    f"worker has {self.inv.cpus}: it waits for a worker with more, or run it on fewer processes")
        return None

    def why_not(self, need: Need) -> str | None:
        """None when the job fits the free devices now; else why it waits."""
        problem = self.never_fits(need)
        if problem or self.elsewhere:
            return problem
        with self._lock:
            cpus, gpus = self._free()
        if need.gpus > len(gpus):
            return (f"waiting for a GPU: it needs {need.gpus} and {len(gpus)} of this worker's "
                    f"{len(self.inv.gpus)} {'is' if len(gpus) == 1 else 'are'} free")
        if min(self._share(need), self.inv.cpus) > cpus:
            return f"waiting for CPUs: it needs {self._share(need)} and {cpus} of this worker's {self.inv.cpus} are free"
        return None

    def reserve(self, job_id: str, need: Need) -> Reservation | None:
        with self._lock:
            if len(self._held) >= self.max_jobs or self.never_fits(need):
                return None
            if self.elsewhere:      # the node's devices: named by the executor once placed
                held = Reservation(job_id, need.processes, max(need.cpus, self.inv.cpus),
                                   tuple(Gpu(i) for i in range(need.gpus)), remote=True)
                self._held[job_id] = held
                return held
            cpus, gpus = self._free()
            want = min(self._share(need), self.inv.cpus)
            if need.gpus > len(gpus) or want > cpus:
                return None
            held = Reservation(job_id, need.processes, want, tuple(gpus[:need.gpus]))
            self._held[job_id] = held
            return held

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)
