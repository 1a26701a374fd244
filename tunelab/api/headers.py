"""Security headers on every response (plain ASGI middleware).

Each layer says which headers go on which paths: the API (`api.app`) sends nosniff, no framing and
a same-origin referrer on everything, and a deny-all Content-Security-Policy on its JSON; the UI
(`web.mount`) adds the pages' policy. A header already on a response is kept (an inner layer or a
route knows better)."""

from __future__ import annotations

from typing import Callable

Headers = list[tuple[bytes, bytes]]

# Everything: no MIME sniffing (a stored text is never run as script), never inside a frame (the
# UI's CSRF-protected buttons cannot be clickjacked), no URL (with its ids) sent to other sites.
COMMON: Headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                   (b"referrer-policy", b"same-origin")]
# JSON answers load nothing and are framed by nobody.
API_CSP: Headers = [(b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")]


def api_headers(path: str) -> Headers:
    """The API's JSON gets the deny-all policy. Not FastAPI's /docs and /redoc (Swagger UI and
    ReDoc come from a CDN, with inline scripts), nor the UI's pages (`web.mount` sets theirs)."""
    if path.startswith(("/api/", "/v1/", "/healthz", "/readyz", "/openapi.json")):
        return COMMON + API_CSP
    return COMMON


class SecurityHeaders:
    def __init__(self, app, headers_for: Callable[[str], Headers]):
        self.app, self.headers_for = app, headers_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.headers_for(scope["path"])

        async def sending(message):
            if message["type"] == "http.response.start" and extra:
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in extra if k not in present]]}
            await send(message)
        await self.app(scope, receive, sending)
