"""OpenAI-compatible /v1/chat/completions and /v1/completions, answered by the tenant's deployment
serving the request's `model` (a tuned model id, or a deployed catalog LM): the model server
generates (serving/process.py), this route shapes OpenAI's objects, streams them as server-sent
events ending with `data: [DONE]`, counts and meters the exact token usage the server reports."""

from __future__ import annotations

import json
import secrets
import time
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...billing.usage import NoCreditForServing, check_served
from ...contract import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest
from ...contract.openai import MAX_TOKENS
from ...serving.errors import ServingError
from ...services import deployments as svc
from ..deps import ScopeDep, SettingsDep
from ..errors import AUTH, APIError, error_body, errors
from ..routing import ContractRoute
from .deployments import as_api_errors, no_credit, running_supervisor, served_error

router = APIRouter(route_class=ContractRoute, prefix="/v1", tags=["openai"])
DEFAULT_MAX_TOKENS = 256
_SSE = {"description": "With `stream: true`: server-sent events, each `data: <chunk JSON>`, the last `data: [DONE]`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}


def _payload(body, **text) -> dict:
    """What the model server is asked (serving/process.py POST /generate)."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    limit = getattr(body, "max_completion_tokens", None) or body.max_tokens or DEFAULT_MAX_TOKENS
    return {"model": body.model, **text, "max_tokens": min(limit, MAX_TOKENS), "temperature": body.temperature or 0.0,
            "top_p": body.top_p if body.top_p is not None else 1.0, "stop": stop, "seed": body.seed or 0,
            "stream": body.stream}


async def _start(body, scope, settings, request: Request):
    """The deployment and a client of one of its ready servers, after the cheap checks: the model
    deployed in this tenant (404), n=1 (422), credit left (402) — before any work."""
    with as_api_errors():
        row, _ = svc.resolve_model(scope.session, scope.tenant_id, body.model)
        if body.n not in (None, 1):
            raise APIError(422, "unsupported_n", f"n={body.n}: one choice is generated per request (n=1); send "
                           "several requests for several answers.", "n")
        check_served(scope.session, scope.tenant_id, 1)
        supervisor = running_supervisor(request)
        return row, await supervisor.client(svc.plan_for(row, settings))


def _usage(raw: dict) -> dict:
    p, c = int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _record(request: Request, tenant_id: str, row, usage: dict) -> None:
    """Count and meter one answered request (its own session: a stream outlives the request's)."""
    with request.app.state.db.session() as s:
        svc.record_usage(s, tenant_id, row, requests=1, prompt_tokens=usage["prompt_tokens"],
                         completion_tokens=usage["completion_tokens"])


async def _answer(request: Request, scope, row, client, payload: dict) -> dict:
    try:
        out = await client.generate(payload)
    except ServingError as exc:
        raise served_error(exc) from None
    usage = _usage(out.get("usage") or {})
    try:
        await run_in_threadpool(_record, request, scope.tenant_id, row, usage)
    except NoCreditForServing as exc:
        raise no_credit(exc) from None
    return {"text": out.get("text", ""), "finish_reason": out.get("finish_reason") or "stop", "usage": usage}


def _sse(obj: dict | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _stream(request: Request, scope, row, client, payload: dict, shape, include_usage: bool) -> StreamingResponse:
    """The server's ndjson lines as OpenAI chunks. The first line is awaited here, so that what
    the server refuses (a prompt too long, an unknown adapter) is an HTTP status, not a stream."""
    lines = client.stream(payload).__aiter__()
    try:
        first = await lines.__anext__()
    except StopAsyncIteration:
        raise served_error(ServingError("the model server closed the stream before answering")) from None
    except ServingError as exc:
        raise served_error(exc) from None
    tenant_id = scope.tenant_id

    async def frames() -> AsyncIterator[bytes]:
        yield _sse(shape.opening())
        line = first
        try:
            while True:
                if line.get("done"):
                    usage = _usage(line.get("usage") or {})
                    yield _sse(shape.closing(line.get("finish_reason") or "stop"))
                    if include_usage:
                        yield _sse(shape.usage(usage))
                    await run_in_threadpool(_record, request, tenant_id, row, usage)
                    yield _sse("[DONE]")
                    return
                if line.get("text"):
                    yield _sse(shape.piece(line["text"]))
                line = await lines.__anext__()
        except StopAsyncIteration:
            exc: Exception = ServingError("the model server closed the stream before it finished")
        except (ServingError, NoCreditForServing) as caught:
            exc = caught
        finally:        # a client gone mid-answer: the server stops generating for it
            closing = getattr(lines, "aclose", None)
            if closing is not None:
                await closing()
        status, code = (402, "insufficient_credit") if isinstance(exc, NoCreditForServing) else (exc.status, exc.code)
        yield _sse(error_body(status, code, str(exc)))      # the openai client raises it as an APIError
    return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class _Shape:
    """OpenAI's objects for one answer: `chat.completion(.chunk)` or `text_completion`."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def _obj(self, choice: dict, **more) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": [choice] if choice else [], **more}

    def opening(self) -> dict:
        return self._obj({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                         if self.chat else {"index": 0, "text": "", "finish_reason": None})

    def piece(self, text: str) -> dict:
        return self._obj({"index": 0, "delta": {"content": text}, "finish_reason": None} if self.chat
                         else {"index": 0, "text": text, "finish_reason": None})

    def closing(self, finish: str) -> dict:
        return self._obj({"index": 0, "delta": {}, "finish_reason": finish} if self.chat
                         else {"index": 0, "text": "", "finish_reason": finish})

    def usage(self, usage: dict) -> dict:
        return self._obj({}, usage=usage)

    def whole(self, answer: dict) -> dict:
        choice = ({"index": 0, "message": {"role": "assistant", "content": answer["text"]},
                   "finish_reason": answer["finish_reason"], "logprobs": None} if self.chat
                  else {"index": 0, "text": answer["text"], "finish_reason": answer["finish_reason"], "logprobs": None})
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [choice],
                "usage": answer["usage"]}


async def _serve(request: Request, scope, settings, body, chat: bool, **text):
    row, client = await _start(body, scope, settings, request)
    payload = _payload(body, **text)
    shape = _Shape(chat, body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(request, scope, row, client, payload, shape, include_usage)
    return shape.whole(await _answer(request, scope, row, client, payload))


_ERRORS = errors(*AUTH, 400, 402, 404, 409, 422, 503)


@router.post("/chat/completions", response_model=ChatCompletion, responses={200: _SSE, **_ERRORS})
async def chat_completions(body: ChatCompletionRequest, scope: ScopeDep, settings: SettingsDep, request: Request):
    """A chat answer from a deployed model, its messages rendered with the chat template the model
    was trained with. `temperature` 0 (the default) is greedy: the tokens `tunelab generate` gives."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in body.messages]
    return await _serve(request, scope, settings, body, True, messages=messages)


@router.post("/completions", response_model=Completion, responses={200: _SSE, **_ERRORS})
async def completions(body: CompletionRequest, scope: ScopeDep, settings: SettingsDep, request: Request):
    """The continuation of a raw prompt (no chat template) from a deployed model."""
    return await _serve(request, scope, settings, body, False, prompt=body.prompt)
