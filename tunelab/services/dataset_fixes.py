"""Fixing a text+label dataset in the app, without editing the file: drop the rows with errors
(a new dataset, the original kept), choose which columns are the text and the label (the same
dataset, re-validated), and the rows the report points at (for the page to show them).

The heavy part of each (reading the stored file again, validating) runs where uploads are read:
in a parser process when `parsers` > 0 (see services/parsing.py); the database is touched only here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from ..data import DataError, DataLimits, validate
from ..data.errors import error
from ..db.models import MAX_NAME, Dataset
from ..db.scoped import TenantScope
from ..security.storage import dataset_store
from . import parsing
from .datasets import LABELLED, _counter, dataset_task, read_dataset, upload_name

DERIVED_SUFFIX = " (errors removed)"
ROW_ERRORS = ("empty_text", "missing_label", "rare_label")     # what dropping rows can fix
SHOWN_BAD_ROWS = 20


class NotATable(ValueError):
    """The dataset is generative data (conversations, documents, pairs): it has no rows to drop
    nor text and label columns to choose."""


def _table_row(scope: TenantScope, dataset_id: str) -> Dataset:
    row = scope.get(Dataset, dataset_id, "dataset")
    if dataset_task(row)[1] != LABELLED or not row.sha256:
        raise NotATable(f"{row.id} holds {dataset_task(row)[1]} data, not a table of texts and labels.")
    return row


def bad_lines(examples) -> list[int]:
    """Lines of the rows that make the data unusable: an empty text, no label, or a label that
    is left with a single example (dropping rows can leave another label alone: repeated)."""
    bad = {e.line for e in examples if not e.text.strip() or not e.label.strip()}
    while True:
        counts = Counter(e.label for e in examples if e.line not in bad)
        rare = {e.line for e in examples if e.line not in bad and counts[e.label] < 2}
        if not rare:
            return sorted(bad)
        bad |= rare


def drop_error_rows(scope: TenantScope, home: Path, dataset_id: str, *, model: str = "minilm",
                    parsers: int = 0) -> tuple[Dataset, Dataset, int]:
    """(new dataset, source, rows dropped): a new dataset of the rows without errors, stored like
    any upload (content-addressed, encrypted), named after the source, linked to it in its stats
    (`derived_from`). DataError when there is nothing to drop or nothing would be left."""
    source = _table_row(scope, dataset_id)
    fields, dropped = parsing.run(cleaned_fields, scope.tenant_id, home, source.sha256, source.filename,
                                  source.text_column, source.label_column, source.purpose, model, workers=parsers)
    fields["stats"] = {**fields["stats"], "derived_from": {
        "dataset_id": source.id, "name": source.name, "filename": source.filename,
        "dropped_rows": len(dropped), "dropped_lines": dropped[:1000], "why": "rows with errors removed"}}
    name = (source.name or Path(source.filename).stem)[: MAX_NAME - len(DERIVED_SUFFIX)] + DERIVED_SUFFIX
    row = scope.add(Dataset(**fields, name=name))
    return row, source, len(dropped)


def cleaned_fields(tenant_id: str, home: Path, sha256: str, filename: str, text_column: str,
                   label_column: str, purpose: str, model: str) -> tuple[dict, list[int]]:
    """In a parser process: the stored file without its bad rows, written as JSON Lines (one
    record per row: the text and label columns) and imported like an upload."""
    store = dataset_store(home, tenant_id)
    stored = store.get(sha256)
    if stored is None:
        raise error("missing_file", "the stored file of this dataset is gone.", "Upload the file again.")
    ds = stored.load(text_column=text_column, label_column=label_column)
    dropped = bad_lines(ds.examples)
    if not dropped:
        raise error("nothing_to_drop", "no row has an error that dropping it would fix.",
                    "Read the report: the remaining problems need a change to the file itself.")
    dropped_set = set(dropped)
    kept = [e for e in ds.examples if e.line not in dropped_set]
    if len({e.label for e in kept}) < 2:
        raise error("nothing_left", f"dropping the {len(dropped):,} rows with errors would leave "
                    f"{'no rows' if not kept else 'a single label'}: nothing to train on.",
                    "Fix the file (add examples of at least two labels) and upload it again.")
    lines = (json.dumps({ds.text_column: e.text, ds.label_column: e.label}, ensure_ascii=False) for e in kept)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    staging = store.root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=staging, prefix="fix-"))
    try:
        named = folder / upload_name(Path(filename).stem[:150] + DERIVED_SUFFIX + ".jsonl")
        named.write_bytes(data)
        fields = read_dataset(tenant_id, home, named, purpose=purpose, text_column=ds.text_column,
                              label_column=ds.label_column, limits=DataLimits(max_bytes=max(len(data), 1),
                                                                              max_rows=len(kept) + 1),
                              model=model)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return fields, dropped


def choose_columns(scope: TenantScope, home: Path, dataset_id: str, text_column: str, label_column: str, *,
                   names: dict[str, str] | None = None, model: str = "minilm",
                   parsers: int = 0) -> tuple[Dataset, dict]:
    """(the dataset, its previous columns): the file read again with these columns and validated
    again (its report, stats and status follow). DataError when a column is not in the file.
    `names`: what to call columns on the pages (`report.column_names`; the file keeps its own)."""
    row = _table_row(scope, dataset_id)
    known = (row.report or {}).get("columns") or []
    named = [("names", c) for c in (names or {})]
    for param, name in [("text_column", text_column), ("label_column", label_column)] + named:
        if known and name not in known:
            raise error("missing_column", f'the file has no column "{name}" ({param}); its columns: '
                        + ", ".join(f'"{c}"' for c in known[:50]) + ".", "Choose one of those columns.")
    if text_column == label_column:
        raise error("same_column", f'"{text_column}" cannot be both the text and the label.',
                    "Choose two different columns.")
    fields = parsing.run(revalidated, scope.tenant_id, home, row.sha256, text_column, label_column, model,
                         workers=parsers)
    before = {"text_column": row.text_column, "label_column": row.label_column}
    row.text_column, row.label_column = fields["text_column"], fields["label_column"]
    row.status, row.rows = fields["status"], fields["rows"]
    keep = {k: v for k, v in (row.report or {}).items() if k not in ("ok", "errors", "warnings", "issues")}
    if names is not None:
        keep["column_names"] = {c: n.strip() for c, n in names.items() if n.strip() and n.strip() != c}
    row.report = keep | fields["report"]
    extra = {k: v for k, v in (row.stats or {}).items() if k == "derived_from"}
    row.stats = fields["stats"] | extra
    scope.session.flush()
    return row, before


def revalidated(tenant_id: str, home: Path, sha256: str, text_column: str, label_column: str, model: str) -> dict:
    """In a parser process: the stored table read with these columns, and its validation."""
    stored = dataset_store(home, tenant_id).get(sha256)
    if stored is None:
        raise error("missing_file", "the stored file of this dataset is gone.", "Upload the file again.")
    ds = stored.load(text_column=text_column, label_column=label_column)
    max_length, counter = _counter(model)
    report = validate(ds, max_length=max_length, count_tokens=counter)
    return {"text_column": ds.text_column, "label_column": ds.label_column, "rows": len(ds),
            "status": "processed" if report.ok else "error",
            "report": {k: v for k, v in report.to_dict().items() if k != "stats"},
            "stats": report.stats.get("train", {})}


def rows_with_errors(home: Path, row: Dataset, *, limit: int = SHOWN_BAD_ROWS, parsers: int = 0) -> list[dict]:
    """The first rows the report's errors point at: {line, text, label, codes}, for the page."""
    codes_at: dict[int, list[str]] = {}
    for issue in (row.report or {}).get("issues", []):
        if issue.get("severity") == "error" and issue.get("code") in ROW_ERRORS:
            for line in issue.get("lines") or []:
                codes_at.setdefault(line, []).append(issue["code"])
    if not codes_at or not row.sha256 or dataset_task(row)[1] != LABELLED:
        return []
    wanted = sorted(codes_at)[:limit]
    try:
        found = parsing.run(rows_at, home, row.tenant_id, row.sha256, row.text_column, row.label_column, wanted,
                            workers=parsers)
    except (DataError, parsing.ParserCrashed):
        return []
    return [r | {"codes": codes_at[r["line"]]} for r in found]


def rows_at(home: Path, tenant_id: str, sha256: str, text_column: str | None, label_column: str | None,
            lines: list[int]) -> list[dict]:
    stored = dataset_store(home, tenant_id).get(sha256)
    if stored is None:
        return []
    wanted = set(lines)
    ds = stored.load(text_column=text_column, label_column=label_column)
    return [{"line": e.line, "text": e.text, "label": e.label} for e in ds.examples if e.line in wanted]
