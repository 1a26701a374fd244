"""On paper: how data-parallel training of the benchmarked run would scale to 8 GPUs and 2 nodes.

A data-parallel step is the compute of one rank's share plus the part of the gradient all-reduce
that DDP cannot hide behind the backward pass. The all-reduce of S bytes (the gradients, fp32) is
modelled as NCCL runs it across nodes, in two levels: a ring inside each node of g ranks
(reduce-scatter + all-gather: 2(g-1)/g x S through each rank's link), and between n nodes an
all-reduce of each rank's 1/g share, all g shares at once through the node's network:

    t_allreduce = 2(g-1)/g * S / B_intra + 2(g-1) a_intra  +  2(n-1)/n * S / B_node + 2(n-1) a_inter
    step        = t_compute + exposed(t_allreduce)
    efficiency  = t_compute / step          (samples/s of N ranks over N x one rank's)

exposed: all of it (no overlap: the pessimistic column), or, with DDP's 25 MB buckets reduced
while the backward (2/3 of the compute) still runs, what sticks out past the backward, and at
least the last bucket's share (the optimistic column).

Inputs measured by bench_scaling.py in the same run: the step times, the model's FLOPs per sample,
S, and this machine's gloo all-reduce. Everything else is an assumption, stated in ASSUMPTIONS
and printed with the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GB = 1e9
BUCKET_BYTES = 25 * 2**20          # DDP's default bucket_cap_mb


@dataclass(frozen=True)
class Link:
    name: str
    gbytes_per_s: float            # all-reduce bus bandwidth: a rank's inside a node, a node's between nodes
    latency_us: float              # per hop


# Stated assumptions: vendor figures derated to what NCCL's all-reduce reaches in practice.
NVLINK = Link("NVLink 4 (H100 SXM, NVSwitch)", 360.0, 8.0)          # 450 GB/s a direction nominal
PCIE = Link("PCIe 4.0 x16, no NVLink", 20.0, 10.0)
IB_NDR_8 = Link("8 x InfiniBand NDR 400 Gb/s a node", 8 * 45.0, 15.0)
IB_HDR_1 = Link("1 x InfiniBand HDR 200 Gb/s a node", 22.0, 15.0)
ETH_25 = Link("25 GbE a node", 2.8, 50.0)
ETH_10 = Link("10 GbE a node", 1.1, 50.0)

ASSUMPTIONS = [
    "gradients all-reduced in fp32 (DDP does so under bf16 autocast): S = trainable parameters x 4 bytes",
    "a two-level all-reduce (ring inside the node, then between nodes each rank's 1/g share at once through "
    "the node's network), as NCCL does across nodes",
    "per-GPU step compute for MiniLM `full` = measured FLOPs per sample x per-GPU batch / (989 TFLOP/s bf16 "
    "x 25% MFU), and never below 12 ms: a 6-layer encoder at batch 32 x ~25 tokens is bound by kernel launches "
    "(~30 kernels a layer forward and backward, ~10 us each) and the optimizer, not by FLOPs",
    "CPU rows: the measured global batch split across the ranks (strong scaling), compute = the measured "
    "1-process step / 2; GPU rows: each GPU keeps the measured global batch as its own (weak scaling, global "
    "batch N x 32: the learning rate needs re-tuning there, which this estimate does not cover)",
    "link bandwidths: what all-reduce reaches, below the nominal figures; this machine's is measured",
]


@dataclass(frozen=True)
class Scenario:
    label: str
    per_node: int                  # ranks a node (g)
    nodes: int                     # n
    intra: Link | None
    inter: Link | None
    compute_s: float               # one rank's compute per step

    @property
    def ranks(self) -> int:
        return self.per_node * self.nodes


def allreduce_seconds(nbytes: float, s: Scenario) -> float:
    g, n, t = s.per_node, s.nodes, 0.0
    if g > 1:
        t += 2 * (g - 1) / g * nbytes / (s.intra.gbytes_per_s * GB) + 2 * (g - 1) * s.intra.latency_us * 1e-6
    if n > 1:
        t += 2 * (n - 1) / n * nbytes / (s.inter.gbytes_per_s * GB) + 2 * (n - 1) * s.inter.latency_us * 1e-6
    return t


def efficiency(compute_s: float, comm_s: float, overlap: bool, nbytes: float) -> float:
    """Samples/s of N ranks over N times one rank's: compute over compute + exposed all-reduce."""
    exposed = comm_s
    if overlap:
        last_bucket = comm_s * min(1.0, BUCKET_BYTES / max(nbytes, 1.0))
        exposed = min(comm_s, max(comm_s - 2 / 3 * compute_s, last_bucket))
    return compute_s / (compute_s + exposed)


def gpu_step_seconds(flops_per_sample: float, batch: int, tflops: float = 989.0, mfu: float = 0.25,
                     floor_s: float = 0.012) -> float:
    return max(flops_per_sample * batch / (tflops * 1e12 * mfu), floor_s)


def scenarios(m: dict, measured: Link) -> list[Scenario]:
    """m: the run's measurements: step_1p1t_s / step_1p2t_s (seconds per optimizer step at the
    global batch, 1 process x 1 or 2 threads), global_batch, flops_per_sample."""
    gpu = gpu_step_seconds(m["flops_per_sample"], m["global_batch"])
    return [
        Scenario("this machine, 2 ranks x 1 thread (the model against the measurement)", 2, 1, measured, None,
                 m["step_1p1t_s"] / 2),
        Scenario("2 CPU nodes like this one, 1 rank x 2 threads each", 1, 2, None, ETH_10, m["step_1p2t_s"] / 2),
        Scenario("8 GPUs, one node", 8, 1, NVLINK, None, gpu),
        Scenario("8 GPUs, one node", 8, 1, PCIE, None, gpu),
        Scenario("2 nodes x 8 GPUs", 8, 2, NVLINK, IB_NDR_8, gpu),
        Scenario("2 nodes x 8 GPUs", 8, 2, NVLINK, IB_HDR_1, gpu),
        Scenario("2 nodes x 8 GPUs", 8, 2, NVLINK, ETH_25, gpu),
    ]


def estimate(m: dict, grad_bytes: float, measured: Link) -> list[dict]:
    rows = []
    for s in scenarios(m, measured):
        comm = allreduce_seconds(grad_bytes, s)
        no, yes = efficiency(s.compute_s, comm, False, grad_bytes), efficiency(s.compute_s, comm, True, grad_bytes)
        links = " + ".join(f"{x.name} ({x.gbytes_per_s:.3g} GB/s)" for x in (s.intra, s.inter) if x)
        rows.append({"scenario": s.label, "ranks": s.ranks, "links": links,
                     "intra": asdict(s.intra) if s.intra else None, "inter": asdict(s.inter) if s.inter else None,
                     "compute_ms": s.compute_s * 1e3, "allreduce_ms": comm * 1e3,
                     "efficiency_no_overlap": no, "efficiency_overlap": yes,
                     "speedup_no_overlap": s.ranks * no, "speedup_overlap": s.ranks * yes})
    return rows


def render(rows: list[dict], grad_bytes: float) -> str:
    mib = grad_bytes / 2**20
    lines = [f"On paper: data-parallel scaling of this run (gradients all-reduced per step: {mib:.0f} MiB)",
             "",
             "| scenario | ranks | links | compute ms/step | all-reduce ms | efficiency "
             "(no overlap / overlap) | speed-up |",
             "|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['ranks']} | {r['links']} | {r['compute_ms']:.1f} | "
                     f"{r['allreduce_ms']:.1f} | {r['efficiency_no_overlap']:.0%} / {r['efficiency_overlap']:.0%} | "
                     f"{r['speedup_no_overlap']:.1f}x / {r['speedup_overlap']:.1f}x |")
    lines += ["", "Assumptions:"] + [f"- {a}" for a in ASSUMPTIONS]
    return "\n".join(lines)
