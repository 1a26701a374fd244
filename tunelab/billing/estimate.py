"""What a job will cost, before it starts: compute from the dataset's size and token lengths, the
model's size, the strategy and its hyperparameters, scaled by throughput measured on this
platform's hardware, then priced by the current sheet. A range, because early stopping and a
busy machine move the actual.

The raw model (work.json, measured here and shipped): for a fine-tune, CPU-seconds =
setup + k_train x params(B) x tokens trained (steps x batch x mean length) + k_eval x params(B) x
tokens evaluated; for a transfer strategy, k_encode x params(B) x tokens encoded (+ a logistic
regression for linear-probe, + SetFit pairs for few-shot). The calibration table
(`billing_calibration`) scales that by what finished jobs on this platform actually metered
(`observe`), per strategy, model and device; the range is the point estimate widened by the
errors seen so far.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from sqlalchemy.orm import Session

from ..db.ledger import Calibration
from ..db.models import utcnow
from . import prices
from .devices import cpu_probe_ms, detect
from .lengths import lengths_from_histogram, padding_factor

WORK = Path(__file__).with_name("work.json")
MIN_SPREAD, DEFAULT_SPREAD = 0.10, 0.20
PROBE_DEADBAND = 1.35


@lru_cache(maxsize=1)
def work_constants() -> dict:
    return json.loads(WORK.read_text())


@dataclass
class JobShape:
    """What the estimator needs to know about one strategy run of a job."""
    strategy: str
    model: str
    model_params: int
    rows: int                       # training file rows used (after `limit`)
    test_rows: int | None           # a separate test file's rows, if any
    mean_tokens: float
    labels: int
    params: dict = field(default_factory=dict)   # the strategy's resolved hyperparameters
    family: str = "fine-tune"       # fine-tune | transfer
    file_rows: int = 0              # rows in the whole file (all are read and validated)
    length_histogram: dict | None = None   # the dataset's token-length histogram (stats)
    max_length: int = 256           # the model's maximum: longer texts are truncated
    cached: frozenset = frozenset()  # splits whose encoder features an earlier run cached: "test", "train"


@dataclass
class Estimate:
    device: str
    units: int                      # cores (cpu) or GPUs a job occupies
    compute_ms: int                 # point estimate of billed device time (core-ms or GPU-ms)
    compute_low_ms: int
    compute_high_ms: int
    wall_seconds: float
    wall_low_seconds: float
    wall_high_seconds: float
    cost: int                       # micro-dollars
    cost_low: int
    cost_high: int
    price_version: str
    raw_ms: int                     # before calibration (what `observe` compares against)
    factor: float
    spread: float
    basis: list[dict] = field(default_factory=list)

    @property
    def reserve(self) -> int:
        """What a job holds when it starts: the top of the range."""
        return self.cost_high

    def to_dict(self) -> dict:
        return asdict(self) | {"reserve": self.reserve}


def splits(shape: JobShape) -> tuple[int, int, int]:
    """(train, validation, test) rows, as engine.prepare_data will split them."""
    if shape.test_rows:
        val = max(int(round(shape.rows * 0.1)), 1)
        return shape.rows - val, val, shape.test_rows
    val, test = max(int(round(shape.rows * 0.1)), 1), max(int(round(shape.rows * 0.2)), 1)
    return shape.rows - val - test, val, test


MAX_EVALUATIONS = 20     # training.loop evaluates at most about this many times


def loop_steps(train_rows: int, p: dict) -> tuple[int, int]:
    """(steps, epochs) the training loop will run at most (training.loop's arithmetic)."""
    batch, accum = int(p.get("batch_size", 32)), int(p.get("gradient_accumulation", 1))
    per_epoch = math.ceil(math.ceil(train_rows / batch) / accum)
    epochs = int(p.get("epochs", 3))
    min_steps = int(p.get("min_steps", 0))
    run = max(epochs, math.ceil(min_steps / max(per_epoch, 1)))
    if p.get("max_epochs"):
        run = min(run, max(int(p["max_epochs"]), epochs))
    return per_epoch * run, run


def min_epochs(train_rows: int, p: dict) -> int:
    """Epochs before early stopping may fire: it never does before `min_steps` (training/stopping.py)."""
    steps, epochs = loop_steps(train_rows, p)
    per_epoch = max(steps // max(epochs, 1), 1)
    return min(epochs, math.ceil(int(p.get("min_steps", 0)) / per_epoch))


def raw_seconds(shape: JobShape, device: str, early_stopping: bool = True) -> tuple[float, list[dict]]:
    """Device-seconds (CPU core-seconds, or GPU-seconds) before calibration, with the terms. A
    fine-tune allowed many epochs (small data, `min_steps`) usually stops early: expected at
    `typical_epochs`; early_stopping=False gives the most it can run."""
    k = work_constants()
    kind = device.split(":")[0]
    dev = k["devices"].get(kind, k["devices"]["cpu"])
    s = dev["strategies"].get(shape.strategy) or dev["strategies"]["default-" + shape.family]
    speed = hardware_speed(device)
    pb = shape.model_params / 1e9
    tok = max(shape.mean_tokens, 2.0)
    train, val, test = splits(shape)
    latency_texts = min(test, 256)
    read = shape.file_rows or shape.rows
    terms = [{"term": "setup", "seconds": s["setup_s"] + dev["per_row_s"] * (read + (shape.test_rows or 0))}]
    lengths = lengths_from_histogram(shape.length_histogram, train,
                                     int(shape.params.get("max_length") or shape.max_length))
    infer_f = padding_factor(lengths, 128 if shape.family == "fine-tune" else 64, device, training=False)
    if shape.family == "fine-tune":
        train_f = padding_factor(lengths, int(shape.params.get("batch_size", 32)), device, training=True)
        steps, epochs = loop_steps(train, shape.params)
        nominal = int(shape.params.get("epochs", 3))
        if early_stopping and epochs > nominal:
            epochs = min(epochs, max(nominal, int(s.get("typical_epochs", epochs)), min_epochs(train, shape.params)))
            steps = steps * epochs // loop_steps(train, shape.params)[1]
        trained = epochs * train * tok
        terms.append({"term": "train", "steps": steps, "epochs": epochs, "tokens": int(trained),
                      "padding": round(train_f, 3), "seconds": s["k_train"] * pb * trained * train_f})
        if s.get("step_s"):      # what a step costs whatever the model's size (dominant for small LMs)
            terms.append({"term": "steps", "steps": steps, "seconds": s["step_s"] * steps})
        evaluated = (val * min(epochs, MAX_EVALUATIONS) + test + latency_texts) * tok
        terms.append({"term": "evaluate", "tokens": int(evaluated), "padding": round(infer_f, 3),
                      "seconds": dev["k_eval"] * pb * evaluated * infer_f})
    else:
        # Predictions cache the test split's features, a linear-probe its training features too:
        # a later run on the same split encodes only what is not cached (and the latency sample).
        from ..strategies import get_strategy

        test_enc = 0 if "test" in shape.cached else test
        work = get_strategy(shape.strategy).encode_work(train=train, val=val, test=test_enc, labels=shape.labels,
                                                        cached=shape.cached, params=shape.params)
        texts = work["texts"] + latency_texts
        terms.append({"term": "encode", "tokens": int(texts * tok), "padding": round(infer_f, 3),
                      "seconds": dev["k_encode"] * pb * texts * tok * infer_f})
        if work.get("fit_rows"):
            terms.append({"term": "logistic regression", "seconds": s.get("k_fit", 0.0) * work["fit_rows"]})
        if work.get("pairs"):
            terms.append({"term": "setfit pairs", "pairs": work["pairs"],
                          "seconds": s.get("k_pair", 0.0) * pb * work["pairs"] * 2 * tok})
    if speed != 1.0:
        for t in terms:
            t["seconds"] *= speed
    return sum(t["seconds"] for t in terms), terms


def hardware_speed(device: str) -> float:
    """The probe's factor for a priced device (1.0 for GPUs: they are priced per type)."""
    if device.split(":")[0] != "cpu":
        return 1.0
    return cpu_speed(work_constants()["devices"]["cpu"])


def cpu_speed(dev: dict) -> float:
    """How many times longer than the reference machine (work.json's) this CPU takes for the same
    work, from a matrix-product probe in the precision runs use: the shipped constants then hold on
    other hardware from the first job (a CPU without native bf16 trains at about half the speed),
    before the calibration has seen any. Clamped: a probe is a hint, the calibration corrects it.
    Within PROBE_DEADBAND of the reference it is 1.0: on one machine the probe itself varies by
    up to ~20% from one process to the next (4.1-5.7 ms here, idle), so only a difference of
    hardware class is worth acting on; the calibration learns the rest from metered jobs."""
    reference = dev.get("probe_ms")
    if not reference:
        return 1.0
    ratio = cpu_probe_ms() / reference
    if 1 / PROBE_DEADBAND <= ratio <= PROBE_DEADBAND:
        return 1.0
    return min(max(ratio, 0.2), 5.0)


def calibration_key(strategy: str, model: str, device: str) -> str:
    return f"{strategy}|{model}|{device}"


def calibration(session: Session | None, key: str) -> tuple[float, float, float]:
    """(factor, wall_factor, spread) for a key; the shipped defaults where nothing was observed yet."""
    row = session.get(Calibration, key) if session is not None else None
    if row is None:
        return 1.0, 1.0, DEFAULT_SPREAD
    return row.factor, row.wall_factor, max(row.spread, MIN_SPREAD)


def estimate(session: Session | None, shapes: list[JobShape], device: str | None = None,
             units: int | None = None) -> Estimate:
    """The estimate for a job made of one or more strategy runs (a comparison runs several)."""
    found_device, found_units = detect()
    device, units = device or found_device, units or found_units
    sheet = prices.current()
    raw = point = wall = most = 0.0
    spread, basis = 0.0, []
    for shape in shapes:
        seconds, terms = raw_seconds(shape, device)
        factor, wall_factor, sp = calibration(session, calibration_key(shape.strategy, shape.model, device))
        raw += seconds
        point += seconds * factor
        most += raw_seconds(shape, device, early_stopping=False)[0] * factor
        wall += seconds * factor * wall_factor / (units if device == "cpu" else 1)
        spread = max(spread, sp)
        basis.append({"strategy": shape.strategy, "raw_seconds": round(seconds, 2), "factor": round(factor, 3),
                      "hardware": round(hardware_speed(device), 3),
                      "terms": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in t.items()}
                                for t in terms]})
    # The top of the range also covers a run that never stops early, at the usual speed error on
    # top (a fine-tune that ran all its epochs on a slow afternoon overran a bare most/point).
    low_f = max(1 - 1.5 * spread, 0.25)
    high_f = max(1 + 2 * spread, (most / point) * (1 + spread) if point else 1.0)
    ms = int(point * 1000)
    factor = point / raw if raw else 1.0
    return _priced(sheet, device, units, ms, wall, low_f, high_f, raw, factor, spread, basis)


def _priced(sheet, device: str, units: int, ms: int, wall: float, low_f: float, high_f: float, raw: float,
            factor: float, spread: float, basis: list) -> Estimate:
    """The Estimate of `ms` device-milliseconds (and its low/high range) on the price sheet."""
    per_hour = sheet.compute_per_hour(device)
    return Estimate(device=device, units=units, compute_ms=ms, compute_low_ms=int(ms * low_f),
                    compute_high_ms=int(ms * high_f), wall_seconds=round(wall, 1),
                    wall_low_seconds=round(wall * low_f, 1), wall_high_seconds=round(wall * high_f, 1),
                    cost=prices.compute_cost(ms, per_hour), cost_low=prices.compute_cost(int(ms * low_f), per_hour),
                    cost_high=max(prices.compute_cost(int(ms * high_f), per_hour), 1),
                    price_version=sheet.version, raw_ms=int(raw * 1000), factor=round(factor, 4),
                    spread=round(spread, 4), basis=basis)


BENCH_KIND = "bench-hardware"


def bench_mode(quick: bool, sweep: bool) -> str:
    """work.json's name for a hardware benchmark's mode: quick | full, -device without the model sweep."""
    return ("quick" if quick else "full") + ("" if sweep else "-device")


def bench_estimate(session: Session | None, quick: bool = True, sweep: bool = True, device: str | None = None,
                   units: int | None = None) -> Estimate:
    """A hardware benchmark job (kind bench-hardware): work.json's wall seconds of the machine for the
    mode, on every unit it has (the probes and the model bursts keep every core, or the GPU, busy),
    calibrated like a strategy (key bench-hardware|<mode>|<device>) and priced by the current sheet.
    Not scaled by the CPU probe: the device probes run for fixed times whatever the speed."""
    found_device, found_units = detect()
    device, units = device or found_device, units or found_units
    table = work_constants()[BENCH_KIND]
    mode = bench_mode(quick, sweep)
    wall_s = float(table.get(device.split(":")[0], table["cpu"])[mode])
    raw = wall_s * units
    factor, wall_factor, spread = calibration(session, calibration_key(BENCH_KIND, mode, device))
    point = raw * factor
    wall = point * wall_factor / (units if device == "cpu" else 1)
    low_f, high_f = max(1 - 1.5 * spread, 0.25), 1 + 2 * spread
    ms = int(point * 1000)
    sheet = prices.current()
    basis = [{"strategy": BENCH_KIND, "raw_seconds": round(raw, 2), "factor": round(factor, 3), "hardware": 1.0,
              "terms": [{"term": "benchmark", "mode": mode, "wall_seconds": round(wall_s, 2), "units": units,
                         "seconds": round(raw, 2)}]}]
    return _priced(sheet, device, units, ms, wall, low_f, high_f, raw, factor, spread, basis)


BATCH_KIND = "batch-predict"


def batch_estimate(session: Session | None, rows: int, model_params: int, device: str | None = None,
                   units: int | None = None) -> Estimate:
    """A batch-prediction job (kind batch-predict): work.json's model load plus a forward pass per row
    (scaled by the base model's size), on every unit, priced as compute; plus each prediction at the
    sheet's `batch.per_1k_predictions` (charged by the worker when the job succeeds)."""
    from dataclasses import replace

    found_device, found_units = detect()
    device, units = device or found_device, units or found_units
    table = work_constants()[BATCH_KIND]
    c = table.get(device.split(":")[0], table["cpu"])
    wall_s = c["startup_s"] + max(rows, 0) * c["per_row_s_per_100m"] * max(model_params, 1) / 1e8
    raw = wall_s * units
    spread = DEFAULT_SPREAD
    low_f, high_f = max(1 - 1.5 * spread, 0.25), 1 + 2 * spread
    sheet = prices.current()
    predictions = max(rows, 0) * sheet.per_1k_batch_predictions // 1000
    basis = [{"strategy": BATCH_KIND, "raw_seconds": round(raw, 2), "factor": 1.0, "hardware": 1.0,
              "terms": [{"term": "predict", "rows": rows, "model_params": model_params, "wall_seconds": round(wall_s, 2),
                         "units": units, "seconds": round(raw, 2), "predictions_cost": predictions}]}]
    est = _priced(sheet, device, units, int(raw * 1000), wall_s, low_f, high_f, raw, 1.0, spread, basis)
    return replace(est, cost=est.cost + predictions, cost_low=est.cost_low + predictions,
                   cost_high=est.cost_high + predictions)


def work_done_raw(estimate: dict, tokens_trained: int | None) -> int:
    """The raw estimate redone for the work the job really did: a fine-tune that stopped early
    trained fewer tokens than estimated. The calibration learns throughput from this, so that
    early stopping (which varies from dataset to dataset) does not skew it."""
    raw, basis = int(estimate.get("raw_ms") or 0), estimate.get("basis") or []
    if not tokens_trained or len(basis) != 1:
        return raw
    train = next((t for t in basis[0].get("terms", []) if t.get("term") == "train"), None)
    if not train or not train.get("tokens"):
        return raw
    return max(int(raw + train["seconds"] * 1000 * (tokens_trained / train["tokens"] - 1)), 1)


def observe(session: Session, key: str, raw_ms: int, actual_ms: int, wall_ms: int, units: int, device: str,
            estimated_ms: int | None = None) -> Calibration:
    """Fold a finished job into the calibration table: the ratio of metered compute to the raw
    model's compute for the work done (and of wall time to compute per unit), smoothed; the
    spread tracks the relative error of the estimate the job was given (`estimated_ms`)."""
    row = session.get(Calibration, key)
    if row is None:
        row = Calibration(key=key, factor=1.0, wall_factor=1.0, spread=DEFAULT_SPREAD, samples=0)
        session.add(row)
    if raw_ms <= 0 or actual_ms <= 0:
        return row
    ratio = actual_ms / raw_ms
    error = abs(actual_ms / estimated_ms - 1) if estimated_ms else abs(ratio / row.factor - 1)
    per_unit = actual_ms / (units if device == "cpu" else 1)
    alpha = max(0.3, 1 / (row.samples + 2))
    row.factor = (1 - alpha) * row.factor + alpha * ratio
    if wall_ms > 0 and per_unit > 0:
        row.wall_factor = (1 - alpha) * row.wall_factor + alpha * (wall_ms / per_unit)
    row.spread = max((1 - alpha) * row.spread + alpha * error, MIN_SPREAD)
    row.samples += 1
    row.updated_at = utcnow()
    return row
