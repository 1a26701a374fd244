"""Usage and credits, API keys and members (roles), your password, and the audit log (admins).
Changes go through the API's own route functions, so they are checked and audited the same way.
Credits are built by another part of tunelab: until they exist the page says so plainly instead
of showing made-up numbers."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..api.deps import SessionDep, audit
from ..api.errors import APIError
from ..api.routes import keys as keys_api
from ..api.routes import users as users_api
from ..api.schemas import KeyCreate, UserCreate, UserUpdate
from ..db.models import ApiKey, Job, User
from ..db.scoped import TenantScope
from ..jobs.spec import BENCH
from ..security import audit as audit_log
from ..security.keys import hash_password
from ..services.tenants import ROLES
from . import credits
from . import session as sess
from .deps import PageError, UserDep, checked_form, need, render, secret

router = APIRouter(include_in_schema=False)
AUDIT_PAGE = 100


def job_seconds(job: Job) -> float:
    result = job.result or {}
    if job.kind == "compare":
        return sum(r.get("train_seconds", 0) for r in result.get("results", []) if "error" not in r)
    if job.kind == BENCH:           # no training: the time the benchmark measured for
        return float((result.get("benchmark") or {}).get("seconds") or 0)
    return float((result.get("metrics") or {}).get("train_seconds") or 0)


def job_label(job: Job) -> str:
    """What a job ran, in the usage tables: its strategy, "comparison" or "hardware benchmark"."""
    if job.kind == BENCH:
        return "hardware benchmark"
    return (job.spec or {}).get("strategy") if job.kind == "train" else "comparison"


@router.get("/usage")
def usage(request: Request, user: UserDep, session: SessionDep):
    jobs = TenantScope(session, user.tenant_id).list(Job, order_by=Job.created_at.desc())
    month = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    this_month = [j for j in jobs if j.created_at >= month]
    by_strategy: dict[str, dict] = defaultdict(lambda: {"runs": 0, "seconds": 0.0})
    for j in this_month:
        name = job_label(j)
        by_strategy[name]["runs"] += 1
        by_strategy[name]["seconds"] += job_seconds(j)
    return render(request, "usage.html", {
        "month": month, "runs": len(this_month), "succeeded": sum(j.status == "succeeded" for j in this_month),
        "seconds": sum(job_seconds(j) for j in this_month), "all_seconds": sum(job_seconds(j) for j in jobs),
        "by_strategy": sorted(by_strategy.items(), key=lambda kv: -kv[1]["seconds"]),
        "recent": [(j, job_seconds(j)) for j in jobs[:20]], "credits": credits.account(session, user.tenant_id),
        "job_label": job_label})


@router.get("/usage/ledger.csv")
def ledger_csv(user: UserDep, session: SessionDep):
    """The API's export (GET /api/v1/billing/export.csv), for a browser session."""
    from ..api.routes.billing import export_csv

    return export_csv(user.principal, session)


def _settings(request, user, session, *, new_key: str | None = None, error: str | None = None,
              notice: str | None = None, status: int = 200):
    scope = TenantScope(session, user.tenant_id)
    where = [] if user.can("admin") else [ApiKey.user_id == user.user_id]
    members = scope.list(User, order_by=User.created_at)
    return render(request, "settings.html", {
        "keys": scope.list(ApiKey, *where, order_by=ApiKey.created_at.desc()),
        "members": members, "emails": {m.id: m.email for m in members}, "roles": ROLES,
        "new_key": new_key, "error": error, "notice": notice,
        "has_password": bool(session.get(User, user.user_id).password_hash)}, status=status)


@router.get("/settings")
def settings_page(request: Request, user: UserDep, session: SessionDep):
    return _settings(request, user, session)


def _form_error(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return exc.message
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}"


@router.post("/settings/keys")
async def new_key(request: Request, user: UserDep, session: SessionDep):
    form = await checked_form(request, user)
    scope, name = TenantScope(session, user.tenant_id), str(form.get("name", ""))[:200]
    owner_id = str(form.get("user_id") or user.user_id)
    if owner_id != user.user_id:           # an admin issues a member's key
        need(user, "admin")
        out = users_api.issue_key(owner_id, KeyCreate(name=name), scope, user.principal, session)
    else:
        out = keys_api.new_key(KeyCreate(name=name), scope, user.principal, session)
    return _settings(request, user, session, new_key=out["key"])


@router.post("/settings/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, user: UserDep, session: SessionDep):
    await checked_form(request, user)
    try:
        keys_api.revoke_key(key_id, TenantScope(session, user.tenant_id), user.principal)
    except APIError as exc:
        raise PageError(exc.status, "Not found", exc.message) from None
    if key_id == user.key_id:        # revoking the key this session signed in with ends the session
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/settings", status_code=303)


@router.post("/settings/password")
async def set_password(request: Request, user: UserDep, session: SessionDep):
    form = await checked_form(request, user)
    password, again = str(form.get("password", "")), str(form.get("password_again", ""))
    if len(password) < 8:
        return _settings(request, user, session, error="Use at least 8 characters.", status=422)
    if password != again:
        return _settings(request, user, session, error="The two passwords differ.", status=422)
    me = session.get(User, user.user_id)
    # In a thread: scrypt at its full cost takes about a second and must not stall the event loop.
    me.password_hash = await run_in_threadpool(hash_password, password)
    audit(session, user.principal, "user.password_set", user.user_id)
    response = _settings(request, user, session, notice="Password set: you can now sign in with your email.")
    if user.key_id is None:      # signed in with the old password: this session moves to the new one
        payload = sess.new_session(user.user_id, user.tenant_id, None, me.password_hash) | {"csrf": user.csrf}
        response.set_cookie(sess.COOKIE, sess.sign(secret(request), payload),
                            **sess.cookie_args(request.url.scheme == "https"))
    return response


@router.post("/settings/members")
async def add_member(request: Request, user: UserDep, session: SessionDep):
    need(user, "admin")
    form = await checked_form(request, user)
    try:
        body = UserCreate(email=str(form.get("email", "")).strip(), role=str(form.get("role", "member")),
                          password=str(form.get("password") or "") or None)
        # In a thread: a member given a password means a full-cost scrypt.
        await run_in_threadpool(users_api.create_user, body, TenantScope(session, user.tenant_id), user.principal)
    except (APIError, ValueError) as exc:
        return _settings(request, user, session, error=_form_error(exc), status=422)
    return _settings(request, user, session, notice=f"Added {body.email} as {body.role}.")


@router.post("/settings/members/{user_id}")
async def change_member(user_id: str, request: Request, user: UserDep, session: SessionDep):
    need(user, "admin")
    form = await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    member = scope.get(User, user_id, "member")
    try:
        if form.get("action") == "remove":
            users_api.delete_user(user_id, scope, user.principal)
            return _settings(request, user, session, notice=f"Removed {member.email}.")
        users_api.update_user(user_id, UserUpdate(role=str(form.get("role", ""))), scope, user.principal)
    except (APIError, ValueError) as exc:
        return _settings(request, user, session, error=_form_error(exc), status=422)
    return _settings(request, user, session, notice=f"{member.email} is now {member.role}.")


@router.get("/audit")
def audit_page(request: Request, user: UserDep, session: SessionDep, before: int | None = None):
    need(user, "admin")
    rows = audit_log.entries(session, user.tenant_id, AUDIT_PAGE, before)
    emails = {u.id: u.email for u in TenantScope(session, user.tenant_id).list(User)}
    return render(request, "audit.html", {"entries": rows, "emails": emails, "total": audit_log.count(session, user.tenant_id),
                                          "older": rows[-1].seq if len(rows) == AUDIT_PAGE else None})
