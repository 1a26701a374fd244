"""How little data a classification run may have and still say something: the one place the
minimums live, checked before training (the engine, on the real splits) and before a job is queued
(the service, on the dataset's label counts, with the split arithmetic of `split.py`).

Why these numbers:
- 2 training rows of each label: one example is not a class a model can learn, and the small-data
  heads choose their settings by cross-validation, which holds rows of each label out.
- 1 test row of each label (when the test rows are carved from the file): a label nobody tested
  scores 0 in the macro-F1 average whatever the model does.
- 10 test rows: below that a score is mostly luck. 1 right out of 1 is "100%" with a 95% interval
  of 21–100%; 10 out of 10 still leaves 72–100% (Wilson), which is about the widest a result can be
  and still tell a useful model from a useless one.
- Under 30 test rows a run goes ahead with a warning: its interval is wide (on 20 rows a measured
  0.95, 19 right of 20, is 0.76–0.99), so two models can rarely be told apart.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from .dataset import Splits
from .errors import Issue
from .split import limit_counts, split_counts

TOO_LITTLE = "too_little_data"
THIN = "thin_test_split"


class Minimums(BaseModel):
    """The minimums (see the module's docstring for why each is what it is)."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    train_per_label: int = Field(2, ge=1)
    test_per_label: int = Field(1, ge=0)        # when the test rows come from the file itself
    test_rows: int = Field(10, ge=1)
    thin_test_rows: int = Field(30, ge=1)        # below: a warning that the interval is wide
    validation_fraction: float = 0.1             # split_dataset's defaults, for the advice
    test_fraction: float = 0.2

    def rows_per_label(self) -> int:
        """Rows of a label a file needs for its split to keep the per-label minimums."""
        keep = 1 - self.validation_fraction - self.test_fraction
        return max(math.ceil(self.train_per_label / keep), math.ceil(self.test_per_label / self.test_fraction))

    def file_rows(self) -> int:
        """Rows a file needs for the carved test split to reach `test_rows`."""
        n = self.test_rows
        while int(round(self.test_fraction * n)) < self.test_rows:
            n += 1
        return n


MINIMUMS = Minimums()


def _names(labels: list[str], limit: int = 5) -> str:
    shown = ", ".join(f'"{lab}"' for lab in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def check_counts(counts: dict[str, tuple[int, int, int]], user_test_rows: int | None = None, *,
                 limit: int | None = None, m: Minimums = MINIMUMS) -> list[Issue]:
    """Errors (code too_little_data) and warnings (thin_test_split) for per-label (train,
    validation, test) rows; `user_test_rows`: the rows of a separate test file (else the test rows
    are the carved ones). `limit`: the run's row limit, named in the advice."""
    issues: list[Issue] = []
    carved = user_test_rows is None
    test_rows = sum(t for _, _, t in counts.values()) if carved else user_test_rows
    rows = sum(sum(c) for c in counts.values())
    where = f"with the row limit of {limit:,}" if limit else "in this file"
    raise_limit = " or raise the row limit" if limit else ""
    few_train = sorted(lab for lab, (tr, _, _) in counts.items() if tr < m.train_per_label)
    if few_train:
        detail = ", ".join(f'{counts[lab][0]} row{"" if counts[lab][0] == 1 else "s"} of "{lab}"'
                           for lab in few_train[:5])
        issues.append(Issue(
            "error", TOO_LITTLE,
            f"Too few rows to learn {_names(few_train)} {where}: training would get only {detail}, "
            f"and a label needs at least {m.train_per_label} training rows to be learned.",
            f"Add rows of {_names(few_train)} (at least {m.rows_per_label()} of each label in the file, "
            f"ideally 10 or more){raise_limit}, or drop that label.", count=len(few_train)))
    if carved and m.test_per_label:
        untested = sorted(lab for lab, (tr, _, te) in counts.items() if te < m.test_per_label and lab not in few_train)
        if untested:
            issues.append(Issue(
                "error", TOO_LITTLE,
                f"{_names(untested)} would have no test row {where}: the score could not say whether "
                "the model recognises it (an untested label counts as 0 in the macro-F1 average).",
                f"Add rows of {_names(untested)} (at least {m.rows_per_label()} of each label; "
                f"{int(100 * m.test_fraction)}% of the rows are held out for the test){raise_limit}.",
                count=len(untested)))
    if test_rows < m.test_rows:
        need = (f"at least {m.file_rows():,} rows ({int(100 * m.test_fraction)}% are held out "
                "for the test)") if carved else f"a test file of at least {m.test_rows} rows"
        issues.append(Issue(
            "error", TOO_LITTLE,
            f"Too few rows to test the model {where}: {rows:,} row(s) leave {test_rows} test row(s), and at "
            f"least {m.test_rows} are needed for a score that means something (1 right out of 1 is "
            "\"100%\" with a 95% interval of 21–100%).",
            f"Use {need}{raise_limit if carved else ''}.", count=rows))
    elif test_rows < m.thin_test_rows:
        issues.append(Issue(
            "warning", THIN,
            f"Only {test_rows} test rows: the score's 95% interval will be wide (19 right out of 20 is 0.95, "
            "with an interval of 0.76–0.99), so this run cannot be told apart from a similar one.",
            f"For a sharper score use at least {m.thin_test_rows} test rows"
            + (" (a bigger file, or a bigger row limit)." if carved else " in the test file."), count=test_rows))
    return issues


def planned_issues(label_counts: dict[str, int], *, test_rows: int | None = None, limit: int | None = None,
                   m: Minimums = MINIMUMS) -> list[Issue]:
    """`check_counts` for a dataset known by its label counts only (before any row is read): the
    split `split_dataset` will make, after the row limit `stratified_limit` will apply."""
    counts = {lab: int(c) for lab, c in label_counts.items() if lab and int(c) > 0}
    if limit:
        counts = limit_counts(counts, limit)
    split = split_counts(counts, validation_fraction=m.validation_fraction, test_fraction=m.test_fraction,
                         user_test=test_rows is not None)
    return check_counts(split, test_rows, limit=limit, m=m)


def splits_issues(splits: Splits, *, limit: int | None = None, m: Minimums = MINIMUMS) -> list[Issue]:
    """`check_counts` on the splits a run would really use."""
    labels = list(splits.label_names)
    tally = {lab: [0, 0, 0] for lab in labels}
    for i, part in enumerate((splits.train, splits.validation, splits.test)):
        for lab in part.labels:
            if lab in tally:
                tally[lab][i] += 1
    counts = {lab: (a, b, c) for lab, (a, b, c) in tally.items()}
    user = len(splits.test) if splits.test_origin == "user" else None
    return check_counts(counts, user, limit=limit, m=m)
