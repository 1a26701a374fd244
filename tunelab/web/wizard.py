"""The new-training wizard's form logic: strategies' hyperparameters as form fields (defaults
shown, only changed values sent), and a posted form turned into a job spec."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass

from ..strategies import ConfigError, get_strategy, parse_params, strategies_of, task_named

NO_GPU = "Needs an NVIDIA GPU (CUDA) and this server has none. LoRA trains the same adapters without one."


@dataclass
class Field:
    name: str
    kind: str            # int | float | bool | str | list | dict
    default: object
    help: str
    optional: bool

    @property
    def input_name(self) -> str:
        return self.name

    @property
    def default_text(self) -> str:
        if self.default is None:
            return ""
        if isinstance(self.default, dict):
            return "\n".join(f"{k}: {v}" for k, v in self.default.items())
        if isinstance(self.default, list):
            return ", ".join(map(str, self.default))
        return str(self.default)


def _kind(annotation) -> tuple[str, bool]:
    args = typing.get_args(annotation)
    optional = isinstance(annotation, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    origin = typing.get_origin(base) or base
    return {int: "int", float: "float", bool: "bool", list: "list", dict: "dict"}.get(origin, "str"), optional


def fields(strategy_name: str) -> list[Field]:
    out = []
    for name, info in get_strategy(strategy_name).Params.model_fields.items():
        kind, optional = _kind(info.annotation)
        default = info.default_factory() if info.default_factory else info.default
        out.append(Field(name, kind, default, info.description or "", optional))
    return out


def distributed(strategy_name: str | None) -> bool:
    """Whether the strategy's training spreads over several processes (its `distributed`): the
    wizard then offers a "Processes" input."""
    try:
        return bool(strategy_name) and bool(getattr(get_strategy(strategy_name), "distributed", False))
    except ConfigError:
        return False


def processes_from_form(strategy_name: str | None, raw) -> int:
    """The wizard's "Processes" (1 when left empty, or for a strategy that has no loop to spread)."""
    value = positive_int(raw, "Processes")
    return value if value and distributed(strategy_name) else 1


def strategies(task: str = "text-classification") -> list[dict]:
    """The task's strategies the wizard offers, cheapest first; one that cannot run here is shown
    disabled with the reason."""
    out = []
    for s in strategies_of(task_named(task)):
        if s.in_wizard:
            out.append({"name": s.name, "family": s.family, "summary": s.summary, "when": s.advice,
                        "baseline": s.baseline,
                        "disabled": _gpu_note(s.unavailable())})
    return out


def _gpu_note(problem: str | None) -> str | None:
    """The engine's message speaks CLI (`--strategy lora`); the wizard says it in its own words."""
    if problem and "none is available" in problem:
        return NO_GPU
    return problem


def _value(f: Field, raw: str | None):
    """The typed value of one field's form input, or None when it is left at its default."""
    if f.kind == "bool":
        value = raw in ("on", "true", "1")
        return value if value != bool(f.default) else None
    text = (raw or "").strip()
    if text == f.default_text.strip() or (not text and (f.optional or f.default in (None, {}, []))):
        return None
    if f.kind == "list":
        return [t.strip() for t in text.split(",") if t.strip()]
    if f.kind == "dict":
        pairs = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if not sep or not key.strip():
                raise ConfigError(f"{f.name}: write one `label: description` a line (got {line.strip()!r})")
            pairs[key.strip()] = value.strip()
        return pairs
    return text           # pydantic turns "8" into 8 and "2e-4" into 0.0002, or says why not


def params_from_form(strategy_name: str, form) -> dict:
    """Overrides for one strategy from inputs named `p.<strategy>.<field>`; ConfigError if invalid."""
    values = {}
    if form.get(f"p.{strategy_name}.__shown") is None:     # its fieldset was not on the page: defaults
        return values
    for f in fields(strategy_name):
        raw = form.get(f"p.{strategy_name}.{f.name}")
        if f.kind != "bool" and raw is None:
            continue
        value = _value(f, raw)
        if value is not None:
            values[f.name] = value
    parsed = parse_params(get_strategy(strategy_name), values)
    return {k: getattr(parsed, k) for k in values}


def positive_int(raw, name: str) -> int | None:
    text = str(raw or "").strip().replace(",", "").replace("_", "")
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"{name} must be a whole number above 0 (or empty), not {raw!r}")
    return int(text)


def is_causal(model: dict) -> bool:
    """An uploaded model folder (the API's listing) whose architecture generates text."""
    return any(str(a).endswith("ForCausalLM") for a in model.get("architectures") or [])


def models_for(task, catalog: list, uploaded: list[dict]) -> tuple[list, list[dict]]:
    """The base models the wizard offers for a task: causal LMs for chat and preference data,
    encoders for classification; the tenant's uploaded models of the same kind."""
    if task.model_kind == "causal-lm":
        return [m for m in catalog if m.kind == "causal-lm"], [m for m in uploaded if is_causal(m)]
    if getattr(task, "inputs", "text") == "image":       # image models: the catalog's of that task
        return [m for m in catalog if m.task == task.name], [m for m in uploaded if is_image_model(m)]
    return ([m for m in catalog if m.task == "text-classification" and m.kind != "causal-lm"],
            [m for m in uploaded if not is_causal(m) and not is_image_model(m)])


def is_image_model(model: dict) -> bool:
    """An uploaded Hugging Face image classifier (ViT, ConvNeXt, ResNet, ...)."""
    return any(str(a).endswith("ForImageClassification") for a in model.get("architectures") or [])
