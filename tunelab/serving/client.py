"""Talking to one model server over its Unix socket (httpx). Every way a server can fail to
answer (not started, killed mid-request, a stream cut before its "done" line, too slow) is a
ServerUnavailable (503); an error the server sent is rebuilt as the same ServingError."""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import httpx

from .errors import ServerUnavailable, ServingError, error_from

# Unix socket paths are limited to 108 bytes with the NUL; longer ones are reached through a
# descriptor of their folder (/proc/self/fd/N/name), which the kernel resolves like a link.
_SUN_PATH_MAX = 100
_NETWORK_ERRORS = (httpx.TransportError, OSError)


class ServerClient:
    def __init__(self, socket: Path | str, timeout: float = 120.0, *,
                 activity: Callable[[int], None] | None = None):
        """activity: called with +1 when a request starts and -1 when it ends (the supervisor's
        idle clock: a deployment is never unloaded under a running request)."""
        self.socket, self.timeout, self._activity = str(socket), timeout, activity
        self._dir_fd: int | None = None
        self._path = self.socket
        if len(self.socket) > _SUN_PATH_MAX:
            folder, name = os.path.split(self.socket)
            self._dir_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._path = f"/proc/self/fd/{self._dir_fd}/{name}"

    def __del__(self):
        if self._dir_fd is not None:
            try:
                os.close(self._dir_fd)
            except OSError:
                pass

    def _timeout(self, timeout: float | None = None) -> httpx.Timeout:
        t = self.timeout if timeout is None else timeout
        return httpx.Timeout(t, connect=min(t, 5.0))

    @asynccontextmanager
    async def _client(self):
        transport = httpx.AsyncHTTPTransport(uds=self._path, retries=0)
        if self._activity:
            self._activity(+1)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://model-server",
                                         timeout=self._timeout()) as client:
                yield client
        finally:
            if self._activity:
                self._activity(-1)

    async def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        try:
            async with self._client() as client:
                response = await client.request(method, path, json=payload)
                return _json_or_raise(response.status_code, response.content)
        except _NETWORK_ERRORS as e:
            raise _unavailable(e) from e

    async def health(self) -> dict:
        return await self._call("GET", "/health")

    async def generate(self, payload: dict) -> dict:
        return await self._call("POST", "/generate", {**payload, "stream": False})

    async def stream(self, payload: dict) -> AsyncIterator[dict]:
        """The server's ndjson lines as dicts, the last one {"done": true, ...}."""
        done = False
        try:
            async with self._client() as client, \
                    client.stream("POST", "/generate", json={**payload, "stream": True}) as response:
                if response.status_code >= 400:
                    _json_or_raise(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    item = _line(line)
                    yield item
                    if item.get("done"):
                        done = True
                        break
        except _NETWORK_ERRORS as e:
            raise _unavailable(e) from e
        if not done:
            raise ServerUnavailable("the model server stopped before finishing the answer; send the request again")

    async def classify(self, model: str, texts: list[str] | None = None,
                       images_b64: list[str] | None = None) -> dict:
        body = {"model": model, **({"texts": texts} if texts is not None else {}),
                **({"images_b64": images_b64} if images_b64 is not None else {})}
        return await self._call("POST", "/classify", body)

    async def load_adapter(self, name: str, folder: str) -> dict:
        return await self._call("POST", "/adapters", {"name": name, "folder": folder})

    async def remove_adapter(self, name: str) -> dict:
        return await self._call("DELETE", f"/adapters/{name}")

    def health_sync(self, timeout: float = 2.0) -> dict | None:
        """/health, or None when the server does not answer it (not up yet, gone, stuck)."""
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=self._path, retries=0),
                              base_url="http://model-server", timeout=self._timeout(timeout)) as client:
                response = client.get("/health")
            return response.json() if response.status_code == 200 else None
        except (_NETWORK_ERRORS + (ValueError,)):
            return None


def _line(line: str) -> dict:
    try:
        item = json.loads(line)
    except ValueError as e:
        raise ServerUnavailable(f"the model server sent a broken stream line: {line[:100]!r}") from e
    if not isinstance(item, dict):
        raise ServerUnavailable(f"the model server sent a broken stream line: {line[:100]!r}")
    if isinstance(item.get("error"), dict):
        raise error_from(str(item["error"].get("code")), str(item["error"].get("message")))
    return item


def _json_or_raise(status: int, content: bytes) -> dict:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise error_from(str(error.get("code")), str(error.get("message")))
        raise ServingError(f"the model server answered {status}: {content[:200]!r}")
    if not isinstance(body, dict):
        raise ServerUnavailable(f"the model server answered {status} with no JSON object")
    return body


def _unavailable(e: Exception) -> ServerUnavailable:
    if isinstance(e, httpx.TimeoutException):
        return ServerUnavailable(f"the model server did not answer in time ({type(e).__name__}); "
                                 "send the request again")
    return ServerUnavailable(f"the model server is not reachable ({type(e).__name__}: {e}); "
                             "it is being restarted: send the request again")
