"""Answers from a tenant's tuned generative model, for the chat playground: the same generation
code as `tunelab generate` (CausalLMModel.stream, the model's chat template), the model loaded
once through the process's predictor cache (a small LRU; sealed folders decrypted only while
loading), and caps on what one request may ask of the machine."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator

from ..models.generation_settings import GenerationSettings
from ..strategies import task_named

MAX_NEW_TOKENS = 512
DEFAULT_NEW_TOKENS = 128
MAX_PROMPT_CHARS = 4000
MAX_TEMPERATURE = 2.0
CONCURRENT = 2            # answers generated at once by this process; more wait for none: "busy"

_slots = threading.BoundedSemaphore(CONCURRENT)


class GenerationRefused(ValueError):
    """A request the playground will not run, with the HTTP status and a sentence for people."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_generative(model) -> bool:
    """A tuned model (db.models.TunedModel) whose task answers by generating text."""
    name = (getattr(model, "metrics", None) or {}).get("task")
    try:
        return bool(name) and task_named(name).serving == "generate"
    except KeyError:
        return False


def _number(raw, name: str, kind, low, high, default):
    text = str(raw if raw is not None else "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise GenerationRefused(422, f"{name} must be a number, not {text[:20]!r}.") from None
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise GenerationRefused(422, f"{name} must be between {low} and {high}.")
    return value


def settings_from(max_new_tokens=None, temperature=None, top_p=None, seed=None) -> GenerationSettings:
    """Form values (strings or numbers) to generation settings within the playground's caps."""
    return GenerationSettings(
        max_new_tokens=_number(max_new_tokens, "Max new tokens", int, 1, MAX_NEW_TOKENS, DEFAULT_NEW_TOKENS),
        temperature=_number(temperature, "Temperature", float, 0.0, MAX_TEMPERATURE, 0.0),
        top_p=_number(top_p, "Top-p", float, 0.01, 1.0, 1.0),
        seed=_number(seed, "Seed", int, 0, 2**31 - 1, 0))


def check_prompt(prompt: str) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise GenerationRefused(422, "Type a message for the model.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise GenerationRefused(422, f"Messages are limited to {MAX_PROMPT_CHARS:,} characters here.")
    return prompt


def load(cache, artifact_path: str):
    """The tuned model from the predictor cache; a classifier's folder is refused."""
    try:
        lm = cache.get(artifact_path)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise GenerationRefused(409, f"This model's files cannot be loaded ({exc}). Train it again.") from None
    if getattr(lm, "kind", None) != "causal-lm" or not hasattr(lm, "stream"):
        raise GenerationRefused(409, "This model classifies texts: try it in the classification playground.")
    return lm


@dataclass
class Answer:
    """One answer being generated: holds a generation slot until it is written out or closed
    (a client that goes away closes the stream; one never iterated is closed when collected)."""
    lm: object
    prompt: str
    settings: GenerationSettings
    prompt_tokens: int
    _held: bool = True

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self.lm.stream(self.prompt, self.settings)
        finally:
            self.close()

    def text(self) -> str:
        return "".join(self)

    def close(self) -> None:
        if self._held:
            self._held = False
            _slots.release()

    def __del__(self):
        self.close()


def start(lm, prompt: str, settings: GenerationSettings) -> Answer:
    """Checks the prompt against the model's context and takes a slot (429 when all are busy);
    iterate the answer for its text pieces, as the model writes them."""
    prompt = check_prompt(prompt)
    ids = lm.prompt_ids(prompt)
    context = int(getattr(lm, "max_length", 0) or 0)
    if context and len(ids) >= context:
        raise GenerationRefused(422, f"The message is {len(ids):,} tokens with the chat template; this model "
                                     f"reads at most {context:,}. Shorten it.")
    if context:          # never past the context the model was trained with
        settings.max_new_tokens = max(1, min(settings.max_new_tokens, context - len(ids)))
    if not _slots.acquire(blocking=False):
        raise GenerationRefused(429, "The playground is busy writing other answers; try again in a moment.")
    return Answer(lm, prompt, settings, len(ids))
