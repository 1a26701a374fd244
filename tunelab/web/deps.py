"""What every page needs: the signed-in user (from the session cookie), CSRF checks, and
rendering with the shared layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ..api.deps import Principal, SessionDep
from ..db.models import ApiKey, Tenant, User
from . import session as sess
from .format import FILTERS
from .glossary import explain

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(FILTERS)
templates.env.globals["explain"] = explain          # the `term` macro's one-line explanations
_RANK = {"viewer": 0, "member": 1, "admin": 2}


class LoginRequired(Exception):
    def __init__(self, next_url: str = "/"):
        self.next_url = next_url


class PageError(Exception):
    """Shown as an HTML page with this status: 403, 404, 409..."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass(frozen=True)
class WebUser:
    tenant_id: str
    user_id: str
    role: str
    key_id: str | None
    email: str
    tenant_name: str
    csrf: str

    @property
    def principal(self) -> Principal:
        return Principal(self.tenant_id, self.user_id, self.role, self.key_id)

    def can(self, role: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[role]


def secret(request: Request) -> bytes:
    app = request.app
    if getattr(app.state, "web_secret", None) is None:
        app.state.web_secret = sess.load_secret(app.state.settings.home)
    return app.state.web_secret


def current_user(request: Request, session) -> WebUser | None:
    data = sess.unsign(secret(request), request.cookies.get(sess.COOKIE))
    if data is None:
        return None
    user = session.get(User, data.get("u"))
    if user is None or user.tenant_id != data.get("t"):
        return None
    if data.get("k"):
        key = session.get(ApiKey, data["k"])
        if key is None or key.revoked_at is not None or key.user_id != user.id:
            return None
    elif not data.get("p") or data["p"] != sess.password_mark(user.password_hash):
        return None
    tenant = session.get(Tenant, user.tenant_id)
    return WebUser(user.tenant_id, user.id, user.role, data.get("k"), user.email, tenant.name, data["csrf"])


def user_dep(request: Request, session: SessionDep) -> WebUser:
    user = current_user(request, session)
    if user is None:
        raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    request.state.web_user = user
    return user


UserDep = Annotated[WebUser, Depends(user_dep)]


def need(user: WebUser, role: str) -> None:
    if not user.can(role):
        raise PageError(403, "Not allowed", f"This needs the {role} role; you are a {user.role}. "
                                            "Ask an admin of your organisation.")


def same_origin(request: Request) -> bool:
    """A cross-site form post carries another Origin (or Referer); browsers always send one of them."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def checked_form(request: Request, user: WebUser):
    """The posted form, after the CSRF token and the origin are checked (403 page otherwise)."""
    form = await request.form()
    token = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not same_origin(request) or not sess.tokens_match(user.csrf, token):
        raise PageError(403, "Form expired", "This form could not be verified (it may be from an old tab). "
                                             "Reload the page and try again.")
    return form


def safe_next(url: str | None) -> str:
    """Only local paths: `next` must not send a user to another site after signing in."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/datasets"
    return url


def login_url(next_url: str) -> str:
    return "/login?next=" + quote(next_url, safe="/")


def render(request: Request, template: str, context: dict | None = None, status: int = 200,
           headers: dict | None = None) -> HTMLResponse:
    ctx = {"request": request, "user": getattr(request.state, "web_user", None), "path": request.url.path,
           "insecure": bool(getattr(request.app.state.settings, "insecure_mode", False)), **(context or {})}
    return templates.TemplateResponse(request, template, ctx, status_code=status, headers=headers)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"
