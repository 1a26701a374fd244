"""Data fixes over the API, on a real server: drop the rows with errors (a new dataset, the original
kept, linked and audited), choose the text and label columns (re-validated), Excel uploads with a
chosen sheet; other tenants' datasets are 404."""

from __future__ import annotations

import io

import pytest
from openpyxl import Workbook

from .helpers import upload

pytestmark = pytest.mark.slow_on_postgresql    # SQLite in `make test`, PostgreSQL in `make test-slow`

BAD = ("text,label\n"
       "free prize call now,spam\nsee you at lunch,ham\n,ham\ncall me later,ham\n"
       "win a cruise now,spam\nonly once here,lonely\nmissing its label,\nhome by six,ham\n")
# No header, label first: the SMS corpus's shape (columns read as column_1 / column_2).
HEADERLESS = "ham\tsee you at lunch\nspam\tfree prize call now\nham\tcall me later\nspam\twin a cruise now\n"


def test_drop_error_rows_makes_a_new_linked_dataset_and_keeps_the_original(client_a, client_b, tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text(BAD)
    src = upload(client_a, path)
    assert src["status"] == "error"
    assert {i["code"] for i in src["report"]["issues"]} >= {"empty_text", "missing_label", "rare_label"}

    r = client_b.post(f"/api/v1/datasets/{src['id']}/drop-error-rows")
    assert r.status_code == 404                     # another tenant's dataset does not exist for it

    r = client_a.post(f"/api/v1/datasets/{src['id']}/drop-error-rows")
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["id"] != src["id"] and new["status"] == "processed" and new["rows"] == 5
    assert new["name"] == "leads (errors removed)"
    link = new["stats"]["derived_from"]
    assert (link["dataset_id"], link["dropped_rows"], link["dropped_lines"]) == (src["id"], 3, [4, 7, 8])
    assert new["report"]["errors"] == 0
    rows = client_a.get(f"/api/v1/datasets/{new['id']}/preview").json()["data"]
    assert [(x["text"], x["label"]) for x in rows] == [
        ("free prize call now", "spam"), ("see you at lunch", "ham"), ("call me later", "ham"),
        ("win a cruise now", "spam"), ("home by six", "ham")]
    assert client_a.get(f"/api/v1/datasets/{src['id']}").json()["status"] == "error"     # kept as it was

    again = client_a.post(f"/api/v1/datasets/{new['id']}/drop-error-rows")
    assert again.status_code == 409 and again.json()["error"]["code"] == "nothing_to_drop"
    entries = client_a.get("/api/v1/audit").json()["data"]
    entry = next(e for e in entries if e["action"] == "dataset.drop_error_rows")
    assert entry["target"] == new["id"] and entry["data"]["source"] == src["id"] and entry["data"]["dropped"] == 3


def test_choose_columns_revalidates_and_shows_in_the_preview(client_a, client_b, tmp_path):
    path = tmp_path / "sms.tsv"
    path.write_text(HEADERLESS)
    ds = upload(client_a, path)
    assert ds["report"]["columns"] == ["column_1", "column_2"]
    assert (ds["text_column"], ds["label_column"]) == ("column_2", "column_1")

    swapped = client_a.post(f"/api/v1/datasets/{ds['id']}/columns",
                            json={"text_column": "column_1", "label_column": "column_2"})
    assert swapped.status_code == 200, swapped.text
    body = swapped.json()
    assert (body["text_column"], body["label_column"]) == ("column_1", "column_2")
    assert body["status"] == "error"                 # every "label" is now a single example
    assert "rare_label" in {i["code"] for i in body["report"]["issues"]}
    preview = client_a.get(f"/api/v1/datasets/{ds['id']}/preview").json()["data"]
    assert preview[0] == {"line": 1, "text": "ham", "label": "see you at lunch"}

    back = client_a.post(f"/api/v1/datasets/{ds['id']}/columns",
                         json={"text_column": "column_2", "label_column": "column_1",
                               "names": {"column_1": "category", "column_2": " message "}}).json()
    assert back["report"]["column_names"] == {"column_1": "category", "column_2": "message"}
    assert back["report"]["columns"] == ["column_1", "column_2"]          # the file keeps its own
    assert back["status"] == "processed" and back["stats"]["label_counts"] == {"ham": 2, "spam": 2}
    entries = client_a.get("/api/v1/audit").json()["data"]
    assert [e["data"]["after"]["text_column"] for e in entries
            if e["action"] == "dataset.columns" and e["target"] == ds["id"]][:2] == ["column_2", "column_1"]

    for bad, code in (({"text_column": "nope", "label_column": "column_1"}, "missing_column"),
                      ({"text_column": "column_1", "label_column": "column_1"}, "same_column"),
                      ({"text_column": "column_1", "label_column": "column_2", "names": {"nope": "x"}},
                       "missing_column")):
        r = client_a.post(f"/api/v1/datasets/{ds['id']}/columns", json=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    for invalid in ({"text_column": "", "label_column": "x"},
                    {"text_column": "column_1", "label_column": "column_2", "names": {"column_1": "a\nb"}},
                    {"text_column": "column_1", "label_column": "column_2", "names": {"column_1": "x" * 61}}):
        r = client_a.post(f"/api/v1/datasets/{ds['id']}/columns", json=invalid)
        assert r.status_code in (400, 422) and r.json()["error"]["code"] not in ("missing_column", "same_column"), r.text
    r = client_b.post(f"/api/v1/datasets/{ds['id']}/columns", json={"text_column": "column_1", "label_column": "column_2"})
    assert r.status_code == 404


def test_excel_upload_with_a_chosen_sheet(client_a):
    wb = Workbook()
    wb.active.title = "Notes"
    wb.active.append(["nothing to see"])
    ws = wb.create_sheet("Data")
    ws.append(["message", "label"])
    for i in range(6):
        ws.append([f"message number {i}", "spam" if i % 2 else "ham"])
    buf = io.BytesIO()
    wb.save(buf)
    r = client_a.post("/api/v1/datasets", files={"file": ("book.xlsx", buf.getvalue())}, data={"sheet": "Data"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["report"]["format"], ds["text_column"], ds["label_column"], ds["rows"]) == ("xlsx", "message", "label", 6)
    assert ds["report"]["sheets"] == ["Data"] and 'sheet "Data"' in ds["report"]["read_as"]
    rows = client_a.get(f"/api/v1/datasets/{ds['id']}/preview").json()["data"]
    assert rows[0] == {"line": 2, "text": "message number 0", "label": "ham"}

    first = client_a.post("/api/v1/datasets", files={"file": ("book.xlsx", buf.getvalue())})
    assert first.status_code == 201, first.text      # no sheet named: "Notes" is one line, "Data" has the rows
    assert first.json()["report"]["sheets"] == ["Notes", "Data"] and first.json()["rows"] == 6
    assert 'sheet "Data" (2 of 2)' in first.json()["report"]["read_as"]

    r = client_a.post("/api/v1/datasets", files={"file": ("book.xlsx", buf.getvalue())}, data={"sheet": "Missing"})
    assert r.status_code == 422 and '"Data"' in r.json()["error"]["message"]


def test_sdk_drop_error_rows_choose_columns_and_sheet(server, tenant_a, tmp_path):
    from tunelab.sdk import APIError, Client

    bad = tmp_path / "bad.csv"
    bad.write_text(BAD)
    headerless = tmp_path / "plain.tsv"
    headerless.write_text(HEADERLESS)
    wb = Workbook()
    wb.active.title = "Rows"
    wb.active.append(["text", "label"])
    for i in range(4):
        wb.active.append([f"row {i} text", "ab"[i % 2]])
    book = tmp_path / "rows.xlsx"
    wb.save(book)
    with Client(server.url, tenant_a["api_key"], timeout=60) as sdk:
        src = sdk.datasets.upload(bad)
        fixed = sdk.datasets.drop_error_rows(src.id)
        assert fixed.status == "processed" and fixed.stats["derived_from"]["dataset_id"] == src.id
        with pytest.raises(APIError) as exc:
            sdk.datasets.drop_error_rows(fixed.id)
        assert exc.value.status == 409
        ds = sdk.datasets.upload(headerless)
        chosen = sdk.datasets.choose_columns(ds.id, text_column="column_1", label_column="column_2")
        assert (chosen.text_column, chosen.label_column) == ("column_1", "column_2")
        sheet = sdk.datasets.upload(book, sheet="Rows")
        assert sheet.rows == 4 and sheet.report["format"] == "xlsx"
