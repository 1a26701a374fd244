"""Finding strategies: every module of this package registers what it defines on import."""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Strategy
from .errors import ConfigError
from .task import TASKS, Task

_loaded = False


def load_builtin() -> None:
    """Import every module of the package once (each registers its strategies and tasks)."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
    _loaded = True


def all_strategies() -> list[Strategy]:
    load_builtin()
    order = list(TASKS)
    return sorted((cls() for cls in REGISTRY.values()), key=lambda s: (order.index(s.task.name), s.rank))


def strategies_of(task: Task) -> list[Strategy]:
    """The strategies of a task, cheapest first."""
    return [s for s in all_strategies() if s.task is task]


def task_named(name: str) -> Task:
    load_builtin()          # the built-in tasks come with their strategies
    return TASKS[name]


def task_for_kind(kind: str) -> Task:
    load_builtin()
    for task in TASKS.values():
        if kind in task.data_kinds:
            return task
    raise KeyError(kind)


def available() -> list[str]:
    return [s.name for s in all_strategies()]


def get_strategy(name: str) -> Strategy:
    load_builtin()
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(available())}") from None


def resolve(name: str, task) -> Strategy:
    """The strategy `name` means on `task`'s data: itself, or the one of that task that takes
    the name as an alias ("lora" on conversations is sft-lora). A strategy of another task is a
    ConfigError that lists this task's strategies."""
    load_builtin()
    if name in REGISTRY and REGISTRY[name].task is task:
        return REGISTRY[name]()
    for s in strategies_of(task):
        if name in s.aliases:
            return s
    if name in REGISTRY:
        other = REGISTRY[name].task
        raise ConfigError(f"{name} is a {other.title} strategy; this data is for {task.title}: choose from "
                          f"{', '.join(s.name for s in strategies_of(task))}")
    return get_strategy(name)


def default_strategy(task) -> str:
    """What a job on this task's data runs when it names no strategy."""
    found = [s.name for s in strategies_of(task) if s.is_default]
    return found[0] if found else strategies_of(task)[0].name


def default_compare(task) -> list[str]:
    return [s.name for s in strategies_of(task) if s.in_default_compare]
