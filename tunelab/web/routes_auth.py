"""Sign in (an API key, or email and password) and sign out."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ..api.deps import Principal, SessionDep, audit
from ..db.models import Tenant, User
from ..security.keys import check_password, hash_password, needs_rehash
from ..services.tenants import authenticate
from . import session as sess
from .deps import UserDep, checked_form, current_user, render, safe_next, secret

router = APIRouter(include_in_schema=False)
# The sign-in form has a few short fields and no file: anything more is refused before it is parsed
# (the body is capped at LOGIN_BODY_BYTES by the request gate, see `web.mount`).
LOGIN_BODY_BYTES = 16 * 1024
_MAX_FIELDS = 16


@router.get("/")
def home(request: Request, session: SessionDep):
    return RedirectResponse("/datasets" if current_user(request, session) else "/login", status_code=303)


def _login_page(request: Request, next_url: str, error: str | None = None, method: str = "key",
                email: str = "", status: int = 200):
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"next": next_url, "error": error, "csrf_token": token,
                                              "method": method, "email": email}, status=status)
    response.set_cookie(sess.LOGIN_CSRF_COOKIE, token, **sess.cookie_args(request.url.scheme == "https", 3600)
                        | {"samesite": "strict"})
    return response


@router.get("/login")
def login_form(request: Request, session: SessionDep, next: str = "/datasets"):
    if current_user(request, session):
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, safe_next(next))


def _by_password(session, email: str, password: str, organisation: str) -> tuple[User | None, str | None]:
    """The user these credentials sign in; runs in a worker thread (each check is ~0.5 s of scrypt).
    At least one check runs even for an unknown email, at the same cost, so the time taken does not
    tell whether the email exists or has a password. A hash with old parameters is upgraded."""
    q = select(User).where(User.email == email.strip())
    if organisation.strip():
        q = q.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.name == organisation.strip())
    users = session.scalars(q).all()
    matches = [u for u in users if check_password(password, u.password_hash)]
    if not users:
        check_password(password, None)
    if len(matches) > 1:
        return None, "This email belongs to several organisations: enter the organisation's name too."
    if not matches:
        return None, "That email and password did not work."
    if needs_rehash(matches[0].password_hash):
        matches[0].password_hash = hash_password(password)
    return matches[0], None


def _too_many(request: Request, next_url: str, method: str, form, wait: float):
    return _login_page(request, next_url, f"Too many failed sign-ins from here; try again in {wait:.0f} s.",
                       method, str(form.get("email", "")), status=429)


@router.post("/login")
async def login(request: Request, session: SessionDep):
    form = await request.form(max_files=0, max_fields=_MAX_FIELDS)     # no file part is ever spooled
    next_url = safe_next(form.get("next"))
    method = "password" if form.get("method") == "password" else "key"
    if not sess.tokens_match(request.cookies.get(sess.LOGIN_CSRF_COOKIE), form.get("csrf_token")):
        return _login_page(request, next_url, "The sign-in form expired; please try again.", method, status=403)
    client = request.client.host if request.client else "?"
    limiter = request.app.state.limits["failed_auth"]
    wait = limiter.retry_after(client)
    if wait is not None:      # over the limit: nothing is checked, so not even a right password gets in
        return _too_many(request, next_url, method, form, wait)
    key_id = None
    if method == "key":
        found = authenticate(session, str(form.get("api_key", "")).strip())
        user, error = (found[1], None) if found else (None, "That API key is not valid (unknown or revoked).")
        key_id = found[0].id if found else None
    else:
        user, error = await run_in_threadpool(_by_password, session, str(form.get("email", "")),
                                              str(form.get("password", "")), str(form.get("organisation", "")))
    if user is None:          # guessing keys or passwords: the API's limit per client address, then 429
        wait = limiter.hit(client)
        if wait is not None:
            return _too_many(request, next_url, method, form, wait)
        return _login_page(request, next_url, error, method, str(form.get("email", "")), status=401)
    audit(session, Principal(user.tenant_id, user.id, user.role, key_id), "web.sign_in", user.id, method=method)
    cookie = sess.sign(secret(request), sess.new_session(user.id, user.tenant_id, key_id, user.password_hash))
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(sess.COOKIE, cookie, **sess.cookie_args(request.url.scheme == "https"))
    response.delete_cookie(sess.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, user: UserDep):
    await checked_form(request, user)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sess.COOKIE, path="/")
    return response
