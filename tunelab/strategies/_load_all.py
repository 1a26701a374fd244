"""Importing this module registers every built-in strategy (in the order they are listed)."""

from . import few_shot, full, linear_probe, lora, qlora, zero_shot  # noqa: F401
from . import dpo, prompting, sft  # noqa: F401  (causal LMs)
