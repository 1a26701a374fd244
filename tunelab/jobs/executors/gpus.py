"""Which NVIDIA device nodes a sandboxed job gets: only the GPUs it reserved, never the others on
the machine (bubblewrap's `--dev /dev` starts from an empty /dev; these are bound into it).

The worker's own CUDA_VISIBLE_DEVICES names the GPUs it may use (indices in PCI bus order, as
`nvidia-smi` numbers them, or `GPU-<uuid>` prefixes); unset, the first ones in bus order. A job
reserving n GPUs gets the first n of those: their /dev/nvidia<minor> nodes, the control nodes
CUDA needs (nvidiactl, nvidia-uvm, nvidia-uvm-tools), and a /proc/driver/nvidia/gpus that lists
only them (the recipe of NVIDIA's container toolkit), so CUDA inside numbers them from 0. A job
reserving none gets no NVIDIA node at all. MIG instances (/dev/nvidia-caps) are not passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


@dataclass(frozen=True)
class Board:
    bus: str          # the /proc/driver/nvidia/gpus/<bus> folder name
    uuid: str
    minor: int


def boards(proc_root: Path) -> list[Board]:
    """The GPUs the driver reports, in PCI bus order."""
    found = []
    for folder in sorted(Path(proc_root).glob("*")):
        fields = {}
        try:
            for line in (folder / "information").read_text().splitlines():
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
            found.append(Board(folder.name, fields.get("GPU UUID", ""), int(fields["Device Minor"])))
        except (OSError, KeyError, ValueError):
            continue
    return found


def chosen(all_boards: list[Board], visible: str | None, count: int) -> list[Board]:
    if visible is None or not visible.strip():
        return all_boards[:count]
    picked = []
    for item in (v.strip() for v in visible.split(",")):
        if item.isdigit() and int(item) < len(all_boards):
            picked.append(all_boards[int(item)])
        elif item.startswith("GPU-"):
            picked += [b for b in all_boards if b.uuid.startswith(item)][:1]
        else:      # CUDA stops at the first entry it cannot parse; so do we
            break
    return picked[:count]


@dataclass(frozen=True)
class GpuBinds:
    devices: list[str]          # /dev nodes, bound with --dev-bind
    proc_boards: list[str]      # /proc/driver/nvidia/gpus/<bus> folders kept visible
    proc_root: str | None       # the folder to hide the other boards in (None: leave /proc alone)


def reserved(count: int, visible: str | None, proc_root: str = "/proc/driver/nvidia/gpus",
             dev_root: str = "/dev") -> GpuBinds:
    if count <= 0 or not any(Path(dev_root).glob("nvidia*")):
        return GpuBinds([], [], None)
    picked = chosen(boards(Path(proc_root)), visible, count)
    devices = [f"{dev_root}/nvidia{b.minor}" for b in picked]
    devices += [f"{dev_root}/{name}" for name in CONTROL]
    return GpuBinds([d for d in devices if os.path.exists(d)] if picked else [],
                    [f"{proc_root}/{b.bus}" for b in picked], proc_root if os.path.isdir(proc_root) else None)


def argv(binds: GpuBinds) -> list[str]:
    """bubblewrap options for these binds; after `--proc /proc` and `--dev /dev`."""
    out = []
    for dev in binds.devices:
        out += ["--dev-bind", dev, dev]
    if binds.proc_root:
        out += ["--tmpfs", binds.proc_root]
        for folder in binds.proc_boards:
            out += ["--ro-bind", folder, folder]
    return out
