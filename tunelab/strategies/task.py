"""A task: what a family of strategies learns from, how it is read, evaluated, compared, written
and served. Text classification, causal-LM supervised tuning and preference tuning are tasks; a
new one (images) is one more subclass here, not another engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

TASKS: dict[str, "Task"] = {}


@dataclass
class DataSpec:
    """Which files to learn from, whatever the task."""
    train_file: Path
    test_file: Path | None = None
    text_column: str | None = None
    label_column: str | None = None
    limit: int | None = None          # a subset of the training file (quick runs)
    seed: int = 0


@dataclass
class PreparedData:
    splits: object                    # data.Splits | data.generative.GenerativeSplits
    report: dict
    spec: DataSpec
    task: "Task"


class Task:
    name: ClassVar[str]               # "text-classification", "chat", "preference"
    title: ClassVar[str]              # in plain words, for people
    data_kinds: ClassVar[tuple[str, ...]]   # the dataset kinds it learns from
    quality: ClassVar[str]            # the metric a comparison ranks by (higher is better)
    quality_label: ClassVar[str]
    material: ClassVar[float]         # a quality difference smaller than this is noise
    serving: ClassVar[str]            # "classify" | "generate": how a tuned model answers
    default_model: ClassVar[str]      # the catalog model a job uses when none is named
    model_kind: ClassVar[str | None] = None     # the kind of base model it needs (None: any)
    inputs: ClassVar[str] = "text"                # what a prediction takes: "text" | "image"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            TASKS[cls.name] = cls()

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # -- data -------------------------------------------------------------------------------
    def kind_of(self, path: Path) -> str | None:
        """The dataset kind of `path` when this task recognises it by content (an image archive),
        else None; asked before the table and generative readers look at the file."""
        return None

    def prepare(self, spec: DataSpec, model, max_length: int | None = None) -> PreparedData:
        """Read, validate (DataError with the report's lines) and split."""
        raise NotImplementedError

    def data_config(self, data: PreparedData) -> dict:
        """What the model folder records of the data it was trained on."""
        raise NotImplementedError

    # -- results ------------------------------------------------------------------------------
    def evaluate(self, predictor, ctx, progress) -> tuple[dict, list[dict]]:
        raise NotImplementedError

    def card(self, config: dict, metrics: dict, report: dict, samples: list[dict]) -> str | None:
        """The model card (None: the artifact's default one)."""
        return None

    # A comparison's table, for people: (row key, header, format) per column.
    columns: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def headline(self, strategy: str, metrics: dict) -> str:
        """One line that says how a finished run did."""
        raise NotImplementedError

    def row(self, strategy: str, metrics: dict) -> dict:
        """A comparison's row: the task's summary and, for every task, the run's throughput."""
        eff = metrics.get("efficiency") or {}
        return {**self.summarize(strategy, metrics), "tokens_per_s": eff.get("tokens_per_s"),
                "mfu": eff.get("mfu"), "usd_per_million_tokens": eff.get("usd_per_million_tokens")}

    def summarize(self, strategy: str, metrics: dict) -> dict:
        """A comparison's row for one finished run; carries `quality` and `cost_seconds`."""
        raise NotImplementedError

    def difference(self, a: dict, b: dict) -> dict | None:
        """Quality of row a minus row b on the same test rows with its interval ({"difference",
        "interval": [lo, hi]}), from the rows' in-memory `_paired` data; None when the rows do
        not carry it (a comparison assembled from finished jobs): intervals are compared then."""
        return None
