"""Infrastructure: what this machine measured in `tunelab bench hardware` (hardware/store.py keeps
one result a run), what that means for cost, and the history that shows a machine getting slower.
Hardware figures are the machine's, not a tenant's: any signed-in key reads the same answer.

Money here is a rate, not a charge: floats of US dollars (`usd_per_...`), often well under a
micro-dollar a unit. An estimated job's cost is integer micro-dollars (`cost`) with `cost_usd` as
an exact decimal string, as in billing."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Obj


class HardwareFigure(Obj):
    """One measurement: the median of several timed runs."""
    name: str = Field(description="matmul_fp32, matmul_bf16, memory_bandwidth, disk_read, h2d, ...")
    label: str | None = None
    unit: str | None = Field(None, description="GFLOP/s, GB/s, MB/s")
    median: float | None = None
    spread: float | None = Field(None, description="(p90 - p10) / median of the runs")
    runs: int | None = None
    noisy: bool = Field(False, description="the runs varied too much for the median to be precise")
    higher_is_better: bool = True


class ModelThroughput(Obj):
    """A real model's training (or prediction) steps on this machine."""
    model: str
    strategy: str
    kind: str | None = Field(None, description="training, or prediction (a forward pass only)")
    precision: str | None = None
    batch: int | None = None
    seq_len: float | None = Field(None, description="mean tokens a row of the run")
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    step_p50_s: float | None = Field(None, description="median seconds a step")
    step_p95_s: float | None = Field(None, description="95th percentile of seconds a step (the slow ones)")
    peak_mb: float | None = None
    mfu: float | None = Field(None, description="model FLOPs utilisation, 0..1: useful work against what "
                                                "the `mfu_of` figure says the machine can do")
    mfu_of: str | None = None
    usd_per_million_tokens: float | None = None
    usd_per_1k_predictions: float | None = Field(None, description="prediction rows only")


class FigureChange(Obj):
    name: str
    value: float | None = None
    previous: float | None = None
    ratio: float | None = Field(None, description="value / previous")
    regressed: bool = False
    message: str | None = Field(None, description="the change in plain words")


class RunComparison(Obj):
    """This run against the one before it on the same machine."""
    against: str | None = None
    against_created: str | None = None
    threshold: float | None = None
    changes: list[FigureChange] = []
    regressions: list[str] = []
    messages: list[str] = Field([], description="each regression in plain words")


class HardwareRun(Obj):
    id: str
    created: str | None = None
    worker: str | None = None
    quick: bool | None = None
    sweep: bool | None = Field(None, description="false: the device figures only, no model runs (a benchmark job "
                                                 "with `sweep: false`); null: not recorded (the CLI's runs)")
    seconds: float | None = None
    device: dict[str, Any] = {}
    figures: list[HardwareFigure] = []
    models: list[ModelThroughput] = []
    comparison: RunComparison | None = None


class HistoryPoint(Obj):
    id: str
    created: str | None = None
    median: float


class FigureHistory(Obj):
    """One figure over every stored run of the machine, oldest first."""
    name: str
    label: str | None = None
    unit: str | None = None
    higher_is_better: bool = True
    points: list[HistoryPoint] = []


class Inventory(Obj):
    measured: dict[str, Any] | None = Field(None, description="the device as the latest run saw it")
    live: dict[str, Any] = Field(description="this server now: cpu_cores, torch, cuda, gpus")


class CostBasis(Obj):
    """The price sheet's rate for the measured device: what a second of it costs."""
    device: str = Field(description='"cpu" (per core) or "gpu:<type>"')
    units: int
    price_version: str
    usd_per_hour: float
    usd_per_second: float
    serving_usd_per_1k_requests: float | None = Field(None, description="the list price of 1K predictions "
                                                                        "through the API")


class ModelCost(Obj):
    model: str
    strategy: str
    usd_per_million_tokens: float | None = None
    usd_per_1k_predictions: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None


class Costs(Obj):
    basis: CostBasis | None = None
    training: list[ModelCost] = Field([], description="$ per 1M training tokens, a training row each")
    predictions: list[ModelCost] = Field([], description="$ per 1K predictions, a prediction row each")


class TypicalJob(Obj):
    """The billing estimate of a typical job for a catalog model on this hardware."""
    model: str
    model_name: str | None = None
    task: str
    task_title: str | None = None
    data: str = Field(description="the typical data, in words")
    rows: int
    strategy: str
    device: str
    wall_seconds: float
    wall_seconds_range: list[float]
    cost: int = Field(description="micro-dollars")
    cost_usd: str
    cost_range_usd: list[str]
    price_version: str | None = None


class Infrastructure(Obj):
    object: str = "infrastructure"
    worker: str | None = Field(None, description="the machine shown (a folder of results)")
    workers: list[str] = []
    has_results: bool
    message: str | None = Field(None, description="when nothing is stored yet: what to run")
    runs: int = 0
    inventory: Inventory
    latest: HardwareRun | None = None
    history: list[FigureHistory] = []
    costs: Costs | None = None
    typical_jobs: list[TypicalJob] = []


class InfrastructureExport(Obj):
    """GET /api/v1/infrastructure/export?format=json: the latest run's figures and model table."""
    object: str = "infrastructure.export"
    worker: str | None = None
    run: str | None = None
    created: str | None = None
    device: dict[str, Any] | None = None
    figures: list[HardwareFigure] = []
    models: list[ModelThroughput] = []
