"""The Markdown model card written into every artifact."""

from __future__ import annotations

from ..evaluation.intervals import format_with_interval


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _param(name: str, value, notes: dict) -> str:
    """A hyperparameter left to tunelab (None) shows what the run chose, e.g. C on validation."""
    if value is None and name in notes:
        return f"{_fmt(notes[name])} (chosen on validation)"
    return _fmt(value)


ROWS_OF = {"token_f1": "answers_scored", "exact_match": "answers_scored"}    # scored on generated answers


def _value(metrics: dict, key: str, unit: str = "test rows") -> str:
    """A metric, with its interval and the rows it was measured on when it has one (older runs: alone)."""
    interval = metrics.get(f"{key}_interval")
    if not interval:
        return _fmt(metrics[key])
    rows = metrics.get(ROWS_OF.get(key, ""), (metrics.get("interval") or {}).get("rows", metrics.get("test_rows")))
    if key in ROWS_OF:
        unit = "held-out answers"
    return format_with_interval(metrics[key], interval, rows, unit)


def _interval_note(metrics: dict, generative: bool = False) -> list[str]:
    info = metrics.get("interval") or {}
    if not info:
        return []
    how = (f"{info.get('method', '')}, {info.get('resamples') or 0:,} resamples" if not generative else
           "a percentile bootstrap over the rows for mean scores such as token F1, the Wilson score interval "
           "for proportions such as preference accuracy and exact match")
    return ["", f"In brackets: the {100 * info.get('level', 0.95):.0f}% interval ({how}); a smaller test split "
            "gives a wider interval."]


def render_model_card(config: dict, metrics: dict, data_report: dict) -> str:
    stats = data_report.get("stats", {}).get("train", {})
    lines = [
        f"# {config.get('strategy')} classifier on {config.get('data', {}).get('train_file', 'your data')}",
        "",
        f"Made by tunelab with base model **{config.get('model', {}).get('name')}** "
        f"({config.get('model', {}).get('license', 'unknown')} license) and strategy "
        f"**{config.get('strategy')}**.",
        "",
        "## Data",
        f"- training rows: {config.get('data', {}).get('train_rows')}, validation rows: "
        f"{config.get('data', {}).get('validation_rows')}, test rows: {config.get('data', {}).get('test_rows')} "
        f"(test set: {config.get('data', {}).get('test_origin')})",
        f"- labels ({len(config.get('labels', []))}): {', '.join(config.get('labels', [])[:30])}"
        + (" ..." if len(config.get("labels", [])) > 30 else ""),
    ]
    if stats.get("length"):
        lines.append(f"- text length ({stats.get('length_unit', 'tokens')}): mean "
                     f"{_fmt(stats['length'].get('mean'))}, p95 {_fmt(stats['length'].get('p95'))}")
    warnings = [i for i in data_report.get("issues", []) if i.get("severity") == "warning"]
    for w in warnings:
        lines.append(f"- warning: {w.get('message')}")
    lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {_param(k, v, config.get('notes') or {})} |" for k, v in config.get("params", {}).items()]
    lines += ["", "## Results on the test split", "", "| metric | value |", "|---|---|"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "train_seconds", "latency_ms_per_example",
                "throughput_per_s", "trainable_params", "total_params", "peak_rss_mb"):
        if key in metrics:
            lines.append(f"| {key} | {_value(metrics, key)} |")
    lines += _interval_note(metrics)
    per_class = metrics.get("per_class", {})
    if per_class:
        lines += ["", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                  for n, v in per_class.items()]
    weakest = sorted(per_class.items(), key=lambda kv: kv[1]["f1"])[:3]
    lines += ["", "## Limits", "",
              "- Measured on the test split above only; texts unlike the training data may score lower.",
              f"- Texts longer than {config.get('max_length', 'the model maximum')} tokens are truncated.",
              "- The model can only predict the labels it was trained on."]
    if weakest:
        lines.append("- Weakest classes: " + ", ".join(f"{n} (F1 {v['f1']:.2f})" for n, v in weakest) + ".")
    return "\n".join(lines) + "\n"


def _cell(text, limit: int = 160) -> str:
    text = " ".join(str(text or "").split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def render_generative_card(config: dict, metrics: dict, data_report: dict, samples: list[dict]) -> str:
    """The card of a tuned causal LM: data, hyperparameters, held-out quality against the base
    model, and sample prompts answered by both."""
    data, model = config.get("data", {}), config.get("model", {})
    lines = [f"# {config.get('strategy')} of {model.get('name')} on {data.get('train_file', 'your data')}", "",
             f"Made by tunelab with base model **{model.get('name')}** ({model.get('license', 'unknown')} license) "
             f"and strategy **{config.get('strategy')}**.", "", "## Data",
             f"- format: {data.get('format')} ({data.get('kind')}); training {data.get('train_rows')}, validation "
             f"{data.get('validation_rows')}, test {data.get('test_rows')} examples (test set: {data.get('test_origin')})"]
    for w in (i for i in data_report.get("issues", []) if i.get("severity") == "warning"):
        lines.append(f"- warning: {w.get('message')}")
    lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in config.get("params", {}).items()]
    lines += ["", "## Results on the held-out split", "", "| metric | base model | tuned |", "|---|---|---|"]
    pairs = [("loss (assistant tokens)", "base_test_loss", "test_loss"),
             ("perplexity", "base_test_perplexity", "test_perplexity"),
             ("exact match", None, "exact_match"), ("token F1", None, "token_f1"),
             ("chosen - rejected log-prob margin", "base_margin", "margin"),
             ("preference accuracy", "base_preference_accuracy", "preference_accuracy")]
    unit = "held-out pairs" if "preference_accuracy" in metrics else "held-out answers"
    for title, base, tuned in pairs:
        if tuned in metrics:
            lines.append(f"| {title} | {_fmt(metrics.get(base)) if base and base in metrics else '—'} | "
                         f"{_value(metrics, tuned, unit)} |")
    lines += _interval_note(metrics, generative=True)
    lines += ["", "| cost | value |", "|---|---|"]
    for key in ("train_seconds", "tokens_per_second", "peak_rss_mb", "trainable_params", "total_params"):
        if metrics.get(key) is not None:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
    if samples:
        lines += ["", "## Sample prompts", "", "| prompt | base model | tuned model | reference |", "|---|---|---|---|"]
        lines += [f"| {_cell(s['prompt'])} | {_cell(s['base'])} | {_cell(s['tuned'])} | {_cell(s['reference'])} |"
                  for s in samples]
    lines += ["", "## Limits", "",
              "- Measured on the held-out split above only; prompts unlike the training data may fare worse.",
              f"- Examples longer than {config.get('max_length')} tokens were truncated.",
              "- A small model tuned on a small set imitates its answers; it does not gain knowledge it lacks."]
    return "\n".join(lines) + "\n"
