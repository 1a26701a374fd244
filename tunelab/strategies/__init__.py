"""Strategies, registered by name: zero-shot, few-shot, linear-probe, full, lora, qlora."""

from .base import REGISTRY, ConfigError, Params, RunContext, Strategy, get_strategy, parse_params, register

__all__ = ["REGISTRY", "ConfigError", "Params", "RunContext", "Strategy", "get_strategy",
           "parse_params", "register", "available"]


def available() -> list[str]:
    from . import _load_all  # noqa: F401

    return list(REGISTRY)
