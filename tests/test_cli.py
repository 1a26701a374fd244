"""The CLI end to end: inspect, train, predict, compare --json, exit statuses."""

from __future__ import annotations

import json
import re

import pytest

from cli_helpers import run_cli


def test_inspect_reports_stats_and_exits_zero(shared_copy):
    r = run_cli("datasets", "inspect", shared_copy / "financial_phrasebank.csv")
    assert r.returncode == 0, r.stderr
    assert "latin-1" in r.stdout or "cp1252" in r.stdout
    assert "neutral" in r.stdout and "rows: 4846" in r.stdout


def test_inspect_json_has_report_and_stats(shared_copy):
    r = run_cli("datasets", "inspect", shared_copy / "sms_spam.tsv", "--json")
    report = json.loads(r.stdout)
    assert report["stats"]["train"]["rows"] == 5574
    assert "duplicate" in [i["code"] for i in report["issues"]]


@pytest.mark.parametrize("content, code, where", [
    ("text,label\nhello,a\nworld,a\nagain,a\n", "single_class", None),
    ("text,label\nhello,a\n,b\nthere,b\nmore,a\n", "empty_text", "line 3"),
])
def test_inspect_exits_one_on_data_errors(tmp_path, content, code, where):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    r = run_cli("datasets", "inspect", f)
    assert r.returncode == 1
    assert code in r.stdout
    if where:
        assert where in r.stdout


def test_train_then_predict(banking_subset, tmp_path):
    train, test = banking_subset
    out = tmp_path / "model"
    r = run_cli("train", train, "--test", test, "--strategy", "linear-probe", "--out", out)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "train_seconds", "trainable_params"):
        assert key in metrics
    assert metrics["macro_f1"] > 0.8
    card = (out / "README.md").read_text()
    assert card.startswith("# linear-probe")
    assert re.search(r"\| C \| [0-9.]+ \(chosen on validation\) \|", card)   # what ran, not "None"
    r = run_cli("predict", out, "My card has not arrived yet, where is it?", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["label"] == "card_arrival"
    texts = tmp_path / "texts.txt"
    texts.write_text("I lost my card\nWhat is the exchange rate?\n")
    r = run_cli("predict", out, "--file", texts)
    labels = [line.split("\t")[0] for line in r.stdout.splitlines()]
    assert labels == ["lost_or_stolen_card", "exchange_rate"]


def test_compare_json_shape(banking_subset):
    train, test = banking_subset
    r = run_cli("compare", train, "--test", test, "--strategies", "zero-shot,linear-probe", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {row["strategy"] for row in out["results"]} == {"zero-shot", "linear-probe"}
    for row in out["results"]:
        assert {"strategy", "macro_f1", "accuracy", "train_seconds", "latency_ms", "trainable_params",
                "relative_cost"} <= set(row)
    assert out["recommended"] == "linear-probe"
    assert out["reason"]


@pytest.mark.parametrize("args, message", [
    (["--strategy", "nope"], "unknown strategy"),
    (["--strategy", "full", "--model", "no-such-model"], "unknown model"),
    (["--strategy", "qlora"], "CUDA"),
    (["--strategy", "full", "--set", "epochs=zero"], "epochs"),
])
def test_configuration_errors_exit_two(banking_subset, tmp_path, args, message):
    r = run_cli("train", banking_subset[0], "--out", tmp_path / "m", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_unfinished_artifact_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    r = run_cli("predict", tmp_path / "half", "hello")
    assert r.returncode == 2
    assert "not a finished tunelab model" in r.stderr
