"""The engine: one entry point to run a strategy and one to compare several, for every task
(text classification, chat tuning, preference tuning), with pre-flight planning. The CLI, the
job child, the API and the web all call these.

Names are loaded on first use (PEP 562): the web's comparison tables need `finish` only, and the
server should not load torch to show them."""

from importlib import import_module

# Bound here, not lazily: the function `compare` shares its name with its module, which the
# import system would otherwise leave as the package's attribute.
from .compare import Comparison, compare, finish, recommend

_HOME = {"Budget": "budget", "BudgetError": "budget", "parse_duration": "budget", "prepare_data": "data", "task_of_file": "data", "DoesNotFit": "planning", "FitOption": "planning",
         "Plan": "planning", "preflight": "planning", "RunResult": "run", "make_context": "run",
         "run_strategy": "run", "plan_strategy": "run", "execute": "run", "Planned": "run", "tunelab_home": "run"}
_STRATEGIES = ("DataSpec", "PreparedData")

__all__ = [*_STRATEGIES, "Comparison", "compare", "finish", "recommend", *_HOME]


def __getattr__(name: str):
    if name in _STRATEGIES:
        return getattr(import_module("..strategies", __name__), name)
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
