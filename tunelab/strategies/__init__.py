"""Strategies and the tasks they belong to. Each module registers what it defines; callers use
get_strategy/resolve/available and the strategy's declarations, never a strategy's name."""

from .base import REGISTRY, ConfigError, Params, RunContext, Strategy, StrategyBase, parse_params, register
from .registry import (all_strategies, available, default_compare, default_strategy, get_strategy, load_builtin, resolve,
                       strategies_of, task_for_kind, task_named)
from .task import TASKS, DataSpec, PreparedData, Task

__all__ = ["REGISTRY", "ConfigError", "Params", "RunContext", "Strategy", "StrategyBase", "get_strategy",
           "parse_params", "register", "available", "all_strategies", "resolve", "default_compare", "default_strategy",
           "load_builtin", "strategies_of", "TASKS", "Task", "DataSpec", "PreparedData", "task_for_kind", "task_named"]
