"""Data fixes in a real browser: a file with bad rows shows them highlighted and offers to drop
them (a new dataset, the original kept); an Excel workbook made with openpyxl uploads (a chosen
sheet); a file without a header gets its text and label columns chosen on the dataset page."""

from __future__ import annotations

import re

from openpyxl import Workbook

BAD = ("text,label\n"
       "free prize call now,spam\nsee you at lunch,ham\n,ham\ncall me later,ham\n"
       "win a cruise now,spam\nonly once here,lonely\nmissing its label,\nhome by six,ham\n"
       "claim your reward,spam\nrunning late sorry,ham\n")


def _upload(tab, path, ok: bool = True, **fields):
    page = tab.page
    tab.goto("/datasets")
    page.set_input_files("#file", str(path))
    if fields:
        page.locator("details", has_text="Column names").locator("summary").click()
        for name, value in fields.items():
            page.fill(f"#{name}", value)
    page.get_by_role("button", name="Upload and check").click()
    if ok:
        page.wait_for_url(re.compile(r".*/datasets/file-[0-9a-f]+$"), timeout=120_000)
    else:
        page.locator(".alert.error").wait_for()


def test_bad_rows_highlighted_then_dropped_into_a_new_dataset(tab, web_server, tmp_path):
    key = web_server.create_tenant("fixes-co", "ops@fixes.test")["api_key"]
    tab.sign_in(key)
    page = tab.page
    path = tmp_path / "leads.csv"
    path.write_text(BAD)
    _upload(tab, path)
    original = page.url

    assert page.locator(".badge", has_text="has errors").first.is_visible()
    bad = page.get_by_test_id("bad-rows")
    assert [int(x) for x in bad.locator("tbody tr td:first-child").all_inner_texts()] == [4, 7, 8]
    assert "empty text" in bad.inner_text() and "missing label" in bad.inner_text() and "rare label" in bad.inner_text()
    preview = page.locator("#preview-title ~ .table-wrap tbody tr")
    highlighted = [int(preview.nth(i).locator("td").first.inner_text()) for i in range(preview.count())
                   if "row-error" in (preview.nth(i).get_attribute("class") or "")]
    assert highlighted == [4, 7, 8]
    tab.shot("03c-dataset-bad-rows")

    page.get_by_role("button", name="Drop the rows with errors and continue").click()
    page.wait_for_url(re.compile(r".*/datasets/file-[0-9a-f]+\?dropped=3$"))
    assert page.url.split("?")[0] != original
    assert page.get_by_role("status").inner_text().startswith("3 row(s) with errors were dropped")
    assert page.locator(".badge-ready").first.is_visible()
    assert page.get_by_role("link", name="Train a model on it").is_visible()
    assert "errors removed" in page.locator("h1").inner_text() or "errors removed" in page.title()
    assert page.locator("#preview-title ~ .table-wrap tbody tr").count() == 7
    assert page.get_by_test_id("bad-rows").count() == 0

    page.get_by_test_id("derived-from").get_by_role("link").click()        # the original, unchanged
    page.wait_for_url(original)
    assert page.locator(".badge", has_text="has errors").first.is_visible()
    tab.goto("/datasets")
    assert page.locator("table tbody tr").count() == 2


def test_xlsx_upload_of_a_chosen_sheet(tab, web_server, tmp_path):
    key = web_server.create_tenant("sheets-co", "ops@sheets.test")["api_key"]
    tab.sign_in(key)
    page = tab.page
    wb = Workbook()
    wb.active.title = "Read me"
    wb.active.append(["Messages exported on Monday"])
    ws = wb.create_sheet("Messages")
    ws.append(["message", "category"])
    for i in range(8):
        ws.append([f"message number {i} about {'a prize' if i % 2 else 'lunch'}", "spam" if i % 2 else "ham"])
    path = tmp_path / "messages.xlsx"
    wb.save(path)

    _upload(tab, path, sheet="Messages")
    assert page.locator(".badge-ready").first.is_visible()
    head = page.locator(".page-head").inner_text()
    assert "XLSX" in head and "message" in head and "category" in head and 'sheet "Messages"' in head
    rows = page.locator("#preview-title ~ .table-wrap tbody tr")
    assert rows.count() == 8
    assert rows.first.locator("td").all_inner_texts() == ["2", "message number 0 about lunch", "ham"]

    _upload(tab, path, ok=False, sheet="Nope")          # a sheet it does not have: said, with the ones it has
    assert "messages.xlsx was not imported" in page.get_by_role("alert").inner_text()
    result = page.locator("#upload-result").inner_text()
    assert 'no sheet "Nope"' in result and '"Messages"' in result


def test_choose_columns_of_a_file_without_header(tab, web_server, tmp_path):
    key = web_server.create_tenant("columns-co", "ops@columns.test")["api_key"]
    tab.sign_in(key)
    page = tab.page
    path = tmp_path / "sms.tsv"
    path.write_text("".join(f"{'spam' if i % 2 else 'ham'}\tmessage {i} with some words\tx{i % 3}\n" for i in range(12)))
    _upload(tab, path)
    form = page.get_by_test_id("columns-form")
    assert "no header row" in form.inner_text()
    form.get_by_label("Text column").select_option("column_1")
    form.get_by_label("Label column").select_option("column_3")
    form.get_by_label("Name for column_1").fill("kind")
    form.get_by_label("Name for column_3").fill("code")
    form.get_by_role("button", name="Use these columns").click()
    page.wait_for_url(re.compile(r".*\?columns=saved$"))
    assert page.get_by_role("status").is_visible()
    assert "text column kind (column_1), label column code (column_3)" in page.locator(".page-head").inner_text()
    head = page.locator("#preview-title ~ .table-wrap thead").inner_text().lower()
    assert "text · kind" in head and "label · code" in head
    tab.shot("03d-dataset-columns")
    assert page.locator("#preview-title ~ .table-wrap tbody tr").first.locator("td").all_inner_texts() == ["1", "ham", "x0"]

    form = page.get_by_test_id("columns-form")
    form.get_by_label("Text column").select_option("column_2")
    form.get_by_label("Label column").select_option("column_2")
    form.get_by_role("button", name="Use these columns").click()
    assert page.get_by_role("alert").filter(has_text="both the text and the label").is_visible()
