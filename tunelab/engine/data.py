"""Reading a dataset for whichever task its content belongs to: a table of texts and labels is
text classification; conversations, plain text or preference pairs are a causal LM's."""

from __future__ import annotations

from pathlib import Path

from ..data import DataError, Splits
from ..data.minimums import splits_issues
from ..strategies import DataSpec, PreparedData, Task, task_named
from ..strategies.generative import read_kind


def task_of_file(path: Path) -> Task:
    """The task a file's content is for: a task that recognises it by content (an image archive:
    Task.kind_of) first, then its kind (see strategies.generative.read_kind)."""
    from ..strategies import TASKS, load_builtin, task_for_kind

    load_builtin()
    for task in list(TASKS.values()):
        kind = task.kind_of(Path(path))
        if kind is not None:
            return task_for_kind(kind)
    kind = read_kind(Path(path))
    if kind is None:
        return task_named("text-classification")
    return task_for_kind(kind)


def prepare_data(spec: DataSpec, model, max_length: int | None = None) -> PreparedData:
    """Read, validate (errors raise DataError with the report) and split, for the file's task. Labelled
    splits too small for a result that means something are refused here, where every caller (CLI,
    job, sweep) comes through: see data/minimums.py for the numbers and why."""
    data = task_of_file(spec.train_file).prepare(spec, model, max_length)
    if isinstance(data.splits, Splits):
        s = data.splits
        used = len(s.train) + len(s.validation) + (len(s.test) if s.test_origin != "user" else 0)
        issues = splits_issues(s, limit=spec.limit if spec.limit and spec.limit <= used else None)
        errors = [i for i in issues if i.severity == "error"]
        if errors:
            raise DataError(errors)
        if issues and isinstance(data.report, dict):
            data.report.setdefault("issues", []).extend(i.to_dict() for i in issues)
            data.report["warnings"] = data.report.get("warnings", 0) + len(issues)
    return data
