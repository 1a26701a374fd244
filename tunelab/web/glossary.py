"""One line for each word of jargon the pages show, so a person who does not write code can hover
(or tap) it: the `term` macro in macros.html renders `<abbr title=...>` from here.

A strategy's line is its own declaration's `summary` (strategies/*.py), never a list kept here: a new
strategy explains itself.
"""

from __future__ import annotations

TERMS: dict[str, str] = {
    "macro-F1": "A score from 0 to 1 of how well every label is recognised, each label counting equally "
                "(so a rare label that is always missed pulls it down); 1 is perfect.",
    "accuracy": "The share of test rows that got the right label (a model that always answers the "
                "commonest label can score high on it).",
    "weighted F1": "Like macro-F1, but each label counts in proportion to its rows: common labels weigh more.",
    "interval": "The 95% interval: the range the score would likely fall in on other test rows like these; "
                "fewer test rows give a wider range.",
    "trainable parameters": "How many of the model's numbers this strategy changes while training; "
                            "fewer means faster, cheaper training and a smaller file.",
    "latency": "How long the model takes to answer for one text, measured without any cache, as a "
               "new request would see it.",
    "MFU": "Model FLOPs utilisation: the share of this machine's measured peak arithmetic speed the run used.",
    "hardware use (MFU)": "Model FLOPs utilisation: the share of this machine's measured peak arithmetic "
                          "speed the run used.",
    "tokens per second": "Word pieces (tokens) of your texts the model read or trained on each second.",
    "tokens/s": "Word pieces (tokens) of your texts the model read or trained on each second.",
    "precision": "Of the rows the model gave this label, the share that really had it.",
    "recall": "Of the rows that really had this label, the share the model found.",
    "F1": "Precision and recall combined in one score (their harmonic mean), 0 to 1.",
    "support": "How many test rows have this label.",
    "confusion matrix": "A table of true labels (rows) against predicted labels (columns): the diagonal "
                        "is right, everything else is a mistake.",
}


def explain(term: str) -> str:
    """The one-line explanation of `term`: a glossary word, or a strategy's own summary; "" if none."""
    if not isinstance(term, str) or not term:
        return ""
    if term in TERMS:
        return TERMS[term]
    from ..strategies import ConfigError, get_strategy

    try:
        return getattr(get_strategy(term), "summary", "") or ""
    except (ConfigError, KeyError, ValueError):
        return ""
