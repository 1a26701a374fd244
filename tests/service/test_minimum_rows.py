"""A run too small to mean anything is refused when it is submitted (422 too_little_data, with the
minimum named), through the API, the SDK and the remote CLI, never queued to "succeed" on one test
row. The numbers are data/minimums.py's."""

from __future__ import annotations

import csv

import pytest

from tunelab.data.minimums import MINIMUMS
from tunelab.sdk import APIError, Client

from .helpers import upload


@pytest.fixture(scope="module")
def backend() -> str:
    """SQLite only: the check reads a dataset's stored label counts, nothing the database decides."""
    return "sqlite"


@pytest.fixture(scope="module")
def small(client_a, shared_copy, tmp_path_factory) -> dict:
    """80 SMS messages (60 ham, 20 spam): enough for a run, not for a run of 3 rows."""
    rows = list(csv.reader(open(shared_copy / "sms_spam.tsv", encoding="utf-8"), delimiter="\t"))
    ham = [r for r in rows if r[0] == "ham"][:60]
    spam = [r for r in rows if r[0] == "spam"][:20]
    path = tmp_path_factory.mktemp("min") / "sms_small.tsv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t").writerows(ham + spam)
    return upload(client_a, path)


@pytest.fixture(scope="module")
def four_rows(client_a, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("min4") / "four.csv"
    path.write_text("text,label\nwin a prize now,spam\nsee you at lunch,ham\nmeeting moved to 3,ham\nfree cash,spam\n")
    ds = upload(client_a, path)
    assert ds["status"] == "processed"         # a valid file: the refusal is the run's, not the file's
    return ds


def _jobs(client) -> int:
    return len(client.get("/api/v1/jobs").json()["data"])


def test_a_three_row_run_is_refused_with_the_minimum_named(client_a, small):
    before = _jobs(client_a)
    r = client_a.post("/api/v1/jobs", json={"dataset_id": small["id"], "strategy": "linear-probe", "limit": 3})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "too_little_data" and err["param"] == "limit"
    assert f"at least {MINIMUMS.test_rows} are needed" in err["message"]
    assert "row limit of 3" in err["message"] and "raise the row limit" in err["message"]
    assert _jobs(client_a) == before                 # nothing queued, nothing billed


def test_a_tiny_file_is_refused_for_every_strategy_and_a_comparison(client_a, four_rows):
    for body in ({"strategy": "linear-probe"}, {"strategy": "zero-shot"},
                 {"kind": "compare", "strategies": ["zero-shot", "linear-probe"]}):
        r = client_a.post("/api/v1/jobs", json={"dataset_id": four_rows["id"], **body})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "too_little_data" and err["param"] == "dataset_id"
        assert f"at least {MINIMUMS.file_rows()} rows" in err["message"]


def test_enough_rows_are_accepted(client_a, small):
    r = client_a.post("/api/v1/jobs", json={"dataset_id": small["id"], "strategy": "zero-shot"})
    assert r.status_code in (200, 201), r.text     # 16 test rows: allowed (with a wide interval)
    client_a.post(f"/api/v1/jobs/{r.json()['id']}/cancel")


def test_the_sdk_and_the_remote_cli_get_the_refusal(server, tenant_a, small):
    sdk = Client(server.url, tenant_a["api_key"])
    with pytest.raises(APIError) as exc:
        sdk.jobs.create(small["id"], strategy="linear-probe", limit=3)
    assert exc.value.status == 422 and exc.value.code == "too_little_data"
    r = server.run("--server", server.url, "--api-key", tenant_a["api_key"], "jobs", "create", small["id"],
                   "--strategy", "linear-probe", "--limit", "3", check=False)
    assert r.returncode != 0 and f"at least {MINIMUMS.test_rows} are needed" in (r.stdout + r.stderr)
