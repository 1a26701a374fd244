"""Results that can be trusted, in a real browser against a real server and worker: a 3-row run is
refused in the wizard with the minimum named (before Start, and by Start); a real linear-probe run's
results page says in plain words what its confusion matrix says; jargon explains itself on hover;
a comparison's winner is explained the same way."""

from __future__ import annotations

import csv
import re

import pytest

from tunelab.data.minimums import MINIMUMS
from tunelab.evaluation.summary import summarize

HAM, SPAM = 200, 40                  # a small file keeps the run quick; ~48 test rows


def _small_sms(shared_copy, tmp_path):
    rows = list(csv.reader(open(shared_copy / "sms_spam.tsv", encoding="utf-8"), delimiter="\t"))
    keep = [r for r in rows if r[0] == "ham"][:HAM] + [r for r in rows if r[0] == "spam"][:SPAM]
    path = tmp_path / "sms_240.tsv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t").writerows(keep)
    return path


def _upload(tab, path) -> str:
    page = tab.page
    tab.goto("/datasets")
    page.set_input_files("#file", str(path))
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_url(re.compile(r".*/datasets/file-[0-9a-f]+$"), timeout=120_000)
    return page.url.rsplit("/", 1)[1]


def _matrix(page) -> tuple[list[str], list[list[int]]]:
    """The confusion matrix as the page draws it."""
    labels = [t.strip() for t in page.locator("table.cm thead th[scope=col]").all_text_contents()[1:]]
    rows = [[int(c.replace(",", "")) for c in r.locator("td").all_inner_texts()]
            for r in page.locator("table.cm tbody tr").all()]
    return labels, rows


@pytest.mark.slow      # two real jobs in the browser; the sentences are unit-tested in test_result_summary.py
def test_a_three_row_run_is_refused_and_a_real_run_is_explained(tab, web_server, shared_copy, tmp_path):
    tenant = web_server.create_tenant("trust", "ops@trust.test")
    page = tab.page
    tab.sign_in(tenant["api_key"])
    ds = _upload(tab, _small_sms(shared_copy, tmp_path))

    # 3 rows: said before Start, refused by Start, nothing queued.
    tab.goto(f"/train?dataset={ds}&strategy=linear-probe&limit=3")
    said = " ".join(page.locator("[data-row-check=too_little_data]").all_inner_texts())
    assert f"at least {MINIMUMS.test_rows} are needed" in said and "row limit of 3" in said
    page.get_by_role("button", name="Start training (linear-probe)").click()
    error = page.locator("#wizard-error")
    error.wait_for()
    assert f"at least {MINIMUMS.test_rows} are needed" in error.inner_text()
    assert "row limit of 3" in error.inner_text()
    assert "/jobs/" not in page.url
    tab.goto("/jobs")
    assert page.locator("a[href^='/jobs/ftjob-']").count() == 0

    # A real run on the whole small file: no refusal, and its results in words.
    tab.goto(f"/train?dataset={ds}&strategy=linear-probe")
    assert page.locator("[data-row-check=too_little_data]").count() == 0
    page.get_by_role("button", name="Start training (linear-probe)").click()
    page.wait_for_url(re.compile(r".*/jobs/ftjob-[0-9a-f]+$"))
    job_url = page.url
    page.wait_for_selector("[data-final-metrics], .alert.error", timeout=600_000)
    assert page.locator(".alert.error").count() == 0, page.locator(".alert.error").inner_text()

    labels, matrix = _matrix(page)
    total = sum(map(sum, matrix))             # repeated messages are dropped before the split: ~48
    assert labels == ["ham", "spam"] and total >= MINIMUMS.thin_test_rows
    assert f"Results on {total} held-out rows" in page.locator("#results-title").inner_text()
    spam, ham = matrix[1], matrix[0]
    words = page.locator("[data-summary]").first
    line = words.locator("[data-summary-line]").first.inner_text()
    assert line == (f"Of {sum(spam)} \u201cspam\u201d test rows, {spam[1]} {'was' if spam[1] == 1 else 'were'} caught "
                    f"and {spam[0]} missed; {ham[1]} of {sum(ham)} \u201cham\u201d rows "
                    f"{'was' if ham[1] == 1 else 'were'} wrongly flagged as \u201cspam\u201d.")
    right = ham[0] + spam[1]
    assert words.locator("[data-summary-overall]").inner_text().startswith(f"{right} of {total} test rows")
    expected = summarize({"confusion_matrix": {"labels": labels, "matrix": matrix}})
    if expected.weakest:                       # what a better model would need names the weakest label
        assert words.locator("[data-weak-label]").first.get_attribute("data-weak-label") == expected.weakest[0].label
        assert "training row" in words.locator("[data-summary-needs]").inner_text()
    assert words.locator("[data-summary-thin]").count() == 0           # 30+ test rows: not thin

    # Jargon explains itself: the strategy's own summary, macro-F1 from the glossary.
    probe = page.locator("h1 abbr[data-term='linear-probe']")
    assert "linear head" in probe.get_attribute("title")
    assert "each label counting equally" in page.locator("[data-final-metrics] abbr[data-term='macro-F1']").get_attribute("title")
    assert page.locator("abbr[data-term='trainable parameters']").count() == 1
    tab.shot("07b-results-in-words")

    # Compared with zero-shot: the winner's results in words too.
    page.goto(job_url)
    form = page.locator("form.compare-with")
    form.locator("input[name=compare][value=zero-shot]").check()
    form.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r".*/comparisons/group/cmp-[0-9a-f]+$"))
    page.wait_for_selector("[data-winner]", timeout=600_000)
    winner = page.locator(".winner [data-summary]")
    assert winner.locator("[data-summary-overall]").inner_text().endswith("got the right label.")
    assert page.locator("[data-winner-explained]").inner_text().startswith(page.locator("[data-winner]").inner_text())
