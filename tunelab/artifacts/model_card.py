"""The Markdown model card written into every artifact."""

from __future__ import annotations


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
    lines += [f"| {k} | {_fmt(v)} |" for k, v in config.get("params", {}).items()]
    lines += ["", "## Results on the test split", "", "| metric | value |", "|---|---|"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "train_seconds", "latency_ms_per_example",
                "throughput_per_s", "trainable_params", "total_params", "peak_rss_mb"):
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
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
