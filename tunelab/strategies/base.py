"""The one small interface every strategy implements, and the registry that names them.

Like peft's tuners: each strategy is a module that registers itself; callers look strategies
up by name and never import a strategy module directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from ..data import Splits
from ..models import ModelSpec
from ..models.predictors import Predictor
from ..training.progress import ProgressFn, null_progress


class ConfigError(ValueError):
    """A run configuration that cannot work, found before any work is done."""


class Params(BaseModel):
    """Base of every strategy's hyperparameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class RunContext:
    model: ModelSpec
    splits: Splits
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
    family: ClassVar[str]            # "transfer" | "fine-tune"
    summary: ClassVar[str]
    Params: ClassVar[type[Params]]

    def check(self, ctx: RunContext) -> None:
        """Raise ConfigError for a configuration that cannot work here. Must be cheap."""

    def fit(self, ctx: RunContext) -> Predictor:
        """Train (or build) and return the predictor."""


REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    from . import _load_all  # noqa: F401  (registers the built-in strategies)

    try:
        return REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(sorted(REGISTRY))}") from None


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
