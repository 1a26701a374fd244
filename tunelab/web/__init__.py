"""The no-code web UI: server-rendered pages (Jinja2 + HTMX, a small vendored chart library) over
the same services as the API. `mount(app)` adds it to the API's FastAPI app (the server does
this; the API itself never imports the UI).

Pages live at the root (`/datasets`, `/train`, `/jobs/...`); the API stays under `/api/v1` and
`/v1`. Errors on pages are HTML pages (404 for another tenant's ids, as in the API), never a
traceback; errors on API paths keep the API's JSON shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..api.bodies import BodyRule
from ..api.errors import APIError
from ..api.headers import SecurityHeaders
from ..api.uploads import upload_rule
from ..db.scoped import NotFound
from ..jobs.status import InvalidTransition
from . import session as sess
from .deps import HERE, LoginRequired, current_user, PageError, is_htmx, login_url, render, secret
from .routes_auth import LOGIN_BODY_BYTES

log = logging.getLogger("tunelab.web")
API_PREFIXES = ("/api/", "/v1/", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz")
UPLOAD_PATHS = ("/datasets/upload", "/models/import", "/batch-predictions")
# The pages' Content-Security-Policy: scripts, styles, images and requests from this server only, no
# inline script (htmx's inline indicator style and eval are off in base.html), never framed. Style
# attributes stay allowed (`style-src-attr`): bars and histograms are sized from data; with
# img-src/font-src 'self' a style cannot fetch anything from elsewhere.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def is_page(request: Request) -> bool:
    return not request.url.path.startswith(API_PREFIXES)


def page_headers(path: str) -> list[tuple[bytes, bytes]]:
    return [] if path.startswith(API_PREFIXES) else [(b"content-security-policy", PAGE_CSP.encode())]


async def signed_in(scope) -> Response | None:
    """The UI's upload routes read a body only from a browser with a validly signed session (the
    user and key behind it are checked again by the route); others go to the sign-in page."""
    request = Request(scope)
    if sess.unsign(secret(request), request.cookies.get(sess.COOKIE)) is not None:
        return None
    return RedirectResponse(login_url(request.url.path), status_code=303, headers={"Connection": "close"})


def _login_too_large(limit: int) -> APIError:
    return APIError(413, "body_too_large", f"A sign-in form is a few short fields; this is over {limit // 1024} KB.")


def error_page(request: Request, status: int, title: str, message: str):
    if getattr(request.state, "web_user", None) is None and status != 401:
        try:                 # the navigation bar for a signed-in user, even on an unknown URL
            with request.app.state.db.session() as s:
                request.state.web_user = current_user(request, s)
        except Exception:
            request.state.web_user = None
    return render(request, "error.html", {"status": status, "title": title, "message": message}, status=status)


def _page_status(exc: Exception) -> tuple[int, str, str]:
    if isinstance(exc, PageError):
        return exc.status, exc.title, exc.message
    if isinstance(exc, NotFound):
        return 404, "Not found", f"There is no {exc.kind} {exc.ident!r} in your organisation."
    if isinstance(exc, APIError):
        return exc.status, "Could not do that", exc.message
    if isinstance(exc, InvalidTransition):
        return 409, "Not possible now", str(exc).capitalize() + "."
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return 404, "Not found", "There is no such page."
        return exc.status_code, "Could not do that", str(exc.detail)
    if isinstance(exc, RequestValidationError):
        return 422, "Invalid request", "Some of the values sent are not valid; go back and check the form."
    return 500, "Something went wrong", "The error has been logged. Try again, or go back."


def mount(app: FastAPI) -> FastAPI:
    from . import (model_page, routes_account, routes_auth, routes_batch, routes_compare, routes_datasets,
                   routes_deployments, routes_infrastructure, routes_jobs, routes_models, routes_train)

    for module in (routes_auth, routes_datasets, routes_models, model_page, routes_train, routes_batch, routes_jobs,
                   routes_compare, routes_account, routes_infrastructure, routes_deployments):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    settings = app.state.settings
    app.state.body_rules.extend([upload_rule(lambda: settings.max_upload_bytes, UPLOAD_PATHS, signed_in),
                                 BodyRule(("/login",), lambda: LOGIN_BODY_BYTES, error=_login_too_large)])
    app.add_middleware(SecurityHeaders, headers_for=page_headers)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        if is_htmx(request):     # a fragment request: have HTMX load the sign-in page itself
            return RedirectResponse(login_url(exc.next_url), status_code=303,
                                    headers={"HX-Redirect": login_url(exc.next_url)})
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    app.add_exception_handler(PageError, lambda request, exc: error_page(request, *_page_status(exc)))
    for kind in (NotFound, APIError, InvalidTransition, StarletteHTTPException, RequestValidationError, Exception):
        _wrap(app, kind)
    return app


def _wrap(app: FastAPI, kind: type) -> None:
    """Pages get HTML errors; API paths keep the handler the API installed."""
    api_handler = app.exception_handlers.get(kind)

    async def handler(request: Request, exc: Exception):
        if is_page(request) or api_handler is None:
            status, title, message = _page_status(exc)
            if status >= 500:
                log.exception("page error", exc_info=exc, extra={"path": request.url.path})
            try:
                return error_page(request, status, title, message)
            except Exception:      # the error page itself failed: still no traceback
                log.exception("error page failed")
                from fastapi.responses import PlainTextResponse

                return PlainTextResponse(f"{status} {title}", status_code=status)
        return await api_handler(request, exc)
    app.add_exception_handler(kind, handler)
