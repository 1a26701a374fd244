"""Excel workbooks (.xlsx, .xlsm) into a `Table`, read with openpyxl in read-only streaming mode.

A workbook is a zip of XML files, so it is checked like any archive a user sends before openpyxl
opens it: a cap on members, and on the size the members expand to (overall and against the file's
size: the mark of a zip bomb). Rows are streamed and counted as they are read, so a sheet that
claims (or holds) millions of rows stops at the row limit with a clear message, and only the first
`MAX_COLUMNS` columns are ever materialised.

Values are what Excel shows, as text: formulas give their cached result (`data_only=True`), whole
numbers lose their ".0", other numbers keep 15 significant digits (0.1 + 0.2 reads "0.3"), dates
read 2024-03-05 (with the time when there is one), TRUE/FALSE stay as Excel writes them.

Line numbers are the sheet's row numbers, so the report's "line 12" is the row 12 the user sees.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile

from .delimited import Table, looks_like_header, make_column_names
from .errors import DataError, error

SUFFIXES = (".xlsx", ".xlsm")
MAX_MEMBERS = 2_000
MAX_EXPANDED_BYTES = 2 * 1024**3       # the whole workbook's XML, however well it compresses
MAX_RATIO = 200                        # expanded / compressed, for the workbook as a whole
MIN_EXPANDED_ALLOWANCE = 64 * 1024**2  # a tiny workbook may still expand this far
MAX_COLUMNS = 1_000
MAX_SHEET_NAME = 100                   # Excel's own limit is 31 characters


def is_workbook(data: bytes) -> bool:
    """A zip holding xl/workbook.xml: an Office Open XML workbook, whatever its name says."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(n in ("xl/workbook.xml", "xl/workbook.bin") for n in zf.namelist()[:MAX_MEMBERS])
    except (zipfile.BadZipFile, ValueError, OSError):
        return False


def check_archive(data: bytes) -> None:
    """Refuse a workbook whose zip could not be read safely (before openpyxl opens it)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise error("unsupported_format", f"the workbook could not be opened ({exc}).",
                    "Open it in Excel and save it again as .xlsx, or export the sheet as CSV UTF-8.") from None
    if len(infos) > MAX_MEMBERS:
        raise error("too_large", f"the workbook holds {len(infos):,} parts (limit {MAX_MEMBERS:,}).",
                    "Save the sheet with the data as a workbook of its own, or export it as CSV UTF-8.")
    # zipfile stops reading a member at its declared size (and fails its CRC if it holds more),
    # so the declared sizes bound what openpyxl can expand.
    expanded = sum(i.file_size for i in infos)
    cap = min(MAX_EXPANDED_BYTES, max(MIN_EXPANDED_ALLOWANCE, MAX_RATIO * len(data)))
    if expanded > cap:
        raise error("too_large", f"the workbook expands to {expanded:,} bytes of XML, over the limit of "
                    f"{cap:,} (for a file of {len(data):,} bytes).",
                    "Export the sheet with the data as CSV UTF-8 and upload that.")
    if any(i.filename == "xl/workbook.bin" for i in infos):
        raise error("unsupported_format", "this is a binary Excel workbook (.xlsb), which we do not read.",
                    "In Excel: File > Save As > 'Excel Workbook (.xlsx)' or 'CSV UTF-8'.")


def sheet_names(data: bytes) -> list[str]:
    """The workbook's sheet names, in order (for a form's choice)."""
    check_archive(data)
    wb = _open(data)
    try:
        return list(wb.sheetnames)
    finally:
        wb.close()


def parse_xlsx(data: bytes, *, max_rows: int, sheet: str | None = None,
               header_hint: set[str] = frozenset()) -> Table:
    """The chosen sheet (by name), or the first sheet that holds data (a header and a row at least;
    else the first that is not blank), as a Table."""
    check_archive(data)
    wb = _open(data)
    try:
        names = list(wb.sheetnames)
        if sheet is not None:
            if sheet not in names:
                raise error("missing_sheet", f'the workbook has no sheet "{sheet}"; its sheets: {_listed(names)}.',
                            "Choose one of those sheets (the name as Excel shows it on the tab).")
            order = [sheet]
        else:
            order = names
        fallback = None
        for name in order:
            records = _records(wb[name], max_rows)
            # A header and rows: the data. A sheet of one line (a title, a note) is passed over
            # when a later sheet has data.
            if len(records) >= 2 or (records and sheet is not None):
                return _table(records, name, names, header_hint)
            if records and fallback is None:
                fallback = (records, name)
        if fallback is not None:
            return _table(fallback[0], fallback[1], names, header_hint)
        if sheet is not None:
            raise error("empty_file", f'the sheet "{sheet}" is empty.',
                        f"Choose a sheet with the data (the workbook's sheets: {_listed(names)}).")
        raise error("empty_file", f"every sheet of the workbook is empty ({_listed(names)}).",
                    "Put one example per row on the first sheet, with a header row, and save it again.")
    finally:
        wb.close()


def _open(data: bytes):
    from openpyxl import load_workbook   # imported here: only Excel uploads pay for it

    try:
        return load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
    except Exception as exc:    # noqa: BLE001 - openpyxl raises many unrelated types for a bad file
        raise error("unsupported_format", f"the workbook could not be read ({type(exc).__name__}: {exc}).",
                    "Open it in Excel and save it again as .xlsx, or export the sheet as CSV UTF-8.") from None


def _records(ws, max_rows: int) -> list[tuple[int, list[str]]]:
    """(row number, cells as text) of every non-blank row, trailing blank cells dropped."""
    if getattr(ws, "max_column", None) and ws.max_column > MAX_COLUMNS:
        raise error("too_large", f'the sheet "{ws.title}" is {ws.max_column:,} columns wide '
                    f"(the limit is {MAX_COLUMNS:,}).",
                    "Keep only the text and label columns (and a few others), or export them as CSV UTF-8.")
    records: list[tuple[int, list[str]]] = []
    # Blank rows cost nothing to skip, but a sheet can claim a million of them: every row read counts.
    budget = max_rows + 1_048_576
    try:
        for number, row in enumerate(ws.iter_rows(max_col=MAX_COLUMNS, values_only=True), start=1):
            if number > budget:
                raise _too_many(max_rows)
            cells = [cell_text(v) for v in row]
            while cells and not cells[-1].strip():
                cells.pop()
            if cells:
                if len(records) >= max_rows + 1:        # + 1: the header
                    raise _too_many(max_rows)
                records.append((number, cells))
    except Exception as exc:     # noqa: BLE001 - a broken sheet's XML: a bad file, not a crash
        if isinstance(exc, DataError):
            raise
        raise error("unsupported_format", f'the sheet "{ws.title}" could not be read ({type(exc).__name__}).',
                    "Open the workbook in Excel and save it again, or export the sheet as CSV UTF-8.") from None
    return records


def _too_many(max_rows: int):
    return error("too_large", f"the sheet has more than {max_rows:,} rows.",
                 "Upload a sample of the rows, or raise the limit (TUNELAB_MAX_ROWS).")


def _table(records, name: str, names: list[str], header_hint: set[str]) -> Table:
    width = max(len(cells) for _, cells in records)
    records = [(n, cells + [""] * (width - len(cells))) for n, cells in records]
    has_header = looks_like_header(records, header_hint)
    columns = make_column_names(records[0][1] if has_header else [], width)
    body = records[1:] if has_header else records
    where = f'sheet "{name}"' + (f" ({names.index(name) + 1} of {len(names)})" if len(names) > 1 else "")
    return Table(columns, [cells for _, cells in body], [n for n, _ in body],
                 f"Excel workbook, {where}, {'header' if has_header else 'no header'}")


def cell_text(value) -> str:
    """A cell's value as Excel would show it, as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else format(value, ".15g")
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.second or value.microsecond else "minutes")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat(timespec="seconds" if value.second else "minutes")
    if isinstance(value, dt.timedelta):
        return str(value)
    return str(value)


def _listed(names: list[str]) -> str:
    shown = ", ".join(f'"{n}"' for n in names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def single_sheet(data: bytes, sheet: str, *, max_rows: int) -> bytes:
    """The workbook reduced to one sheet, values only, each row at its own row number: what is
    stored when a user chooses a sheet, so that every later read (preview, jobs) reads that sheet."""
    from openpyxl import Workbook

    check_archive(data)
    wb = _open(data)
    try:
        if sheet not in wb.sheetnames:
            raise error("missing_sheet", f'the workbook has no sheet "{sheet}"; its sheets: {_listed(wb.sheetnames)}.',
                        "Choose one of those sheets (the name as Excel shows it on the tab).")
        records = _records(wb[sheet], max_rows)
    finally:
        wb.close()
    if not records:
        raise error("empty_file", f'the sheet "{sheet}" is empty.', "Choose a sheet with the data.")
    out = Workbook(write_only=True)
    fixed = dt.datetime(2000, 1, 1)              # the same sheet gives the same bytes (content addressing)
    out.properties.created = out.properties.modified = fixed
    ws = out.create_sheet(title=sheet)
    row = 1
    for number, cells in records:
        while row < number:
            ws.append([])
            row += 1
        ws.append(cells)
        row += 1
    buffer = io.BytesIO()
    out.save(buffer)
    return buffer.getvalue()
