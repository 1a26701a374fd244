"""Batch predictions (jobs of kind batch-predict): every text of a file labelled by a tuned
classifier, as a CSV or JSONL file with one row per input row, in order.

The job process (`run`, called by jobs.child) reads the input a chunk at a time (CSV/TSV, JSONL
or plain text: the text column detected like an upload's, or named), predicts each chunk in one
batch through the model's predictor (the code behind POST /models/{id}/predict), writes each
chunk's rows before reading the next, reports progress with an ETA and stops between chunks when
the worker asks it to (a cancel). The worker (`seal_output`, `bill_predictions`) seals the output
encrypted like a model folder and charges each prediction at the price sheet's rate.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Iterator

OUTPUT_NAMES = {"csv": "predictions.csv", "jsonl": "predictions.jsonl"}
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/jsonl"}
CHUNK = 256                   # texts predicted in one batch (and written before the next is read)
MAX_TEXT_CHARS = 20_000       # a longer cell is cut (the model truncates far earlier anyway)
SAMPLE_ROWS = 200             # rows read ahead to tell a header and the text column
_csv_field_limit_set = False


class BatchInputError(ValueError):
    """The input cannot be read as texts: the user's file, so no retry helps."""


# ---- reading ---------------------------------------------------------------------------------------
def _text_index(columns: list[str], sample: list[list[str]], wanted: str | None) -> int:
    from ..data.columns import TEXT_NAMES, profile_columns, resolve_name
    from ..data.errors import DataError

    if wanted:
        try:
            return resolve_name(wanted, columns, "text")
        except DataError as exc:
            raise BatchInputError(str(exc)) from None
    if len(columns) == 1:
        return 0
    profiles = profile_columns(columns, sample)
    named = {n.lower() for n in TEXT_NAMES}
    return max(profiles, key=lambda p: (p.name.strip().lower() in named, p.mean_len, -p.index)).index


def _delimited(path: Path, wanted: str | None) -> Iterator[tuple[int, str]]:
    from ..data.delimited import detect_delimiter, looks_like_header, make_column_names
    from ..data.columns import TEXT_NAMES

    global _csv_field_limit_set
    if not _csv_field_limit_set:
        csv.field_size_limit(10 * 1024 * 1024)
        _csv_field_limit_set = True
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        head = f.read(65536)
        delim = detect_delimiter(head, "\t" if path.suffix.lower() == ".tsv" else ",") if head.strip() else ","
        f.seek(0)
        reader = csv.reader(f, delimiter=delim)
        sample = []
        for record in reader:
            if any(v.strip() for v in record):
                sample.append(record)
            if len(sample) >= SAMPLE_ROWS:
                break
        if not sample:
            return
        width = max(len(r) for r in sample)
        header = looks_like_header(list(enumerate(sample)), set(TEXT_NAMES)) if len(sample) > 1 or wanted else False
        columns = make_column_names(sample[0] if header else [], width)
        body = sample[1:] if header else sample
        index = _text_index(columns, body or sample, wanted)
        row = 0

        def text_of(record: list[str]) -> str:
            return record[index] if index < len(record) else ""
        for record in body:
            row += 1
            yield row, text_of(record)
        for record in reader:
            if not any(v.strip() for v in record):
                continue
            row += 1
            yield row, text_of(record)


def _jsonl(path: Path, wanted: str | None) -> Iterator[tuple[int, str]]:
    from ..data.columns import TEXT_NAMES

    key = wanted
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        row = 0
        for line in f:
            if not line.strip():
                continue
            row += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                raise BatchInputError(f"Line {row} of the file is not JSON: give one JSON object (or string) a "
                                      "line, or upload a CSV or a text file with one text a line.") from None
            if isinstance(value, str):
                yield row, value
                continue
            if not isinstance(value, dict):
                raise BatchInputError(f"Line {row} holds neither a text nor an object with a text field.")
            if key is None:
                strings = {k: v for k, v in value.items() if isinstance(v, str)}
                named = [k for k in strings if k.lower() in TEXT_NAMES]
                key = named[0] if named else max(strings, key=lambda k: len(strings[k]), default=None)
                if key is None:
                    raise BatchInputError(f"Line {row} has no text field; name it with `text_column`.")
            text = value.get(key)
            if text is not None and not isinstance(text, str):
                text = json.dumps(text)
            yield row, text or ""


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        row = 0
        for line in f:
            text = line.rstrip("\r\n")
            if text.strip():
                row += 1
                yield row, text


def read_texts(path: Path, text_column: str | None = None) -> Iterator[tuple[int, str]]:
    """(row number, text) for each row of the file, in order, without reading it whole."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl(path, text_column)
    elif suffix in (".txt", ".text"):
        rows = _lines(path)
    else:
        rows = _delimited(path, text_column)
    for row, text in rows:
        yield row, text[:MAX_TEXT_CHARS]


def chunks(rows: Iterator[tuple[int, str]], size: int = CHUNK) -> Iterator[list[tuple[int, str]]]:
    batch = []
    for item in rows:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- writing -----------------------------------------------------------------------------------------
class Writer:
    """The output, a chunk of rows at a time: CSV (row, text, label, probability, then each of the
    top k labels and its probability) or JSONL (the same as one object a row)."""

    def __init__(self, f, fmt: str, top_k: int):
        self.f, self.fmt, self.top_k = f, fmt, top_k
        if fmt == "csv":
            self.csv = csv.writer(f, lineterminator="\n")
            self.csv.writerow(["row", "text", "label", "probability",
                               *[c for i in range(1, top_k + 1) for c in (f"top_{i}_label", f"top_{i}_probability")]])

    def write(self, rows: list[tuple[int, str]], labels: list[str], proba) -> None:
        k = min(self.top_k, len(labels))
        pad = ["", ""] * (self.top_k - k)        # fewer labels than top_k: the columns stay, empty
        for (row, text), p in zip(rows, proba):
            order = p.argsort()[::-1][:k]
            top = [(labels[int(i)], round(float(p[i]), 6)) for i in order]
            if self.fmt == "csv":
                self.csv.writerow([row, text, top[0][0], top[0][1], *[v for pair in top for v in pair], *pad])
            else:
                self.f.write(json.dumps({"row": row, "text": text, "label": top[0][0], "probability": top[0][1],
                                         "top_k": [{"label": n, "probability": s} for n, s in top]},
                                        ensure_ascii=False) + "\n")


def predict_file(predictor, source: Path, out: Path, *, fmt: str = "csv", top_k: int = 3,
                 text_column: str | None = None, progress=None, should_stop=None, chunk: int = CHUNK) -> dict:
    """Label every text of `source` into `out`; returns {rows, seconds, rows_per_s}. `progress(done,
    total, eta_s)` after each chunk; `should_stop()` checked between chunks (returns a reason to stop:
    then {stopped: reason} is returned with the rows done so far)."""
    total = sum(1 for _ in read_texts(source, text_column))
    labels = list(predictor.label_names)
    t0, done = time.monotonic(), 0
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = Writer(f, fmt, top_k)
        for batch in chunks(read_texts(source, text_column), chunk):
            reason = should_stop() if should_stop else None
            if reason:
                return {"rows": done, "total": total, "stopped": reason}
            writer.write(batch, labels, predictor.predict_proba([t for _, t in batch]))
            done += len(batch)
            if progress:
                elapsed = time.monotonic() - t0
                progress(done, total, round(elapsed / done * (total - done), 1) if done else None)
    seconds = time.monotonic() - t0
    return {"rows": done, "total": total, "seconds": round(seconds, 3),
            "rows_per_s": round(done / seconds, 1) if seconds > 0 else None}


# ---- the job process -----------------------------------------------------------------------------------
EXIT_OK, EXIT_DATA, EXIT_CONFIG, EXIT_STOPPED = "ok", "data", "config", "stopped"


def run(spec, emit) -> str:
    """The job process's side (jobs.child): how it ended, one of the EXIT_* names here (the child
    turns it into its exit status)."""
    from ..artifacts import load_artifact
    from ..training.control import stop_requested

    job = spec.job
    source, out_dir = Path(spec.train_file), Path(spec.out_dir)
    try:
        predictor = load_artifact(Path(spec.model_dir))
    except Exception as exc:        # a model folder that does not load here fails the same way again
        emit("error", code="invalid_model", message=f"The tuned model could not be loaded: {type(exc).__name__}: {exc}")
        return EXIT_CONFIG
    emit("phase", phase="running", task="batch-predict", model=job.tuned_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / OUTPUT_NAMES[job.output_format]

    def progress(done: int, total: int, eta_s: float | None) -> None:
        emit("progress", phase="predict", step=done, total_steps=total, eta_s=eta_s,
             message=f"{done:,} of {total:,} rows labelled")
    try:
        result = predict_file(predictor, source, out, fmt=job.output_format, top_k=job.top_k,
                              text_column=job.text_column or spec.text_column, progress=progress,
                              should_stop=stop_requested)
    except (BatchInputError, UnicodeError, csv.Error) as exc:
        emit("error", code="invalid_input_file", message=f"The file could not be read as texts: {exc}")
        return EXIT_DATA
    if result.get("stopped"):
        emit("stopped", step=result["rows"], reason=result["stopped"])
        return EXIT_STOPPED
    if result["rows"] == 0:
        emit("error", code="invalid_input_file", message="The file holds no text to label.")
        return EXIT_DATA
    emit("result", kind="batch-predict", rows=result["rows"], seconds=result["seconds"],
         rows_per_s=result["rows_per_s"], format=job.output_format, labels=list(predictor.label_names))
    return EXIT_OK


# ---- the worker's side -----------------------------------------------------------------------------------
def rows_of(result: dict) -> int:
    rows = result.get("rows")
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else 0


def prediction_price() -> tuple[int, str]:
    """Micro-dollars per 1,000 predictions of a batch, and the price sheet's version."""
    from ..billing import prices

    sheet = prices.current()
    return int(sheet.per_1k_batch_predictions), sheet.version


def bill_predictions(session, job, rows: int) -> int:
    """Charge the job's predictions (per 1,000 at the price sheet's rate) from its reservation;
    the compute is metered as for any job. Returns the micro-dollars charged."""
    from ..billing import ledger

    acct = ledger.lock_account(session, job.tenant_id)
    jb = ledger.job_billing(session, job.id)
    per_1k, version = prediction_price()
    amount = rows * per_1k // 1000
    if jb is None or jb.state == "settled" or amount <= 0:
        return 0
    if amount > jb.reserved:
        ledger.reserve(session, acct, jb, amount - jb.reserved, memo="predictions beyond the reservation")
    ledger.post(session, acct, "charge", ledger.RESERVED, ledger.USAGE, amount, job_id=job.id,
                category="predictions", quantity=rows, unit="predictions", price_version=version,
                dedupe_key=f"predictions:{job.id}", memo=f"{rows:,} predictions")
    jb.reserved -= amount
    jb.charged += amount
    return amount


def output_chunks(home: Path, tenant_id: str, sealed: Path, name: str, size: int = 1 << 16) -> Iterator[bytes]:
    """The output file of a sealed batch job, decrypted and read out of its tar a piece at a time."""
    import tarfile

    from ..security.storage import cipher

    with open(sealed, "rb") as src, tarfile.open(fileobj=cipher(home, tenant_id).reader(src), mode="r|") as tf:
        for member in tf:
            if member.name == f"./{name}" and member.isfile():
                fh = tf.extractfile(member)
                while True:
                    piece = fh.read(size)
                    if not piece:
                        return
                    yield piece
    raise FileNotFoundError(name)


def preview(path_chunks: Iterator[bytes], limit: int = 20) -> list[str]:
    """The first lines of an output (for a page), without reading it whole."""
    buf = io.BytesIO()
    for piece in path_chunks:
        buf.write(piece)
        if buf.getvalue().count(b"\n") > limit:
            break
    return buf.getvalue().decode("utf-8", "replace").splitlines()[:limit + 1]
