"""Reading a dataset for whichever task its content belongs to: a table of texts and labels is
text classification; conversations, plain text or preference pairs are a causal LM's."""

from __future__ import annotations

from pathlib import Path

from ..strategies import DataSpec, PreparedData, Task, task_named
from ..strategies.generative import read_kind


def task_of_file(path: Path) -> Task:
    """The task a file's content is for (its kind decides: see strategies.generative.read_kind)."""
    kind = read_kind(Path(path))
    if kind is None:
        return task_named("text-classification")
    from ..strategies import task_for_kind

    return task_for_kind(kind)


def prepare_data(spec: DataSpec, model, max_length: int | None = None) -> PreparedData:
    """Read, validate (errors raise DataError with the report) and split, for the file's task."""
    return task_of_file(spec.train_file).prepare(spec, model, max_length)
