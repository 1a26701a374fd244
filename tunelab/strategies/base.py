"""The one interface every strategy implements, the task it belongs to, and the registry.

Like peft's tuners: each strategy is a module that registers itself; callers look strategies
up by name and never import a strategy module directly. A strategy declares everything callers
would otherwise branch on (its task, whether it trains, what it leaves cached, whether it needs
CUDA, how it is estimated and evaluated, which lighter strategy fits when it does not): nothing
outside this package compares a strategy's name or keeps a list of names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from ..training.progress import ProgressFn, null_progress
from .errors import ConfigError

__all__ = ["ConfigError", "Params", "RunContext", "Strategy", "StrategyBase", "register", "REGISTRY"]


class Params(BaseModel):
    """Base of every strategy's hyperparameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def for_data(self, splits) -> "Params":
        """The parameters this run uses on these splits: defaults a user did not set may depend
        on the data (a batch size for 20 rows); what a user set is kept."""
        return self


@dataclass
class RunContext:
    model: Any                       # models.ModelSpec
    splits: Any                      # the task's splits (data.Splits, data.generative.GenerativeSplits)
    params: Params
    work_dir: Path                   # checkpoints of this run (resume reads them)
    cache_dir: Path                  # shared caches (frozen features)
    device: str = "cpu"
    precision: str = "no"
    seed: int = 0
    progress: ProgressFn = null_progress
    notes: dict = field(default_factory=dict)   # facts a strategy reports (cache hits, resumed step)


class Strategy(Protocol):
    name: ClassVar[str]
    task: ClassVar[Any]              # a task.Task: the data it takes, how it is evaluated, what it writes and serves
    family: ClassVar[str]            # "transfer" | "fine-tune"
    summary: ClassVar[str]
    advice: ClassVar[str]            # one line for the wizard: when to choose it
    Params: ClassVar[type[Params]]
    rank: ClassVar[int]              # display order within its task: cheapest first
    aliases: ClassVar[tuple[str, ...]]      # other names it answers to on its task's data
    needs_cuda: ClassVar[bool]
    caches: ClassVar[frozenset[str]]        # splits whose features a finished run leaves cached
    in_default_compare: ClassVar[bool]      # in a comparison nobody chose the strategies of
    baseline: ClassVar[bool]                # a cheap reference the wizard's comparisons include
    in_wizard: ClassVar[bool]               # offered by the web wizard (prompting an LM: API and CLI)
    is_default: ClassVar[bool]              # what a job of its task runs when it names no strategy
    lighter: ClassVar[tuple[str, str] | None]   # (strategy, why) that needs less memory
    adjustable_memory: ClassVar[bool]       # batch/checkpointing/length knobs pre-flight may turn
    openai_method: ClassVar[str | None]     # the OpenAI fine-tuning method type it implements
    bench: ClassVar[str | None]             # in the hardware sweep: "quick" (every sweep), "full" (the full one), None
    bench_params: ClassVar[dict]            # its overrides for a short burst in that sweep
    distributed: ClassVar[bool]             # its fit trains on N data-parallel processes (a job's `processes`)

    def check(self, ctx: RunContext) -> None:
        """Raise ConfigError for a configuration that cannot work here. Must be cheap."""

    def estimate(self, ctx: RunContext):
        """Peak memory and time of this run before any work (training.preflight.Estimate)."""

    def fit(self, ctx: RunContext):
        """Train (or build) and return the predictor."""

    def evaluate(self, predictor, ctx: RunContext, progress: ProgressFn) -> tuple[dict, list[dict]]:
        """Metrics on the test split and sample answers (the task's evaluation unless overridden)."""

    def unavailable(self) -> str | None:
        """Why it cannot run on this machine (no CUDA, a missing package), or None."""

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        """Parameters the run trained (measured: what the resource meter saw requires_grad)."""


class StrategyBase:
    """Defaults of the declarations above: a strategy states only where it differs."""

    family: ClassVar[str] = "fine-tune"
    advice: ClassVar[str] = ""
    rank: ClassVar[int] = 50
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_cuda: ClassVar[bool] = False
    caches: ClassVar[frozenset[str]] = frozenset()
    in_default_compare: ClassVar[bool] = False
    lighter: ClassVar[tuple[str, str] | None] = None
    adjustable_memory: ClassVar[bool] = False
    openai_method: ClassVar[str | None] = None
    baseline: ClassVar[bool] = False
    in_wizard: ClassVar[bool] = True       # offered by the web wizard
    is_default: ClassVar[bool] = False     # what a job of its task runs when it names no strategy
    reference_samples_per_s: ClassVar[float] = 185.0   # the advisor's rough training rate
    bench: ClassVar[str | None] = None
    bench_params: ClassVar[dict] = {}
    # Its fit runs the shared loop (training/loop.py) or a transformers Trainer, both of which train
    # on torchrun's ranks: a job may then ask for `processes` > 1.
    distributed: ClassVar[bool] = False

    @property
    def trains(self) -> bool:
        return self.family == "fine-tune"

    def evaluate(self, predictor, ctx: RunContext, progress: ProgressFn) -> tuple[dict, list[dict]]:
        return self.task.evaluate(predictor, ctx, progress)

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        return int(ctx.notes.get("trainable_params", measured if self.trains else 0))

    def method_priority(self, model_parameters: int) -> int:
        """Among the strategies implementing one OpenAI method on a task, the lowest number is chosen."""
        return self.rank

    def default_learning_rate(self, model_parameters: int) -> float | None:
        """The learning rate a run of this size gets when none is set (what OpenAI's
        learning_rate_multiplier multiplies); None for a strategy that has none."""
        field = self.Params.model_fields.get("learning_rate")
        return field.default if field is not None else None

    def unavailable(self) -> str | None:
        """Why this strategy cannot run on this machine (e.g. no CUDA), with what to use instead."""
        return None

    def encode_work(self, *, train: int, val: int, test: int, labels: int, cached: frozenset, params: dict) -> dict:
        """A frozen-encoder run's work for the billing estimate: texts encoded (`texts`), rows a
        head is fitted on (`fit_rows`), contrastive pairs (`pairs`). test: test rows not cached."""
        return {"texts": labels * 8 + test}

    def advise(self, facts, budget: str, cuda: bool) -> tuple[int, str] | None:
        """(priority, why) when this is the strategy to recommend for these facts; lowest wins."""
        return None

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        """A rough time for the wizard, before any model is loaded."""
        from .advice import finetune_seconds

        return finetune_seconds(facts, per_text, scale, params, self.reference_samples_per_s)


REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    REGISTRY[cls.name] = cls
    return cls


def parse_params(strategy: Strategy, overrides: dict | list[str] | None) -> Params:
    """Validate user-given hyperparameters ("key=value" strings or a dict) at the boundary."""
    values: dict = {}
    if isinstance(overrides, dict):
        values = dict(overrides)
    else:
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            values[key.strip().replace("-", "_")] = value.strip()
    try:
        return strategy.Params(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        known = ", ".join(strategy.Params.model_fields)
        raise ConfigError(f"invalid hyperparameters for {strategy.name}: {problems} (known: {known})") from None


Factory = Callable[[], Strategy]
