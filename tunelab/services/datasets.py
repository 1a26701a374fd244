"""Importing an uploaded file as a tenant's dataset: parse (nothing kept if it cannot be read),
store content-addressed, validate and compute stats (kept with the row, so the UI can show
the report and a job can refuse a dataset with errors).

The file's content decides what it is for: a text+label table (task text-classification), an
archive of images (task image-classification: services/image_datasets.py), or a generative
dataset (chat conversations in OpenAI `messages`, ShareGPT or alpaca form, plain text,
preference pairs). The row's report says so (`task`, `kind`, `format`) and, for generative data,
its stats count turns and tokens with the catalog's chat model's tokenizer."""

from __future__ import annotations

import logging
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from ..data import DataLimits, validate
from ..data.generative_checks import validate_generative
from ..data.stats import _histogram, _length_summary
from ..db.models import MAX_NAME, Dataset
from ..db.scoped import TenantScope
from ..security.storage import dataset_store
from . import image_datasets, parsing

log = logging.getLogger(__name__)

CLASSIFICATION = "text-classification"
LABELLED = "labelled"                  # the kind of a text+label table (the task registry's name)
CHAT_MODEL = "smollm2"                 # whose tokenizer (and chat template) counts generative tokens


@lru_cache(maxsize=4)
def _counter(model_name: str):
    from ..models import resolve_model, token_counter

    spec = resolve_model(model_name)
    return spec.max_length, token_counter(spec)


@lru_cache(maxsize=2)
def _chat_counter(model_name: str = CHAT_MODEL):
    """(max_length, tokenizer, conversation counter) of a catalog causal LM; (None, None, None)
    when it is not installed: the stats then leave token counts out rather than refusing data.

    Only the tokenizer is needed: taken from the imported model folder when there is one, else
    straight from the packaged GGUF (seconds), without importing the weights (the first training
    run does that)."""
    from ..models.catalog import _catalog_entries, list_models
    from ..models.causal import DEFAULT_CHAT_TEMPLATE, conversation_token_counter, load_chat_tokenizer

    try:
        spec = next(s for s in list_models() if s.name == model_name)
        if (spec.path / "tokenizer_config.json").is_file():
            tokenizer = load_chat_tokenizer(spec.path)
        else:
            from transformers import AutoTokenizer

            from ..models.gguf_import import package_file

            source = next(e for e in _catalog_entries() if e["name"] == model_name)["source"]["gguf"]
            gguf = package_file(source["package"], source["file"])
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            if not tokenizer.chat_template:
                tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    except Exception as exc:        # noqa: BLE001 - stats without token counts, said in the log
        log.warning("no tokenizer for %s (%s): generative datasets get no token counts", model_name, exc)
        return None, None, None
    return spec.max_length, tokenizer, conversation_token_counter(tokenizer)


def data_kind(path: Path) -> str | None:
    """chat | plain | preference for a generative file, None for a text+label table (the engine's
    own rule, so that what an upload is and what a job trains on agree)."""
    from ..strategies.generative import read_kind

    try:
        return read_kind(Path(path))
    except RecursionError:
        # JSON nested past the parser's depth in the first line: not generative data as far as
        # anyone can tell; the table reader then refuses it as bad JSON (422, not a 500).
        return None


def task_of_kind(kind: str | None) -> str:
    """The task name a dataset kind trains (the strategies' registry decides)."""
    if kind is None or kind == LABELLED:
        return CLASSIFICATION
    from ..strategies.registry import task_for_kind

    return task_for_kind(kind).name


def import_dataset(session: Session, tenant_id: str, home: Path, upload: Path, filename: str, *,
                   purpose: str = "fine-tune", text_column: str | None = None, label_column: str | None = None,
                   limits: DataLimits | None = None, model: str = "minilm", parsers: int = 0,
                   name: str | None = None, sheet: str | None = None) -> Dataset:
    """DataError when the file cannot be read (nothing stored, no row). `parsers` > 0: the file is
    read and checked in one of that many parser processes (the server: see services/parsing.py).
    `name`: what people call it (default: the file name without its suffix)."""
    named = _private_copy(upload, filename, dataset_store(home, tenant_id).root / "staging")
    try:
        fields = parsing.run(read_dataset, tenant_id, home, named, purpose=purpose, text_column=text_column,
                             label_column=label_column, limits=limits, model=model, workers=parsers,
                             **({"sheet": sheet} if sheet else {}))
    finally:
        shutil.rmtree(named.parent, ignore_errors=True)
    named_by = {"name": name.strip()[:MAX_NAME]} if name and name.strip() else {}
    return TenantScope(session, tenant_id).add(Dataset(**fields, **named_by))


def read_dataset(tenant_id: str, home: Path, named: Path, *, purpose: str, text_column: str | None,
                 label_column: str | None, limits: DataLimits | None, model: str, sheet: str | None = None) -> dict:
    """Parse, store and validate the file `named` (its name is the user's): the new row's fields.
    Runs in a parser process: takes and returns only what pickles, touches no database."""
    # Columns named by the caller: they mean a table, whatever the content looks like.
    if not (text_column or label_column or sheet) and image_datasets.is_image_upload(named):
        return image_datasets.read_image_upload(tenant_id, home, named, purpose=purpose,
                                                max_bytes=limits.max_bytes if limits else None)
    store = dataset_store(home, tenant_id)
    kind = None if (text_column or label_column or sheet) else data_kind(named)
    if kind is None:
        stored = store.import_file(named, text_column=text_column, label_column=label_column, limits=limits,
                                   sheet=sheet)
    else:
        stored = store.import_generative(named, limits=limits)
    # The same bytes stored before decide (content addressing: the first import's reading).
    if stored.kind is not None:
        return _generative_fields(stored, named.name, purpose)
    ds = stored.load()
    max_length, counter = _counter(model)
    report = validate(ds, max_length=max_length, count_tokens=counter)
    return dict(filename=named.name, purpose=purpose, bytes=len(stored.read()),
                sha256=stored.sha256, status="processed" if report.ok else "error",
                text_column=ds.text_column, label_column=ds.label_column, rows=len(ds),
                report={k: v for k, v in report.to_dict().items() if k != "stats"}
                | {"task": CLASSIFICATION, "kind": LABELLED, "format": stored.meta.get("format"),
                   "encoding": stored.meta.get("encoding"), "columns": stored.meta.get("columns"),
                   "read_as": stored.meta.get("read_as")} | _sheets(stored),
                stats=report.stats.get("train", {}))


def _sheets(stored) -> dict:
    """An Excel workbook's sheet names (the dataset page offers the others), else nothing."""
    if stored.meta.get("format") != "xlsx":
        return {}
    from ..data.xlsx import sheet_names

    return {"sheets": sheet_names(stored.read())}


def _private_copy(upload: Path, filename: str, staging: Path) -> Path:
    """The upload moved, under the user's file name (the readers take its suffix as a format
    hint), into a fresh owner-only folder of its own in the tenant's staging area: two uploads of
    the same name, from one tenant or two, never share a path (they did: a rename to
    uploads/<name> let one tenant's upload replace another's between rename and read)."""
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=staging, prefix="upload-"))
    named = folder / upload_name(filename)
    try:
        shutil.move(upload, named)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return named


def upload_name(filename: str) -> str:
    """A file name that stays inside its folder and fits the file system: the last path part,
    never "." or "..", at most 200 bytes (the suffix kept, it is the format hint)."""
    name = Path(filename.replace("\0", "")).name
    if name in ("", ".", ".."):
        return "upload"
    if len(name.encode("utf-8", "surrogateescape")) > 200:
        return "upload" + Path(name).suffix[:20]
    return name


def _generative_fields(stored, filename: str, purpose: str) -> dict:
    ds = stored.load_generative()
    max_length, tokenizer, counter = _chat_counter(CHAT_MODEL)
    lengths: list[int] = []

    def count(examples) -> list[int]:       # validation counts once; the stats reuse its counts
        lengths[:] = counter(examples)
        return list(lengths)

    report = validate_generative(ds, max_length=max_length, count_tokens=count if counter else None)
    stats = dict(report.stats.get("train", {}))
    if lengths:
        stats["length"] = _length_summary(lengths)
        stats["histogram"] = _histogram(lengths)
        stats["roles"] = _role_lengths(ds, tokenizer)
    return dict(filename=filename, purpose=purpose, bytes=len(stored.read()),
                sha256=stored.sha256, status="processed" if report.ok else "error",
                rows=len(ds),
                report={k: v for k, v in report.to_dict().items() if k != "stats"}
                | {"task": task_of_kind(ds.kind), "kind": ds.kind, "format": ds.format,
                   "encoding": stored.meta.get("encoding"), "tokenizer": CHAT_MODEL if counter else None},
                stats=stats)


def _role_lengths(ds, tokenizer) -> dict:
    """Tokens per message, by role (system, user, assistant; text for plain documents; prompt,
    chosen and rejected for preference pairs), without the chat template's markup."""
    texts: dict[str, list[str]] = {}
    for e in ds.examples:
        if hasattr(e, "chosen"):
            texts.setdefault("prompt", []).append("\n".join(m.content for m in e.prompt))
            texts.setdefault("chosen", []).append(e.chosen)
            texts.setdefault("rejected", []).append(e.rejected)
        else:
            for m in e.messages:
                texts.setdefault(m.role, []).append(m.content)
    out = {}
    for role, items in texts.items():
        counts = [len(ids) for ids in tokenizer(items, add_special_tokens=False)["input_ids"]]
        out[role] = {"messages": len(items), "tokens": int(np.sum(counts)), "length": _length_summary(counts)}
    return out


def dataset_task(row: Dataset) -> tuple[str, str]:
    """(task, kind) of a row; rows imported before generative data were text+label tables."""
    report = row.report or {}
    return report.get("task") or CLASSIFICATION, report.get("kind") or LABELLED


def stored_dataset(home: Path, row: Dataset):
    return dataset_store(home, row.tenant_id).get(row.sha256) if row.sha256 else None


def preview(home: Path, row: Dataset, limit: int = 20, *, parsers: int = 0) -> list[dict]:
    """The first rows: {line, text, label} for a table; {line, messages: [{role, content}]} for
    conversations and plain documents; {line, prompt: [{role, content}], chosen, rejected} for
    preference pairs. The stored file is read again: in a parser process when `parsers` > 0."""
    if not row.sha256:
        return []
    if image_datasets.is_image_row(row):       # the sealed thumbnails: no archive to read again
        return image_datasets.preview_images(home, row, limit)
    columns = {"text_column": row.text_column, "label_column": row.label_column} if row.text_column else {}
    return parsing.run(preview_rows, home, row.tenant_id, row.sha256, limit, workers=parsers, **columns)


def preview_rows(home: Path, tenant_id: str, sha256: str, limit: int, *, text_column: str | None = None,
                 label_column: str | None = None) -> list[dict]:
    stored = dataset_store(home, tenant_id).get(sha256)
    if stored is None:
        return []
    if stored.kind is not None:
        return [_example_out(e) for e in stored.load_generative().examples[:limit]]
    ds = stored.load(text_column=text_column, label_column=label_column)
    return [{"line": e.line, "text": e.text, "label": e.label} for e in ds.examples[:limit]]


def _messages(messages) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _example_out(e) -> dict:
    if hasattr(e, "chosen"):
        return {"line": e.line, "prompt": _messages(e.prompt), "chosen": e.chosen, "rejected": e.rejected}
    return {"line": e.line, "messages": _messages(e.messages)}


def delete_dataset(scope: TenantScope, home: Path, dataset_id: str) -> Dataset:
    """Delete the row and, once no other row of the tenant shares its content-addressed blob,
    the stored bytes too (they count in the storage quota until then)."""
    from .retention import drop_dataset_blob

    row = scope.get(Dataset, dataset_id, "dataset")
    scope.delete(row)
    drop_dataset_blob(scope.session, home, scope.tenant_id, row.sha256)
    return row
