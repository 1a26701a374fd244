"""The model server: `python -m tunelab.serving.process <config.json>`.

One process per deployment replica, started by serving/supervisor.py through the job executors
(under bubblewrap: no network, only its model folders and its run folder). It loads the models
named in its ServerConfig, then answers JSON over a Unix socket (uvicorn) until SIGTERM:

  GET /health, POST /generate (ndjson when streamed), POST /classify, POST /adapters,
  DELETE /adapters/{name}; errors as {"error": {"code", "message"}} with the ServingError's status.

Model work runs in worker threads, so the event loop keeps answering /health (and other streams)
while a forward runs; a streamed generation pulls one piece at a time, so a client that goes away
stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import io
import json
import os
import signal
import socket as socketlib
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import ServerConfig
from .errors import BadServingRequest, ServerBusy, ServingError, UnknownModel

MAX_ITEMS = 256                      # texts or images in one /classify request


# ---- request bodies ------------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")    # OpenAI clients send "name" and friends
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateBody(_Body):
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] | None = Field(None, min_length=1, max_length=256)
    prompt: str | None = None
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=8)
    seed: int | None = None
    stream: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value):
        """OpenAI's `stop` is a string or a list of them."""
        return [value] if isinstance(value, str) else ([] if value is None else value)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("send exactly one of `messages` (chat) or `prompt` (completion)")
        return self


class ClassifyBody(_Body):
    model: str = Field(min_length=1, max_length=256)
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    images_b64: list[str] | None = Field(None, min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.texts is None) == (self.images_b64 is None):
            raise ValueError("send exactly one of `texts` or `images_b64`")
        return self


class AdapterBody(_Body):
    name: str = Field(min_length=1, max_length=256)
    folder: str = Field(min_length=1, max_length=4096)


# ---- backends: what the routes call (blocking; run in threads) ----------------------------------

class GenerateBackend:
    """Tuned causal LMs (adapters share one base) through serving/lm_backend.MultiAdapterLM."""

    def __init__(self, config: ServerConfig):
        from .lm_backend import MultiAdapterLM

        self.lm = MultiAdapterLM(Path(config.base) if config.base else None, config.base_name,
                                 max_adapters=config.max_adapters)
        # Loaded now (up to the LRU's size), so that "ready" means answering at once; the
        # supervisor also deletes decrypted folders once the server is ready.
        for i, model in enumerate(config.models):
            self.lm.add(model.name, _existing(model.folder), preload=i < config.max_adapters)

    def names(self) -> list[str]:
        return list(self.lm.names())

    def loaded(self) -> list[str]:
        return list(self.lm.loaded())

    def start(self, body: GenerateBody):
        from ..models.generation_settings import GenerationSettings
        from .lm_backend import Completion

        settings = GenerationSettings(max_new_tokens=body.max_tokens, temperature=body.temperature,
                                      top_p=body.top_p, stop=list(body.stop), seed=body.seed or 0)
        messages = [m.model_dump() for m in body.messages] if body.messages is not None else None
        return self.lm.start(Completion(model=body.model, messages=messages, prompt=body.prompt, settings=settings))

    def add(self, name: str, folder: str) -> float:
        return self.lm.add(name, _existing(folder), preload=True)

    def remove(self, name: str) -> None:
        if name not in self.lm.names():
            raise UnknownModel(f"no adapter named {name!r} is served here")
        self.lm.remove(name)

    def close(self) -> None:
        pass


class ClassifyBackend:
    """One tuned classifier (serving/classify_backend), micro-batched across requests."""

    def __init__(self, config: ServerConfig):
        from .classify_backend import MicroBatcher, open_classifier

        (model,) = config.models
        self.name = model.name
        self.classifier = open_classifier(_existing(model.folder), config.engine,
                                          Path(config.work) if config.work else None)
        self.batcher = MicroBatcher(self.classifier.predict_proba, config.batch_window_ms, config.max_batch)

    def names(self) -> list[str]:
        return [self.name]

    loaded = names

    def classify(self, body: ClassifyBody) -> dict:
        if body.model != self.name:
            raise UnknownModel(f"model {body.model!r} is not served here (this server serves {self.name!r})")
        wants = "text" if body.texts is not None else "image"
        if wants != self.classifier.inputs:
            field = "texts" if self.classifier.inputs == "text" else "images_b64"
            raise BadServingRequest(f"{self.name} classifies {self.classifier.inputs}s: send `{field}`")
        items = body.texts if body.texts is not None else [_image(v, i) for i, v in enumerate(body.images_b64)]
        probs = self.batcher(items)
        return {"labels": list(self.classifier.label_names), "probs": [[float(p) for p in row] for row in probs]}

    def close(self) -> None:
        self.batcher.close()


def _existing(folder: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise BadServingRequest(f"model folder {folder} does not exist (or is not a folder)")
    return path


def _image(value: str, index: int):
    from PIL import Image, UnidentifiedImageError

    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise BadServingRequest(f"images_b64[{index}] is not a base64-encoded image: {e}") from e
    return image.convert("RGB")


def build_backend(config: ServerConfig):
    return GenerateBackend(config) if config.kind == "generate" else ClassifyBackend(config)


# ---- the HTTP app --------------------------------------------------------------------------------

def _error(e: ServingError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.to_dict(), status_code=e.status)


class BodyCap:
    """Refuses request bodies over `limit` bytes: by Content-Length before reading, and while
    reading when there is none (chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = BadServingRequest(f"request body over {self.limit} bytes")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _error(too_big)(scope, receive, send)
        seen = 0

        async def capped():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message
        try:
            await self.app(scope, capped, send)
        except _TooLarge:
            await _error(too_big)(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(config: ServerConfig, backend) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, StreamingResponse

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    slots = _Slots(config.max_concurrent)

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, e: ServingError):
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()[:5])
        return _error(BadServingRequest(f"invalid request body ({where})"))

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):
        return JSONResponse(_failure(e), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ready", "kind": config.kind, "models": backend.names(), "loaded": backend.loaded(),
                "pid": os.getpid()}

    def _needs(kind: str) -> None:
        if config.kind != kind:
            raise BadServingRequest(f"this server {'generates text' if config.kind == 'generate' else 'classifies'}; "
                                    f"it has no {kind} route")

    @app.post("/generate")
    async def generate(body: GenerateBody):
        _needs("generate")
        slot = slots.take()
        try:
            generation = await run_in_threadpool(backend.start, body)
        except BaseException:
            slot.release()
            raise
        if not body.stream:
            try:
                text = await run_in_threadpool(generation.text)
                return _answer(generation, text)
            finally:
                slot.release()
        feed = _Feed(generation, slot)
        lines = feed.lines()
        # A response dropped before its stream began never runs the generator's `finally`.
        weakref.finalize(lines, feed.stop.set)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    @app.post("/classify")
    async def classify(body: ClassifyBody):
        _needs("classify")
        return await run_in_threadpool(backend.classify, body)

    @app.post("/adapters")
    async def add_adapter(body: AdapterBody):
        _needs("generate")
        seconds = await run_in_threadpool(backend.add, body.name, body.folder)
        return {"name": body.name, "seconds": seconds}

    @app.delete("/adapters/{name}")
    async def remove_adapter(name: str):
        _needs("generate")
        await run_in_threadpool(backend.remove, name)
        return {"name": name, "removed": True}

    return BodyCap(app, config.max_body_bytes)


def _failure(e: BaseException) -> dict:
    return {"error": {"code": "server_error", "message": f"the model server failed: {type(e).__name__}: {e}"}}


def _usage(generation) -> dict:
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens}


def _answer(generation, text: str) -> dict:
    return {"text": text, "usage": _usage(generation), "finish_reason": generation.finish_reason}




class _Slot:
    def __init__(self, slots: "_Slots"):
        self._slots, self._held = slots, True

    def release(self) -> None:
        if self._held:                 # once, whichever of the ways out comes first
            self._held = False
            self._slots.running -= 1


class _Slots:
    """Generations running at once (counted on the event loop's thread); beyond: ServerBusy."""

    def __init__(self, limit: int):
        self.limit, self.running = limit, 0

    def take(self) -> _Slot:
        if self.running >= self.limit:
            raise ServerBusy(f"{self.limit} generations are running on this server; retry shortly")
        self.running += 1
        return _Slot(self)


class _Feed:
    """One streamed generation, written by a thread of its own into a queue the response reads.

    The thread alone touches the generation (a generator must not be closed from another thread
    while it runs): it stops at the next piece once `stop` is set (the client left, or the
    response was dropped before it began), closes the generation (which frees its adapter), and
    only then gives the slot back."""

    def __init__(self, generation, slot: _Slot):
        self.generation, self.slot = generation, slot
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.stop = threading.Event()
        threading.Thread(target=self._write, daemon=True, name="generation").start()

    def _put(self, kind: str, value=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:           # the server's loop is closed: nobody is reading
            self.stop.set()

    def _write(self) -> None:
        try:
            for piece in self.generation:
                if self.stop.is_set():
                    break
                self._put("text", piece)
            else:
                self._put("done")
        except BaseException as e:     # noqa: BLE001  sent to the client as the stream's last line
            self._put("error", e)
        finally:
            close = getattr(self.generation, "close", None)
            if close is not None:
                close()
            try:
                self.loop.call_soon_threadsafe(self.slot.release)
            except RuntimeError:
                pass

    async def lines(self):
        """ndjson: {"text": piece} lines, then {"done": true, ...}; an error mid-way is one
        {"error": ...} line and no "done" (the client raises it)."""
        try:
            while True:
                kind, value = await self.queue.get()
                if kind == "text":
                    if value:
                        yield json.dumps({"text": value}) + "\n"
                    continue
                if kind == "done":
                    yield json.dumps({"done": True, "usage": _usage(self.generation),
                                      "finish_reason": self.generation.finish_reason}) + "\n"
                elif isinstance(value, ServingError):
                    yield json.dumps(value.to_dict()) + "\n"
                else:       # the status line is sent already: the error goes in the body
                    yield json.dumps(_failure(value)) + "\n"
                return
        finally:
            self.stop.set()


# ---- process ------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Started by a local executor: go when the supervisor goes (a sandbox has --die-with-parent)."""
    parent = os.environ.get("TUNELAB_PARENT_PID")
    if not parent:
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != int(parent):
        os._exit(1)


def _listen(path: str) -> socketlib.socket:
    """The server's socket, 0600. Bound by its name in its own folder: a Unix socket path is
    limited to ~107 bytes, and deep homes exceed it (clients connect through /proc/self/fd)."""
    folder, name = os.path.split(os.path.abspath(path))
    os.chdir(folder)
    if os.path.lexists(name):
        os.unlink(name)            # a crashed predecessor's
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(name)
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def serve(config: ServerConfig) -> None:
    import uvicorn

    started = time.monotonic()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    backend = build_backend(config)
    sock = _listen(config.socket)
    loaded = time.monotonic() - started

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                print(f"tunelab model server ready: kind={config.kind} models={backend.names()} pid={os.getpid()} "
                      f"loaded in {loaded:.1f}s socket={config.socket}", file=sys.stderr, flush=True)

    server = Server(uvicorn.Config(create_app(config, backend), log_level="warning", access_log=False,
                                   lifespan="off", timeout_graceful_shutdown=5, log_config=None))
    # uvicorn shuts down gracefully on SIGTERM, then raises it again under the handler that was
    # there before: this one, so that a stop asked for is a clean exit (status 0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        backend.close()
        sock.close()
        try:
            os.unlink(os.path.basename(config.socket))
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m tunelab.serving.process <config.json>")
    _die_with_parent()
    try:
        config = ServerConfig.from_json(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, ValidationError) as e:
        print(f"tunelab model server: cannot read its config {argv[0]}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        serve(config)
    except ServingError as e:
        print(f"tunelab model server: cannot start: {e.message}", file=sys.stderr, flush=True)
        sys.exit(3)
    sys.stderr.flush()
    # Worker threads of a generation a client left are not joined: the process is done.
    os._exit(0)


if __name__ == "__main__":
    main()
