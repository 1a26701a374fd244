"""Generative serving in one process: tuned causal LMs, many LoRA adapters sharing one loaded base.

Adapters of the base are loaded into a single peft model under names of their own
(load_adapter(folder, adapter_name=...)); each request names its model, and every forward step
takes the weights' lock and selects that request's adapter (or disables adapters for the bare
base) before running. The lock hands itself over in arrival order, so concurrent streams of
different adapters advance token by token in turn instead of one stream starving the others.
Generation itself is models.generation.stream_tokens, given a thin view of the model that does
the locking and selecting, so a served answer is token for token what `tunelab generate` writes.

Adapters load on demand; past `max_adapters` the least recently used one that no stream is using
is deleted from the peft model (a request for it later loads it again). Full fine-tuned models
and plain model folders get weights of their own (with their own lock) and stay loaded until
removed. A GPU engine (vLLM, SGLang) would replace this class behind the same methods.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from ..artifacts.store import ArtifactError, read_manifest
from ..models import ModelNotFound, UnsafeModel, resolve_model
from ..models.causal import has_own_chat_template, is_causal_lm_folder, load_causal_lm, load_chat_tokenizer
from ..models.generation import stream_tokens
from ..models.generation_settings import GenerationSettings
from ..models.lm_predictors import CausalLMModel
from .errors import BadServingRequest, UnknownModel

_UNKNOWN = object()      # which adapter is selected after peft added or deleted one: set it again
_ROLES = {"system", "user", "assistant"}


@dataclass
class Completion:
    model: str
    messages: list[dict] | None = None   # chat: rendered with the served model's own chat template
    prompt: str | None = None            # completions: raw text, no template
    settings: GenerationSettings = field(default_factory=GenerationSettings)


class FairLock:
    """A lock granted in arrival order: a stream that releases it and asks again queues behind
    the streams already waiting (threading.Lock lets the releasing thread take it straight back)."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()
        self._held = False

    def __enter__(self):
        with self._mutex:
            if not self._held:
                self._held = True
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()          # released by the holder: the lock is handed over, never free in between
        return self

    def __exit__(self, *exc):
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


class _Weights:
    """One set of weights in memory, its lock, and (for the shared base) which adapter is selected."""

    def __init__(self, model):
        self.model, self.lock = model, FairLock()
        self.peft = None                 # the peft wrapper once an adapter is loaded onto this base
        self.current = _UNKNOWN          # peft adapter name, or None: adapters disabled
        self._layers: list | None = None
        config = model.config
        self.context = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0)
                           or 2048)

    @property
    def runner(self):
        return self.peft if self.peft is not None else self.model

    def select(self, adapter: str | None) -> None:
        """Called with the lock held, before each forward step."""
        if self.peft is None or adapter == self.current:
            return
        if adapter is None:
            self.peft.base_model.disable_adapter_layers()
        elif self.current is None or self.current is _UNKNOWN or self._layers is None:
            self.peft.base_model.enable_adapter_layers()
            self.peft.set_adapter(adapter, inference_mode=True)
            self._layers = _plain_lora_layers(self.peft)
        else:
            # Switching between adapters every step: peft's set_adapter walks every module and resets
            # requires_grad (about a forward's time on a small model); in inference only the layers'
            # active adapter matters, so set just that (see _plain_lora_layers for when this is safe).
            for layer in self._layers:
                layer._active_adapter = [adapter]
            self.peft.base_model.active_adapter = adapter
        self.current = adapter

    def changed(self) -> None:
        """peft added or deleted an adapter: the next step selects through peft's own path again."""
        self.current, self._layers = _UNKNOWN, None


def _plain_lora_layers(peft_model) -> list | None:
    """The LoRA layers whose active adapter is all that a switch must change, or None when an
    adapter also swaps whole modules (modules_to_save, trainable tokens) and needs set_adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(getattr(c, "modules_to_save", None) or getattr(c, "trainable_token_indices", None)
           for c in peft_model.peft_config.values()):
        return None
    return [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]


class _StepView:
    """What stream_tokens sees as the model: each call takes the lock and selects the adapter."""

    def __init__(self, weights: _Weights, adapter: str | None):
        self._weights, self._adapter = weights, adapter
        self.generation_config = getattr(weights.model, "generation_config", None)

    def eval(self):     # safe: torch's Module.eval() (inference mode), not Python's eval; stream_tokens calls it
        return self

    def __call__(self, **inputs):
        with self._weights.lock:
            self._weights.select(self._adapter)
            return self._weights.runner(**inputs)


@dataclass(eq=False)
class _Served:
    """A served name: an adapter of the base, a model with weights of its own, or the bare base."""
    name: str
    folder: Path
    kind: str                      # "adapter" | "full" | "base"
    lm: CausalLMModel              # tokenizer + chat flag: prompt_ids exactly as `tunelab generate`
    weights: _Weights | None = None
    peft_name: str | None = None   # while loaded into the base
    in_use: int = 0
    removed: bool = False
    tokenize_lock: threading.Lock = field(default_factory=threading.Lock)


class Generation:
    """One answer being written: iterate for its text pieces; counts are final once iteration ends."""

    def __init__(self, pieces: Iterator[str], prompt_tokens: int, stats: dict, release):
        self.prompt_tokens = prompt_tokens
        self._pieces, self._stats, self._release = pieces, stats, release
        self._seen: list[str] = []
        self._done = False

    @property
    def completion_tokens(self) -> int:
        return int(self._stats.get("completion_tokens", 0))

    @property
    def finish_reason(self) -> str:
        return self._stats.get("finish_reason") or "length"

    def __iter__(self) -> Iterator[str]:
        yield from list(self._seen)
        try:
            for piece in self._pieces:
                self._seen.append(piece)
                yield piece
        except GeneratorExit:       # the consumer went away mid-answer
            self.close()
            raise
        self._done = True
        self.close()

    def text(self) -> str:
        if not self._done:
            for _ in self:
                pass
        return "".join(self._seen)

    def close(self) -> None:
        """Stops generating (a client that went away) and lets the adapter be unloaded again."""
        release, self._release = self._release, None
        if release is not None:
            self._pieces.close()
            release()

    def __del__(self):
        try:
            self.close()
        except Exception:       # interpreter shutdown: nothing left to release
            pass


class MultiAdapterLM:
    def __init__(self, base: Path | None, base_name: str | None = None, *, max_adapters: int = 8):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        if base_name and base is None:
            raise BadServingRequest(f"{base_name!r} is to serve the bare base, but no base folder was given")
        self.max_adapters = max_adapters
        self._lock = threading.RLock()
        self._served: dict[str, _Served] = {}
        self._lru: collections.OrderedDict[str, None] = collections.OrderedDict()   # loaded adapters, oldest first
        self._ids = itertools.count()
        self.base: Path | None = None
        self._base: _Weights | None = None
        if base is not None:
            self._load_base(Path(base))
        if base_name:
            self._served[base_name] = self._describe_plain(base_name, self.base)

    # ---- registry --------------------------------------------------------------------------------

    def add(self, name: str, folder: Path, *, preload: bool = False) -> float:
        """Registers a tuned artifact folder (or a plain causal LM folder) under `name`; an existing
        name is replaced. Returns the seconds spent loading weights (0 unless preload)."""
        folder = Path(folder)
        with self._lock:
            served = self._describe(name, folder)
            if name in self._served:
                self._drop(self._served.pop(name))
            self._served[name] = served
            return self._ensure_loaded(served) if preload else 0.0

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._served:
                raise UnknownModel(f"no model named {name!r} is served here")
            self._drop(self._served.pop(name))

    def names(self) -> list[str]:
        with self._lock:
            return list(self._served)

    def loaded(self) -> list[str]:
        with self._lock:
            return [n for n, s in self._served.items()
                    if (s.peft_name if s.kind == "adapter" else s.weights) is not None]

    def parameter_bytes(self) -> int:
        """Bytes of every weight tensor held in memory, each storage counted once."""
        with self._lock:
            models = [w.runner for w in {id(w): w for w in self._all_weights()}.values()]
        storages = {}
        for model in models:
            for t in itertools.chain(model.parameters(), model.buffers()):
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())

    def _all_weights(self) -> list[_Weights]:
        return ([self._base] if self._base else []) + [s.weights for s in self._served.values()
                                                       if s.kind == "full" and s.weights is not None]

    # ---- what a folder is ------------------------------------------------------------------------

    def _describe(self, name: str, folder: Path) -> _Served:
        if not folder.is_dir():
            raise BadServingRequest(f"{folder} is not a folder: give the tuned model's artifact folder")
        if not (folder / "manifest.json").is_file():
            if not is_causal_lm_folder(folder):
                raise BadServingRequest(f"{folder} is neither a tuned causal LM (no manifest.json) nor a "
                                        "transformers causal LM folder: generative deployments serve those only")
            return self._describe_plain(name, folder)
        try:
            manifest = read_manifest(folder)
        except (ArtifactError, ValueError) as exc:
            raise BadServingRequest(f"{folder}: unreadable manifest ({exc})") from None
        if manifest.get("kind") != CausalLMModel.kind:
            raise BadServingRequest(f"{name!r} is a {manifest.get('kind')} model, not a generative one: "
                                    "deploy it as a classification deployment")
        lm = CausalLMModel(None, load_chat_tokenizer(folder / "tokenizer"), manifest.get("base_model", ""),
                           adapter=bool(manifest.get("adapter")), max_length=manifest.get("max_length", 512),
                           chat=manifest.get("chat", True))
        if not manifest.get("adapter"):
            return _Served(name, folder / "model", "full", lm)
        if not (folder / "adapter" / "adapter_model.safetensors").is_file():
            raise BadServingRequest(f"{folder} has no adapter/adapter_model.safetensors: the artifact is "
                                    "incomplete; train it again")
        self._check_base(name, manifest.get("base_model"))
        return _Served(name, folder / "adapter", "adapter", lm, weights=self._base)

    def _describe_plain(self, name: str, folder: Path) -> _Served:
        lm = CausalLMModel(None, load_chat_tokenizer(folder), str(folder), chat=has_own_chat_template(folder))
        if self.base is not None and _same_folder(folder, self.base):
            return _Served(name, folder, "base", lm, weights=self._base)
        return _Served(name, folder, "full", lm)

    def _check_base(self, name: str, wanted: str | None) -> None:
        """An adapter is served only on the base it was trained from, which its manifest names."""
        try:
            path = resolve_model(wanted).path if wanted else None
        except (ModelNotFound, UnsafeModel):
            path = None     # not resolvable here (a sandbox sees only its folders): loading checks shapes
        if self.base is None:
            if path is None:
                raise BadServingRequest(f"{name!r} is an adapter of {wanted!r}, which cannot be found here: "
                                        "give the deployment its base model folder")
            self._load_base(path)
        elif path is not None and not _same_folder(path, self.base):
            raise BadServingRequest(f"{name!r} is an adapter of {wanted!r}, not of the base this server holds "
                                    f"({self.base.name}): deploy it with its own base")

    def _load_base(self, folder: Path) -> None:
        if not is_causal_lm_folder(folder):
            raise BadServingRequest(f"the base {folder} is not a transformers causal LM folder")
        model = load_causal_lm(folder)
        model.eval()
        self.base, self._base = folder, _Weights(model)

    # ---- loading and unloading -------------------------------------------------------------------

    def _ensure_loaded(self, served: _Served) -> float:
        """With self._lock held. Seconds spent loading (0 when already loaded)."""
        t0 = time.perf_counter()
        if served.kind == "full" and served.weights is None:
            model = load_causal_lm(served.folder)
            model.eval()
            served.weights = _Weights(model)
        elif served.kind == "adapter":
            if served.peft_name is None:
                self._load_adapter(served)
            self._lru.move_to_end(served.peft_name)
            self._evict(keep=served.peft_name)
        return time.perf_counter() - t0 if served.kind != "base" else 0.0

    def _load_adapter(self, served: _Served) -> None:
        weights, peft_name = self._base, f"adapter_{next(self._ids)}"
        with weights.lock:            # no stream may step while peft changes the modules
            try:
                if weights.peft is None:
                    from peft import PeftModel

                    weights.peft = PeftModel.from_pretrained(weights.model, str(served.folder),
                                                             adapter_name=peft_name, is_trainable=False)
                else:
                    weights.peft.load_adapter(str(served.folder), adapter_name=peft_name, is_trainable=False)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise BadServingRequest(f"{served.name!r} cannot be loaded onto the base {self.base.name} "
                                        f"(an adapter of another base?): {str(exc)[:300]}") from None
            weights.peft.eval()
            weights.changed()
        served.peft_name = peft_name
        self._lru[peft_name] = None

    def _evict(self, keep: str) -> None:
        """Unloads the least recently used adapters past max_adapters, skipping those in use."""
        owners = {s.peft_name: s for s in self._served.values() if s.peft_name}
        for peft_name in list(self._lru):
            if len(self._lru) <= self.max_adapters:
                return
            owner = owners.get(peft_name)
            if peft_name != keep and (owner is None or owner.in_use == 0):
                self._unload_adapter(peft_name, owner)

    def _unload_adapter(self, peft_name: str, owner: _Served | None) -> None:
        weights = self._base
        with weights.lock:
            if len(weights.peft.peft_config) == 1:
                # The last adapter: take the LoRA layers out again rather than keep an empty wrapper.
                weights.model = weights.peft.unload()
                weights.peft = None
            else:
                with warnings.catch_warnings():     # "was active ... now deleted": expected, re-selected per step
                    warnings.simplefilter("ignore", UserWarning)
                    weights.peft.delete_adapter(peft_name)
            weights.changed()
        self._lru.pop(peft_name, None)
        if owner is not None:
            owner.peft_name = None

    def _drop(self, served: _Served) -> None:
        """With self._lock held: unloads a name's weights now, or when its last stream ends."""
        served.removed = True
        if served.in_use:
            return
        if served.kind == "adapter" and served.peft_name is not None:
            self._unload_adapter(served.peft_name, served)
        elif served.kind == "full":
            served.weights = None

    def _release(self, served: _Served) -> None:
        with self._lock:
            served.in_use -= 1
            if served.removed and not served.in_use:
                self._drop(served)

    # ---- generating ------------------------------------------------------------------------------

    def start(self, c: Completion) -> Generation:
        with self._lock:
            served = self._served.get(c.model)
            if served is None:
                raise UnknownModel(f"no model named {c.model!r} is served here; served: "
                                   f"{', '.join(sorted(self._served)) or 'none'}")
        ids = self._prompt_ids(served, c)
        with self._lock:
            self._ensure_loaded(served)
            served.in_use += 1
            weights = served.weights if served.kind != "base" else self._base
            adapter = served.peft_name if served.kind == "adapter" else None
        try:
            settings = _fit(served.name, ids, c.settings, weights.context)
        except BadServingRequest:
            self._release(served)
            raise
        stats: dict = {}
        pieces = stream_tokens(_StepView(weights, adapter), served.lm.tokenizer, ids, settings, "cpu", stats)
        return Generation(pieces, len(ids), stats, lambda: self._release(served))

    def _prompt_ids(self, served: _Served, c: Completion) -> list[int]:
        if (c.messages is None) == (c.prompt is None):
            raise BadServingRequest("give either messages (chat) or prompt (completion), not both or neither")
        if c.prompt is not None:
            with served.tokenize_lock:
                return served.lm.prompt_ids(c.prompt, raw=True)
        if not served.lm.chat:
            raise BadServingRequest(f"{served.name!r} has no chat template (a base model that continues text): "
                                    "send a prompt to /v1/completions instead of chat messages")
        if not c.messages or not all(isinstance(m, dict) and m.get("role") in _ROLES
                                     and isinstance(m.get("content"), str) for m in c.messages):
            raise BadServingRequest("messages must be a non-empty list of {role: system|user|assistant, "
                                    "content: text}")
        with served.tokenize_lock:
            return served.lm.prompt_ids([{"role": m["role"], "content": m["content"]} for m in c.messages])


def _fit(name: str, ids: list[int], s: GenerationSettings, context: int) -> GenerationSettings:
    """The settings checked, max_new_tokens clamped to what the context leaves after the prompt."""
    if s.max_new_tokens < 1:
        raise BadServingRequest("max_tokens must be at least 1")
    if s.temperature < 0 or not 0 < s.top_p <= 1:
        raise BadServingRequest("temperature must be >= 0 and top_p in (0, 1]")
    if not ids:
        raise BadServingRequest("the prompt is empty: send some text")
    if len(ids) >= context:
        raise BadServingRequest(f"the prompt is {len(ids)} tokens but {name!r} has a context of {context} "
                                f"tokens: shorten it to under {context} tokens (fewer or shorter messages) "
                                "to leave room for the answer")
    return replace(s, max_new_tokens=min(s.max_new_tokens, context - len(ids)), stop=list(s.stop))


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
