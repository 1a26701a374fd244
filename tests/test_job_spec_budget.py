"""A compare job's budget in its spec: what JobSpec takes and refuses (the API's 422s), what the
job child hands the engine, how it caps the job's reservation, and the SDK's "10m"."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunelab.jobs.spec import BUDGET_ON_TRAIN, JobSpec

COMPARE = {"kind": "compare", "dataset_id": "file-1", "strategies": ["zero-shot", "lora"]}


@pytest.mark.parametrize("fields, seconds, usd, exhaustive", [
    ({}, None, None, False),
    ({"budget_seconds": 600}, 600.0, None, False),
    ({"budget_seconds": 0.5}, 0.5, None, False),
    ({"budget_seconds": 7 * 24 * 3600}, 604800.0, None, False),
    ({"budget_usd": 0.5}, None, 0.5, False),
    ({"budget_usd": 10_000}, None, 10_000.0, False),
    ({"budget_seconds": 300, "budget_usd": 1, "exhaustive": True}, 300.0, 1.0, True),
    ({"exhaustive": True}, None, None, True),
    ({"budget_seconds": None, "budget_usd": None, "exhaustive": False}, None, None, False),
])
def test_a_compare_job_takes_a_budget(fields, seconds, usd, exhaustive):
    spec = JobSpec.model_validate_json(JobSpec(**COMPARE, **fields).model_dump_json())    # as stored and read back
    assert (spec.budget_seconds, spec.budget_usd, spec.exhaustive) == (seconds, usd, exhaustive)
    budget = spec.budget()
    if seconds is None and usd is None:
        assert budget is None
    else:
        assert (budget.seconds, budget.usd) == (seconds, usd)


@pytest.mark.parametrize("fields, where", [
    ({"budget_seconds": 0}, "budget_seconds"),
    ({"budget_seconds": -5}, "budget_seconds"),
    ({"budget_seconds": 7 * 24 * 3600 + 1}, "budget_seconds"),
    ({"budget_seconds": "10m"}, "budget_seconds"),       # a number in the API; the SDK and CLI read "10m"
    ({"budget_seconds": "600"}, "budget_seconds"),
    ({"budget_seconds": True}, "budget_seconds"),
    ({"budget_seconds": float("nan")}, "budget_seconds"),
    ({"budget_seconds": float("inf")}, "budget_seconds"),
    ({"budget_usd": 0}, "budget_usd"),
    ({"budget_usd": 10_001}, "budget_usd"),
    ({"budget_usd": "0.5"}, "budget_usd"),
    ({"exhaustive": 1}, "exhaustive"),
    ({"exhaustive": "true"}, "exhaustive"),
    ({"exhaustive": None}, "exhaustive"),
    ({"budget": "10m"}, "budget"),                        # extra fields are refused
])
def test_bad_budgets_are_refused(fields, where):
    with pytest.raises(ValidationError) as exc:
        JobSpec(**COMPARE, **fields)
    assert exc.value.errors()[0]["loc"][0] == where


@pytest.mark.parametrize("fields", [{"budget_seconds": 600}, {"budget_usd": 0.5}, {"exhaustive": True}])
def test_a_train_job_refuses_a_budget(fields):
    with pytest.raises(ValidationError, match="are for compare jobs"):
        JobSpec(dataset_id="file-1", strategy="lora", **fields)
    with pytest.raises(ValidationError, match="are for compare jobs"):
        JobSpec(kind="train", dataset_id="file-1", **fields)
    assert "compare jobs" in BUDGET_ON_TRAIN
    # an old stored train spec (no budget fields) and a new one (nulls, false) both read back
    plain = JobSpec(dataset_id="file-1", strategy="lora")
    assert JobSpec.model_validate(plain.model_dump(mode="json")) == plain
    assert JobSpec.model_validate({"dataset_id": "file-1", "strategy": "lora"}) == plain


def test_the_document_says_a_train_job_has_no_budget():
    """The OpenAPI document (a fuzzer checks it) refuses what the validator refuses."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")         # schemathesis's validator

    validator = jsonschema_rs.validator_for(JobSpec.model_json_schema())
    ok = [COMPARE | {"budget_seconds": 60, "budget_usd": 0.25, "exhaustive": True},
          {"dataset_id": "file-1", "strategy": "lora", "budget_seconds": None, "exhaustive": False}]
    bad = [{"dataset_id": "file-1", "strategy": "lora", "budget_seconds": 60},
           {"dataset_id": "file-1", "budget_usd": 1},
           {"kind": "train", "dataset_id": "file-1", "exhaustive": True},
           COMPARE | {"budget_seconds": 0}, COMPARE | {"budget_usd": 20_000}, COMPARE | {"budget_seconds": "10m"}]
    assert all(validator.is_valid(body) for body in ok)
    assert not any(validator.is_valid(body) for body in bad)


def _estimate(cost_high: int, device: str = "cpu", units: int = 2):
    from tunelab.billing.estimate import Estimate

    return Estimate(device=device, units=units, compute_ms=1000, compute_low_ms=500, compute_high_ms=4000,
                    wall_seconds=1.0, wall_low_seconds=0.5, wall_high_seconds=4.0, cost=cost_high // 2,
                    cost_low=cost_high // 4, cost_high=cost_high, price_version="test", raw_ms=1000, factor=1.0,
                    spread=0.2)


def test_the_reservation_is_capped_by_the_budget():
    from tunelab.billing import prices
    from tunelab.services.billing import within_budget

    est = _estimate(2_000_000)                                    # $2 at the top of the range
    capped = within_budget(est, JobSpec(**COMPARE, budget_usd=0.5))
    assert capped.reserve == capped.cost_high == 500_000 and capped.cost == 500_000 and capped.cost_low == 500_000
    per_hour = prices.current().compute_per_hour("cpu")
    by_time = within_budget(est, JobSpec(**COMPARE, budget_seconds=60))          # 60 s on 2 cores
    assert by_time.reserve == min(prices.compute_cost(60 * 1000 * 2, per_hour), est.cost_high)
    both = within_budget(est, JobSpec(**COMPARE, budget_seconds=60, budget_usd=0.000001))
    assert both.reserve == 1                                     # the tighter one
    assert within_budget(est, JobSpec(**COMPARE, budget_usd=5)) is est          # the estimate is below it
    assert within_budget(est, JobSpec(**COMPARE, exhaustive=True)) is est        # no budget
    assert within_budget(est, JobSpec(dataset_id="file-1", strategy="lora")) is est


@pytest.mark.parametrize("budget, seconds", [("10m", 600.0), ("1h30m", 5400.0), (90, 90.0), ("45s", 45.0)])
def test_the_sdk_reads_a_duration(budget, seconds):
    from tunelab.sdk import _budget

    assert _budget(budget) == {"budget_seconds": seconds}
    assert _budget(budget, 0.25, True) == {"budget_seconds": seconds, "budget_usd": 0.25, "exhaustive": True}
    assert _budget() == {}


def test_the_sdk_refuses_a_bad_duration_before_sending():
    from tunelab.sdk import _budget

    with pytest.raises(ValueError, match="give a duration such as"):
        _budget("10 minutes please")


def test_the_job_child_hands_the_budget_to_the_engine(tmp_path, monkeypatch, capsys):
    """jobs.child: the spec's budget and `exhaustive` reach engine.compare (stand-ins for the model,
    the data and the engine: what is checked is the plumbing, not a comparison)."""
    import json
    from types import SimpleNamespace

    import tunelab.engine
    import tunelab.models
    from tunelab.jobs import child
    from tunelab.jobs.spec import ChildSpec

    calls = []

    def fake_compare(model, data, strategies, **kw):
        calls.append((strategies, kw))
        return SimpleNamespace(results=[{"strategy": "zero-shot", "macro_f1": 0.5},
                                        {"strategy": "lora", "error": "the budget ran out", "skipped": True}],
                               to_dict=lambda: {"results": [], "recommended": "zero-shot", "reason": "only one"})

    splits = SimpleNamespace(train=[1, 2], validation=[3], test=[4], label_names=["a", "b"])
    monkeypatch.setattr(tunelab.models, "resolve_model", lambda name: SimpleNamespace(name=name))
    monkeypatch.setattr(tunelab.engine, "prepare_data", lambda spec, model: SimpleNamespace(
        task=SimpleNamespace(name="text-classification"), splits=splits), raising=False)
    monkeypatch.setattr(tunelab.engine, "compare", fake_compare)
    job = JobSpec(**COMPARE, budget_seconds=120, budget_usd=0.25, exhaustive=True)
    spec = tmp_path / "spec.json"
    spec.write_text(ChildSpec(job=job, train_file=str(tmp_path / "train.csv"), work_dir=str(tmp_path / "work"),
                              out_dir=str(tmp_path / "out")).model_dump_json())
    assert child.run(spec) == child.EXIT_OK
    (strategies, kw), = calls
    assert strategies == ["zero-shot", "lora"] and kw["exhaustive"] is True
    assert (kw["budget"].seconds, kw["budget"].usd) == (120, 0.25)
    result = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert result["type"] == "result" and set(result["artifacts"]) == {"zero-shot"}    # a skipped row has no model
    calls.clear()
    spec.write_text(ChildSpec(job=JobSpec(**COMPARE), train_file="t.csv", work_dir="w", out_dir="o").model_dump_json())
    assert child.run(spec) == child.EXIT_OK
    assert calls[0][1]["budget"] is None and calls[0][1]["exhaustive"] is False
