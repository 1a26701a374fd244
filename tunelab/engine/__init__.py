"""The engine: one entry point to run a strategy and one to compare several, for every task
(text classification, chat tuning, preference tuning), with pre-flight planning. The CLI, the
job child, the API and the web all call these."""

from ..strategies import DataSpec, PreparedData
from .compare import Comparison, compare, finish, recommend
from .data import prepare_data, task_of_file
from .planning import DoesNotFit, FitOption, Plan, preflight
from .run import RunResult, make_context, run_strategy, tunelab_home

__all__ = ["DataSpec", "PreparedData", "Comparison", "compare", "finish", "recommend", "prepare_data",
           "task_of_file", "DoesNotFit", "FitOption", "Plan", "preflight", "RunResult", "make_context",
           "run_strategy", "tunelab_home"]
