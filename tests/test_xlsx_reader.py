"""Excel .xlsx uploads (tunelab/data/xlsx.py through the readers and the store): real workbooks
made with openpyxl; several sheets, cached formula values, dates and numbers as text, empty
sheets, and workbooks too big to read refused with a clear message."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile

import pytest
from openpyxl import Workbook

from tunelab.data import DataError, DataLimits, DatasetStore
from tunelab.data.readers import parse_data
from tunelab.data.xlsx import MAX_COLUMNS, cell_text

ROWS = [("free prize, text WIN now", "spam"), ("see you at lunch", "ham"), ("call me later", "ham"),
        ("you won a cruise, reply YES", "spam")]


def book(sheets: dict[str, list[list]]) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def table(rows=ROWS, header=("message", "label")) -> list[list]:
    return [list(header)] + [list(r) for r in rows]


def codes(exc: pytest.ExceptionInfo) -> list[str]:
    return [i.code for i in exc.value.issues]


def test_first_sheet_with_a_header_reads_like_a_csv():
    parsed = parse_data(book({"Data": table()}), "sms.xlsx")
    ds = parsed.dataset
    assert (ds.format, ds.text_column, ds.label_column) == ("xlsx", "message", "label")
    assert [(e.text, e.label) for e in ds.examples] == list(ROWS)
    assert [e.line for e in ds.examples] == [2, 3, 4, 5]          # the sheet's row numbers
    assert parsed.detail == 'Excel workbook, sheet "Data", header'


def test_several_sheets_first_with_data_by_default_and_a_chosen_one_stored_alone(tmp_path):
    other = [("hello there", "ham"), ("cheap loans now", "spam"), ("meeting moved", "ham"), ("win big", "spam")]
    data = book({"Notes": [], "Title": [["Exported on Monday"]], "Train": table(),
                 "Holdout": table(other, ("text", "category"))})
    ds = parse_data(data, "book.xlsx").dataset
    assert ds.texts == [t for t, _ in ROWS]

    chosen = parse_data(data, "book.xlsx", sheet="Holdout")
    assert chosen.dataset.texts == [t for t, _ in other]
    assert chosen.dataset.label_column == "category"
    assert chosen.data != data           # the workbook reduced to that sheet: what is hashed and kept
    again = parse_data(chosen.data, "book.xlsx")            # read back later (preview, jobs): that sheet
    assert again.dataset.texts == chosen.dataset.texts and [e.line for e in again.dataset.examples] == [2, 3, 4, 5]

    store = DatasetStore(tmp_path / "store")
    path = tmp_path / "book.xlsx"
    path.write_bytes(data)
    entry = store.import_file(path, sheet="Holdout")
    assert entry.meta["format"] == "xlsx" and entry.load().texts == [t for t, _ in other]

    with pytest.raises(DataError) as exc:
        parse_data(data, "book.xlsx", sheet="Nope")
    assert codes(exc) == ["missing_sheet"] and '"Holdout"' in str(exc.value)
    with pytest.raises(DataError) as exc:
        parse_data(b"text,label\na,b\n", "x.csv", sheet="Train")
    assert codes(exc) == ["not_a_workbook"]


def _with_cached_values(data: bytes, values: dict[str, str]) -> bytes:
    """openpyxl writes formulas without their result; Excel saves the result next to the formula.
    Write it in, as Excel would (`t="str"` for a text result)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.startswith("xl/worksheets/sheet"):
                xml = body.decode()
                for ref, value in values.items():
                    xml, n = re.subn(rf'<c r="{ref}"([^>]*)><f>(.*?)</f><v\s*/?>(</v>)?',
                                     rf'<c r="{ref}"\1 t="str"><f>\2</f><v>{value}</v>', xml)
                    assert n == 1, (ref, xml[:500])
                body = xml.encode()
            dst.writestr(info, body)
    return out.getvalue()


def test_formulas_give_their_cached_values():
    rows = table() + [["=A2&\" again\"", "=B2"]]
    data = _with_cached_values(book({"S": rows}), {"A6": "free prize, text WIN now again", "B6": "spam"})
    ds = parse_data(data, "f.xlsx").dataset
    assert (ds.examples[-1].text, ds.examples[-1].label, ds.examples[-1].line) == \
        ("free prize, text WIN now again", "spam", 6)


def test_dates_and_numbers_read_as_a_person_would_expect():
    rows = [["text", "label", "when", "amount"]] + [
        [t, lab, dt.datetime(2024, 3, 5), 0.1 + 0.2] for t, lab in ROWS[:2]] + [
        [ROWS[2][0], ROWS[2][1], dt.datetime(2024, 3, 5, 14, 30), 3.0],
        [ROWS[3][0], 1, dt.date(2024, 1, 2), 1234567]]
    parsed = parse_data(book({"S": rows}), "d.xlsx", text_column="when", label_column="label")
    assert parsed.dataset.texts == ["2024-03-05", "2024-03-05", "2024-03-05 14:30", "2024-01-02"]
    assert parsed.dataset.examples[-1].label == "1"
    amounts = parse_data(book({"S": rows}), "d.xlsx", text_column="text", label_column="amount").dataset
    assert [e.label for e in amounts.examples] == ["0.3", "0.3", "3", "1234567"]
    assert (cell_text(True), cell_text(None), cell_text(dt.time(9, 5))) == ("TRUE", "", "09:05")


def test_empty_sheets_are_refused_naming_the_sheets():
    with pytest.raises(DataError) as exc:
        parse_data(book({"A": [], "B": [[None, None]]}), "e.xlsx")
    assert codes(exc) == ["empty_file"] and '"A", "B"' in str(exc.value)
    with pytest.raises(DataError) as exc:
        parse_data(book({"A": table(), "B": []}), "e.xlsx", sheet="B")
    assert codes(exc) == ["empty_file"] and 'sheet "B" is empty' in str(exc.value)


def test_a_workbook_over_the_row_limit_is_refused_with_the_limit():
    rows = [["text", "label"]] + [[f"message number {i}", "ab"[i % 2]] for i in range(3_000)]
    data = book({"Big": rows})
    assert len(parse_data(data, "big.xlsx", limits=DataLimits(max_rows=3_000)).dataset) == 3_000
    with pytest.raises(DataError) as exc:
        parse_data(data, "big.xlsx", limits=DataLimits(max_rows=2_500))
    assert codes(exc) == ["too_large"] and "more than 2,500 rows" in str(exc.value)


def test_a_sheet_claiming_a_huge_size_and_a_zip_bomb_are_refused():
    wide = book({"W": [["x"] * 3, ["a", "b", "c"]]})
    # A dimension claiming the sheet is 16,384 columns wide (openpyxl would pad every row to it).
    src = zipfile.ZipFile(io.BytesIO(wide))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.startswith("xl/worksheets/sheet"):
                body = re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1:XFD1048576"', body)
            dst.writestr(info, body)
    with pytest.raises(DataError) as exc:
        parse_data(out.getvalue(), "w.xlsx")
    assert codes(exc) == ["too_large"] and f"{MAX_COLUMNS:,}" in str(exc.value)

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr("xl/sharedStrings.xml", b"<a>" + b" " * (100 * 1024**2) + b"</a>")
    with pytest.raises(DataError) as exc:
        parse_data(bomb.getvalue(), "bomb.xlsx")
    assert codes(exc) == ["too_large"] and "expands to" in str(exc.value)


def test_not_a_workbook_and_old_formats_still_say_what_to_do():
    with pytest.raises(DataError) as exc:
        parse_data(b"PK\x03\x04" + b"\x00" * 64, "book.xlsx")
    assert codes(exc) == ["unsupported_format"] and "CSV" in str(exc.value)
    with pytest.raises(DataError) as exc:
        parse_data(b"\xd0\xcf\x11\xe0" + b"\x00" * 64, "old.xls")
    assert codes(exc) == ["unsupported_format"] and ".xlsx" in str(exc.value)
