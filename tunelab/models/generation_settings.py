"""What a generation asks for, apart from the code that generates (which needs torch): the
server reads these from forms and requests without loading a model library."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
