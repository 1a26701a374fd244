"""Dataset-level checks of generative data, in the core's `Report` shape: duplicates, examples
over the context length (how many would be truncated), identical chosen/rejected answers.

| code                   | severity | meaning                                                      |
|------------------------|----------|--------------------------------------------------------------|
| duplicate_conversation | warning  | the same conversation (or pair) appears more than once       |
| too_long               | warning  | examples over the context length: they will be truncated     |
| identical_pair         | warning  | a preference pair whose chosen and rejected answers are equal |
| too_few_examples       | error    | fewer than 2 examples: nothing to train and evaluate on      |
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from .errors import Issue
from .generative import GenerativeDataset
from .validation import Report

CountTokens = Callable[[list], list[int]]


def validate_generative(ds: GenerativeDataset, *, max_length: int | None = None,
                        count_tokens: CountTokens | None = None) -> Report:
    issues: list[Issue] = []
    if len(ds) < 2:
        issues.append(Issue("error", "too_few_examples", f"the file has {len(ds)} usable example(s).",
                            "Add more examples: at least a few dozen for a useful fine-tune."))
    groups: dict[str, list[int]] = defaultdict(list)
    for e in ds.examples:
        groups[e.key()].append(e.line)
    repeats = [lines for lines in groups.values() if len(lines) > 1]
    if repeats:
        lines = sorted(n for group in repeats for n in group[1:])
        issues.append(Issue("warning", "duplicate_conversation",
                            f"{len(lines)} example(s) repeat an earlier one.",
                            "Remove the repeats: they weigh those examples more and can leak into the "
                            "held-out split.", lines=lines[:1000], count=len(lines)))
    if ds.kind == "preference":
        same = [e.line for e in ds.examples if e.chosen.strip() == e.rejected.strip()]
        if same:
            issues.append(Issue("warning", "identical_pair", f"{len(same)} pair(s) have the same chosen and "
                                "rejected answer: they teach nothing.", "Remove them or fix the answers.",
                                lines=same[:1000], count=len(same)))
    stats = {"rows": len(ds), "format": ds.format, "kind": ds.kind}
    if ds.kind == "chat":
        turns = [len(e.messages) for e in ds.examples]
        stats["turns"] = {"mean": float(np.mean(turns)) if turns else 0.0, "max": max(turns, default=0)}
    if count_tokens is not None and len(ds):
        lengths = np.asarray(count_tokens(ds.examples))
        stats["length_unit"] = "tokens"
        stats["length"] = {"mean": float(lengths.mean()), "p95": int(np.percentile(lengths, 95)),
                           "max": int(lengths.max())}
        if max_length:
            over = [e.line for e, n in zip(ds.examples, lengths) if n > max_length]
            if over:
                issues.append(Issue("warning", "too_long", f"{len(over)} of {len(ds)} examples are over the "
                                    f"context length of {max_length} tokens and will be truncated (the longest "
                                    f"has {int(lengths.max())}).",
                                    "Shorten them, split long conversations, or raise --set max_length= "
                                    "(up to the model's maximum).", lines=over[:1000], count=len(over)))
    return Report(issues, {"train": stats})
