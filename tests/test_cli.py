"""The CLI end to end: inspect, train, predict, compare --json, exit statuses."""

from __future__ import annotations

import csv
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
    lo, hi = metrics["macro_f1_interval"]          # 95% bootstrap over the test rows
    assert lo <= metrics["macro_f1"] <= hi and metrics["interval"]["rows"] == metrics["test_rows"]
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
    # --out: every row of a file, streamed into a CSV (row, text, label, probability, top k)
    preds = tmp_path / "preds.csv"
    r = run_cli("predict", out, "--file", test, "--out", preds, "--top-k", "2")
    assert r.returncode == 0, r.stderr
    with open(test, newline="", encoding="utf-8") as f:
        sent = [row["text"] for row in csv.DictReader(f)]
    with open(preds, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [row["text"] for row in got] == sent and [int(row["row"]) for row in got] == list(range(1, len(sent) + 1))
    assert all(row["label"] == row["top_1_label"] and float(row["top_1_probability"]) >= float(row["top_2_probability"])
               for row in got)


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


# ---- a comparison's budget: --budget, --budget-usd, --exhaustive (parsed before any data is read) ----
@pytest.mark.parametrize("argv, seconds, usd", [
    (["--budget", "10m"], 600.0, None),
    (["--budget", "90s"], 90.0, None),
    (["--budget", "1h30m"], 5400.0, None),
    (["--budget", "45"], 45.0, None),
    (["--budget", "2.5m"], 150.0, None),
    (["--budget-usd", "0.50"], None, 0.5),
    (["--budget-usd", "$2"], None, 2.0),
    (["--budget", "5m", "--budget-usd", "0.10"], 300.0, 0.1),
    ([], None, None),
])
def test_compare_budget_flags(argv, seconds, usd):
    from tunelab.cli.commands import build_parser

    args = build_parser().parse_args(["compare", "train.csv", *argv])
    assert (args.budget, args.budget_usd, args.exhaustive) == (seconds, usd, False)
    assert build_parser().parse_args(["compare", "train.csv", "--exhaustive", *argv]).exhaustive


@pytest.mark.parametrize("argv, message", [
    (["--budget", "10x"], "--budget: 10x: give a duration such as 90s, 10m or 1h30m"),
    (["--budget", "m"], "give a duration such as 90s, 10m or 1h30m"),
    (["--budget", ""], "give a duration such as 90s, 10m or 1h30m"),
    (["--budget", "0s"], "--budget: 0s: must be more than 0 seconds and at most 7 days"),
    (["--budget", "8d"], "give a duration such as 90s, 10m or 1h30m"),
    (["--budget", "200h"], "at most 7 days"),
    (["--budget-usd", "abc"], "--budget-usd: abc: give dollars such as 0.50"),
    (["--budget-usd", "0"], "must be more than $0"),
    (["--budget-usd", "-1"], "must be more than $0"),
    (["--budget-usd", "nan"], "must be more than $0"),
    (["--budget-usd", "1e9"], "at most $10,000"),
])
def test_compare_bad_budget_is_a_usage_error(capsys, argv, message):
    """Exit 2 with the flag and what to type, as every usage error: locally and remotely."""
    from tunelab.cli.commands import build_parser

    for command in (["compare", "train.csv"], ["jobs", "compare", "file-abc"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*command, *argv])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_remote_compare_sends_the_budget(monkeypatch):
    """`tunelab jobs compare` through the SDK: seconds, dollars, exhaustive, per-strategy --set."""
    import httpx

    import tunelab.sdk as sdk
    from tunelab.cli.commands import main

    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"id": "ftjob-1", "status": "queued", "spec": {},
                                         "budget": {"seconds": 600.0, "usd": 0.5}, "exhaustive": True})

    original = sdk.Client.__init__
    monkeypatch.setattr(sdk.Client, "__init__", lambda self, base_url, api_key, **kw:
                        original(self, base_url, api_key, transport=httpx.MockTransport(handler)))
    status = main(["--server", "http://tunelab.test", "--api-key", "tl-x", "jobs", "compare", "file-abc",
                   "--strategies", "zero-shot,lora", "--set", "lora.r=8", "--budget", "10m",
                   "--budget-usd", "0.50", "--exhaustive"])
    assert status == 0
    assert sent == [{"dataset_id": "file-abc", "strategies": ["zero-shot", "lora"], "strategy_params": {"lora": {"r": 8}},
                     "seed": 0, "budget_seconds": 600.0, "budget_usd": 0.5, "exhaustive": True}]
